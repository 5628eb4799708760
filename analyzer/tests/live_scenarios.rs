//! The scenarios on the live kernel: create each cause in a scratch cgroup, collect with the
//! freshly built collector, check the diagnosis, clean up. Needs root and a memory cgroup
//! controller; without them it says why and passes, except in CI (`CI` set), where the runner
//! is asked to require them.

use assert_cmd::Command;

#[test]
fn every_scenario_on_the_live_kernel() {
    let ci = std::env::var_os("CI").is_some();
    let mut cmd = Command::cargo_bin("memgap-scenarios").unwrap();
    cmd.arg("run");
    if ci {
        cmd.arg("--require");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !ci && stderr.contains("cannot run here") {
        eprintln!(
            "SKIPPED every_scenario_on_the_live_kernel: {}",
            stderr.trim()
        );
        return;
    }
    assert!(
        out.status.success(),
        "scenarios failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().filter(|l| l.starts_with("PASS")).count() >= 13,
        "{stdout}"
    );
    // Nothing left behind.
    let leftovers: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/memory")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("memgap-scenarios-")
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
