//! `memgap diff` on two real collections of a synthetic node, between which one container's
//! shared memory grew and a cgroup appeared.

mod common;

use assert_cmd::Command;
use memgap_collector::synth::{self, Spec, Version};

/// `memgap diff OLD NEW --format FORMAT -o -`, which must succeed.
fn diff(old: &std::path::Path, new: &std::path::Path, format: &str) -> String {
    let out = Command::cargo_bin("memgap")
        .unwrap()
        .args(["diff", "--format", format])
        .arg(old)
        .arg(new)
        .args(["-o", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn diff_shows_growth_new_cgroups_and_new_findings() {
    let d = common::scratch();
    let root = d.path().join("root");
    synth::generate(&root, &Spec::new(Version::V2, 30, 8)).unwrap();
    let before = d.path().join("before.tar.gz");
    std::fs::write(&before, common::collect(&root)).unwrap();
    let cg_root = root.join("sys/fs/cgroup");
    let target = common::v2_container(&cg_root, false);
    common::grow_v2_shmem(&target, 256 << 20);
    let fresh = cg_root.join("system.slice/new.service");
    std::fs::create_dir_all(&fresh).unwrap();
    for f in [
        "memory.stat",
        "memory.current",
        "memory.max",
        "cgroup.procs",
    ] {
        std::fs::copy(target.join(f), fresh.join(f)).unwrap();
    }
    let after = d.path().join("after.tar.gz");
    std::fs::write(&after, common::collect(&root)).unwrap();

    let v: serde_json::Value = serde_json::from_str(&diff(&before, &after, "json")).unwrap();
    let path = format!("/{}", target.strip_prefix(&cg_root).unwrap().display());
    let c = v["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == path.as_str())
        .expect("the grown container is listed");
    assert_eq!(c["usage"]["change"], 256 << 20);
    let shmem = c["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == "shmem")
        .unwrap();
    assert_eq!(shmem["change"], 256 << 20);
    assert!(v["appeared"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["path"] == "/system.slice/new.service"));
    assert!(v["findings_new"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["rule"].as_str().unwrap().starts_with("shmem")));
    // HTML renders too, to a file named for it.
    let page = d.path().join("diff.html");
    let out = Command::cargo_bin("memgap")
        .unwrap()
        .arg("diff")
        .args([&before, &after])
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
    assert!(html.contains("What changed?") && !html.contains("read in part"));
    assert_eq!(
        (&v["old"]["complete"], &v["new"]["complete"]),
        (&true.into(), &true.into())
    );

    // An after-bundle cut short: what it lost looks vanished, and the diff says why.
    let whole = std::fs::read(&after).unwrap();
    let cut = d.path().join("cut.tar.gz");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let text = diff(&before, &cut, "text");
    assert!(
        text.contains("warning: the new bundle was read in part: cgroups it lost show as vanished"),
        "{text}"
    );
    let page = diff(&before, &cut, "html");
    assert!(page.contains("The bundle after was read in part"));
    let v: serde_json::Value = serde_json::from_str(&diff(&before, &cut, "json")).unwrap();
    assert_eq!(v["new"]["complete"], false);
    assert!(!v["vanished"].as_array().unwrap().is_empty());
}
