//! Every sample bundle in `samples/` against the findings expected beside it, and the README's
//! demo command on the whole directory.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use memgap_analyzer::expect::Expectation;
use memgap_analyzer::reader::{self, Limits};
use memgap_analyzer::rules::RuleSet;
use memgap_analyzer::Analysis;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

/// (bundle, expectation) pairs: `NAME.expect.toml` beside `NAME.tar.gz` or `NAME/`.
fn pairs() -> Vec<(PathBuf, Expectation)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(samples()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".expect.toml") else {
            continue;
        };
        let bundle = [
            samples().join(format!("{stem}.tar.gz")),
            samples().join(stem),
        ]
        .into_iter()
        .find(|b| b.exists())
        .unwrap_or_else(|| panic!("no bundle for {name}"));
        let exp = Expectation::parse(&std::fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((bundle, exp));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_sample_gives_its_expected_diagnosis() {
    let rules = RuleSet::builtin().unwrap();
    let pairs = pairs();
    assert!(pairs.len() >= 16, "{} samples", pairs.len());
    let mut failures = Vec::new();
    for (bundle, exp) in &pairs {
        let b = reader::read(bundle, &Limits::default()).unwrap();
        let a = Analysis::of(b, &rules);
        if let Err(e) = exp.check(&a) {
            failures.push(format!("{}: {e}", bundle.display()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_healthy_sample_blames_no_kernel_cause() {
    let (_, exp) = pairs()
        .into_iter()
        .find(|(b, _)| b.to_string_lossy().contains("healthy-anon"))
        .expect("the healthy scenario's sample");
    assert!(exp.absent.iter().any(|r| r == "page-cache-reclaimable"));
    assert!(exp.absent.iter().any(|r| r == "kernel-memory-v1"));
}

#[test]
fn the_readme_demo_reviews_the_samples_directory() {
    let out = tempfile::tempdir().unwrap();
    let r = Command::cargo_bin("memgap")
        .unwrap()
        .arg("report")
        .arg(samples())
        .arg("-o")
        .arg(out.path().join("report"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let index = std::fs::read_to_string(out.path().join("report/index.html")).unwrap();
    assert!(index.contains("v1-oom-kill") && index.contains("v2-session-page-cache"));
    let pages = std::fs::read_dir(out.path().join("report/bundles"))
        .unwrap()
        .count();
    assert_eq!(pages, pairs().len());
}
