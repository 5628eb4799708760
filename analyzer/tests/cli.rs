//! `memgap` end to end.

mod common;

use assert_cmd::Command;
use memgap_collector::synth::{self, Spec, Version};

fn bundle(dir: &std::path::Path, version: Version) -> std::path::PathBuf {
    let root = dir.join("root");
    synth::generate(&root, &Spec::new(version, 30, 6)).unwrap();
    let out = dir.join("b.tar.gz");
    let cfg = memgap_collector::Config {
        root,
        kmsg: None,
        ..Default::default()
    };
    let (_, gz) = memgap_collector::collect(&cfg, Vec::new()).unwrap();
    std::fs::write(&out, gz).unwrap();
    out
}

fn memgap() -> Command {
    Command::cargo_bin("memgap").unwrap()
}

#[test]
fn text_and_json_reports() {
    let d = common::scratch();
    let b = bundle(d.path(), Version::V2);
    let out = memgap().args(["report"]).arg(&b).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("memgap: synth-node-1"), "{text}");
    assert!(text.contains("usage") && text.contains("anon"));
    let out = memgap()
        .args(["report", "--format", "json", "-o", "-"])
        .arg(&b)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["bundle"]["cgroup_mode"], "v2");
    assert!(v["cgroups"].as_array().unwrap().len() >= 30);
}

#[test]
fn one_bad_bundle_does_not_stop_the_others_and_sets_exit_2() {
    let d = common::scratch();
    let good = bundle(d.path(), Version::V1);
    let bad = d.path().join("bad.tar.gz");
    std::fs::write(&bad, b"not a bundle").unwrap();
    let out = memgap()
        .arg("report")
        .arg(&bad)
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.tar.gz: not a memgap bundle"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("synth-node-1"));
}

#[test]
fn completions_and_man_page() {
    memgap()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicates::str::contains("memgap"));
    memgap()
        .arg("man")
        .assert()
        .success()
        .stdout(predicates::str::contains(".TH memgap"));
    memgap()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicates::str::contains("Exit codes"));
}

#[test]
fn rules_list_and_test_and_broken_rule_files() {
    let out = memgap().args(["rules", "test"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(", 0 failed"));
    let out = memgap().args(["rules", "list"]).output().unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.contains("shmem-without-processes") && list.contains("negative-dentries"));
    let d = common::scratch();
    std::fs::write(
        d.path().join("mine.toml"),
        "[[rule]]\nid = \"x\"\ntitle = \"t\"\ncause = \"c\"\nseverity = \"info\"\nscope = \"cgroup\"\n\
         when = \"cg.usage_bytes >\"\nsummary = \"s\"\nexplain = \"e\"\nfix = \"f\"\n",
    )
    .unwrap();
    let out = memgap()
        .args(["rules", "test", "--rules"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mine.toml:7:") && err.contains("rule x, field when"),
        "{err}"
    );
}

#[test]
fn findings_in_json_and_text_with_severity_filters_and_fail_on() {
    let d = common::scratch();
    let b = bundle(d.path(), Version::V1);
    let out = memgap()
        .args(["report", "--format", "json"])
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = v["findings"].as_array().unwrap();
    assert!(!findings.is_empty());
    let f = &findings[0];
    for k in [
        "rule", "severity", "scope", "subject", "summary", "explain", "fix", "evidence", "rank",
    ] {
        assert!(f.get(k).is_some(), "finding without {k}: {f}");
    }
    let out = memgap()
        .args(["report", "--format", "json", "--min-severity", "critical"])
        .arg(&b)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["severity"] == "critical"));
    // The synthetic node has info findings: --fail-on info exits 1, --fail-on critical 0.
    let out = memgap()
        .args(["report", "--fail-on", "info"])
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("the cause that explains the most bytes first"),
        "{text}"
    );
    let out = memgap()
        .args(["report", "--fail-on", "critical"])
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn html_reports_to_a_file_a_directory_and_with_overridden_templates() {
    let d = common::scratch();
    let b = bundle(d.path(), Version::V2);
    let page = d.path().join("out/report.html");
    let out = memgap()
        .args(["report"])
        .arg(&b)
        .arg("-o")
        .arg(&page)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("synth-node-1"));
    // A directory: one page per bundle, named after it.
    let dir = d.path().join("pages/");
    let out = memgap()
        .args(["report"])
        .arg(&b)
        .arg("-o")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("bundles/b.html").exists() && dir.join("index.html").exists());
    // Several bundles cannot share one page.
    let b2 = d.path().join("b2.tar.gz");
    std::fs::copy(&b, &b2).unwrap();
    let out = memgap()
        .args(["report"])
        .arg(&b)
        .arg(&b2)
        .arg("-o")
        .arg(&page)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // --templates replaces a template by name.
    let t = d.path().join("tmpl");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(
        t.join("report.html"),
        "<p>{{ r.bundle.hostname }} has {{ r.counts.cgroups }} cgroups</p>",
    )
    .unwrap();
    let out = memgap()
        .args(["report", "--format", "html", "-o", "-", "--templates"])
        .arg(&t)
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("<p>synth-node-1 has "));
    // A broken template is an error naming it.
    std::fs::write(t.join("report.html"), "{{ r.no_such_thing }}").unwrap();
    let out = memgap()
        .args(["report", "--format", "html", "-o", "-", "--templates"])
        .arg(&t)
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("report.html"));
}
