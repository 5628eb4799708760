//! Batch review end to end: a directory of bundles (one of them broken) into an index, pages
//! and JSON lines; shards and their merge give the same findings as one run.

mod common;

use std::path::Path;

use assert_cmd::Command;
use memgap_collector::synth::{self, Spec, Version};

fn memgap() -> Command {
    Command::cargo_bin("memgap").unwrap()
}

/// A fleet: `n` small synthetic nodes (alternating v1 and v2), one corrupt file and one
/// bundle cut short (a copy of the first node's, two thirds of it).
fn fleet(dir: &Path, n: usize) {
    for i in 0..n {
        let root = dir.join(format!("root-{i}"));
        let v = if i % 2 == 0 { Version::V1 } else { Version::V2 };
        synth::generate(&root, &Spec::new(v, 24 + i, 6)).unwrap();
        let gz = common::collect(&root);
        std::fs::create_dir_all(dir.join("fleet/zone-a")).unwrap();
        std::fs::write(dir.join(format!("fleet/zone-a/node-{i}.tar.gz")), gz).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
    std::fs::write(dir.join("fleet/broken.tar.gz"), b"\x1f\x8b not really").unwrap();
    let whole = std::fs::read(dir.join("fleet/zone-a/node-0.tar.gz")).unwrap();
    std::fs::write(dir.join("fleet/cut.tar.gz"), &whole[..whole.len() * 2 / 3]).unwrap();
}

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_directory_of_bundles_gives_an_index_pages_and_json_lines() {
    let d = common::scratch();
    fleet(d.path(), 4);
    let out = d.path().join("review");
    let r = memgap()
        .args(["report"])
        .arg(d.path().join("fleet"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    // One bundle failed: exit 2, said on stderr, and the others are all reported.
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("broken.tar.gz"), "{err}");
    // The bundle cut short is analyzed from what it holds, and said to be read in part.
    assert!(err.contains("cut.tar.gz: read in part: "), "{err}");
    assert!(err.contains("archive is truncated or corrupt"), "{err}");
    assert!(
        err.contains("6 bundle(s), 1 failed, 1 read in part"),
        "{err}"
    );
    let bundles = lines(&out.join("bundles.jsonl"));
    assert_eq!(bundles.len(), 6);
    let cut = bundles
        .iter()
        .find(|b| b["bundle"].as_str().unwrap().ends_with("cut.tar.gz"));
    let cut = cut.unwrap();
    assert!(
        cut["error"].is_null() && cut["errors"].as_u64().unwrap() >= 1,
        "{cut}"
    );
    assert!(
        cut["diagnostics"].as_u64() >= cut["errors"].as_u64(),
        "{cut}"
    );
    assert_eq!(cut["complete"], false, "{cut}");
    assert!(cut.get("first_error").is_none(), "{cut}");
    for b in bundles.iter().filter(|b| b != &cut && b["error"].is_null()) {
        assert_eq!(
            (&b["errors"], &b["complete"]),
            (&0.into(), &true.into()),
            "{b}"
        );
    }
    let broken = bundles.iter().find(|b| b["error"].is_string()).unwrap();
    assert!(broken["bundle"]
        .as_str()
        .unwrap()
        .ends_with("broken.tar.gz"));
    for b in bundles.iter().filter(|b| b["error"].is_null()) {
        let page = out.join(b["page"].as_str().unwrap());
        assert!(page.exists(), "{}", page.display());
    }
    let findings = lines(&out.join("findings.jsonl"));
    assert!(!findings.is_empty());
    for f in &findings {
        for k in [
            "bundle",
            "host",
            "collected_at",
            "rule",
            "severity",
            "subject",
            "evidence",
        ] {
            assert!(f.get(k).is_some(), "{k} missing in {f}");
        }
    }
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(index.contains("could not be analyzed") && index.contains("broken.tar.gz"));
    assert!(index.contains("1 bundle(s) read in part") && index.contains(">read in part</span>"));
    assert!(index.contains("fleet_zone-a_node-0.html"));
    // Every page name stays inside the output directory.
    for e in walkdir::WalkDir::new(&out) {
        assert!(e.unwrap().path().starts_with(&out));
    }
}

#[test]
fn shards_merge_into_the_same_review() {
    let d = common::scratch();
    fleet(d.path(), 5);
    let src = d.path().join("fleet");
    let whole = d.path().join("whole");
    memgap()
        .args(["report"])
        .arg(&src)
        .arg("-o")
        .arg(&whole)
        .output()
        .unwrap();
    let mut shards = Vec::new();
    for k in 1..=3 {
        let out = d.path().join(format!("shard-{k}"));
        memgap()
            .args(["report", "--shard", &format!("{k}/3")])
            .arg(&src)
            .arg("-o")
            .arg(format!("{}/", out.display()))
            .output()
            .unwrap();
        shards.push(out);
    }
    let merged = d.path().join("merged");
    let r = memgap()
        .arg("merge")
        .args(&shards)
        .arg("-o")
        .arg(&merged)
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(2),
        "the broken bundle is still reported as failed"
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("(1 failed, 1 read in part)"), "{err}");
    let key = |v: &serde_json::Value| format!("{} {} {}", v["bundle"], v["rule"], v["subject"]);
    let mut a: Vec<String> = lines(&whole.join("findings.jsonl"))
        .iter()
        .map(key)
        .collect();
    let mut b: Vec<String> = lines(&merged.join("findings.jsonl"))
        .iter()
        .map(key)
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    let rows = lines(&merged.join("bundles.jsonl"));
    assert_eq!(rows.len(), 7);
    // What the shards said of each bundle survives the merge (the error line is not
    // complete either).
    assert_eq!(rows.iter().filter(|b| b["complete"] == false).count(), 2);
    assert_eq!(rows.iter().filter(|b| b["errors"] != 0).count(), 1);
    let index = std::fs::read_to_string(merged.join("index.html")).unwrap();
    assert!(index.contains("1 bundle(s) read in part"));
    for b in rows {
        if let Some(p) = b["page"].as_str() {
            assert!(merged.join(p).exists(), "{p}");
        }
    }
    assert!(merged.join("index.html").exists());
}
