//! The `memgap-collect` binary end to end: on this machine, on fake roots, under faults.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use assert_cmd::prelude::*;
use common::*;
use memgap_collector::synth::{self, Spec, Version};

fn bin() -> Command {
    Command::cargo_bin("memgap-collect").unwrap()
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn collects_this_machine_for_real() {
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/memory.stat").exists();
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if !v1 && !v2 {
        eprintln!(
            "SKIPPED collects_this_machine_for_real: no cgroup memory hierarchy on this host"
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("node.tar.gz");
    bin()
        .args(["-o", out.to_str().unwrap(), "--jobs", "2", "--quiet"])
        .assert()
        .success();
    let b = unpack(&std::fs::read(&out).unwrap());
    for f in [
        "proc/meminfo",
        "proc/vmstat",
        "proc/mounts",
        "proc/sys/kernel/osrelease",
    ] {
        assert!(
            !b.files.get(f).is_none_or(Vec::is_empty),
            "{f} missing or empty"
        );
    }
    let stat = if v1 {
        "sys/fs/cgroup/memory/memory.stat"
    } else {
        "sys/fs/cgroup/memory.stat"
    };
    assert!(!b.files[stat].is_empty(), "{stat} empty");
    let me = format!("proc/{}/status", std::process::id());
    assert!(
        b.files.contains_key(&me),
        "the test process itself was not collected"
    );
    assert!(b.manifest.counts.processes > 1);
    assert!(b.manifest.counts.cgroups >= 1);
    assert!(!b.manifest.kernel_release.is_empty());
}

#[test]
fn writes_mode_0600_under_the_final_name_only() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    synth::generate(&root, &Spec::new(Version::V2, 15, 2)).unwrap();
    let outdir = d.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    bin()
        .current_dir(&outdir)
        .args(["--root", root.to_str().unwrap(), "--no-kmsg"])
        .assert()
        .success();
    let names: Vec<_> = std::fs::read_dir(&outdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with("memgap-synth-node-1-") && names[0].ends_with(".tar.gz"),
        "{names:?}"
    );
    let meta = std::fs::metadata(outdir.join(&names[0])).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn stdout_output_is_a_valid_bundle() {
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V1, 15, 2)).unwrap();
    let out = bin()
        .args([
            "--root",
            d.path().to_str().unwrap(),
            "--no-kmsg",
            "-o",
            "-",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let b = unpack(&out.stdout);
    assert_eq!(b.manifest.counts.processes, 2);
}

#[test]
fn device_output_is_written_in_place_not_replaced() {
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V1, 15, 2)).unwrap();
    bin()
        .args([
            "--root",
            d.path().to_str().unwrap(),
            "--no-kmsg",
            "-q",
            "-o",
            "/dev/null",
        ])
        .assert()
        .success();
    let meta = std::fs::metadata("/dev/null").unwrap();
    assert!(!meta.is_file(), "/dev/null was replaced by a regular file");
}

#[test]
fn bad_root_is_a_clear_error() {
    bin()
        .args(["--root", "/nonexistent-memgap", "-o", "/tmp/x.tar.gz"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("--root"));
}

#[test]
fn full_disk_leaves_no_file_and_fails() {
    if !is_root() {
        eprintln!("SKIPPED full_disk_leaves_no_file_and_fails: mounting a small tmpfs needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    synth::generate(&root, &Spec::new(Version::V1, 200, 50)).unwrap();
    let small = d.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=16k",
            "tmpfs",
            small.to_str().unwrap(),
        ])
        .status();
    if !ok.map(|s| s.success()).unwrap_or(false) {
        eprintln!("SKIPPED full_disk_leaves_no_file_and_fails: mount(8) of a tmpfs failed here");
        return;
    }
    let out = bin()
        .args([
            "--root",
            root.to_str().unwrap(),
            "--no-kmsg",
            "--level",
            "0",
            "-o",
        ])
        .arg(small.join("b.tar.gz"))
        .output()
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let _ = Command::new("umount").arg(&small).status();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left on device") && err.contains("b.tar.gz"),
        "{err}"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn sigterm_mid_collection_removes_the_partial_bundle() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    synth::generate(&root, &Spec::new(Version::V1, 20, 3)).unwrap();
    // A read that hangs keeps the collector busy while we signal it.
    let fifo = root.join("proc/1001/smaps_rollup");
    std::fs::remove_file(&fifo).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let outdir = d.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut child = bin()
            .args([
                "--root",
                root.to_str().unwrap(),
                "--no-kmsg",
                "--read-timeout",
                "60s",
                "-o",
            ])
            .arg(outdir.join("b.tar.gz"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the temporary file exists, i.e. the collection is under way.
        for _ in 0..100 {
            if std::fs::read_dir(&outdir).unwrap().count() > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + sig), "exit status {status:?}");
        let left: Vec<_> = std::fs::read_dir(&outdir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind after signal {sig}: {left:?}");
    }
}

#[test]
fn help_has_examples() {
    bin()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicates::str::contains("--root /host"));
}

/// Whether tests that need root and the kernel may be skipped here (CI must run them).
fn may_skip(test: &str, why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{test} must run in CI, but {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    true
}

#[test]
fn never_opens_anything_for_writing_but_its_output() {
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(strace) = strace else {
        may_skip(
            "never_opens_anything_for_writing_but_its_output",
            "strace is not installed (Debian package strace)",
        );
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out/node.tar.gz");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let log = d.path().join("strace.log");
    let status = Command::new(strace)
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,open,creat,truncate,ftruncate,write",
            "-o",
        ])
        .arg(&log)
        .arg(assert_cmd::cargo::cargo_bin("memgap-collect"))
        .args(["--jobs", "2", "--quiet", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    if !status.success() {
        may_skip(
            "never_opens_anything_for_writing_but_its_output",
            "strace could not trace here (ptrace not permitted?)",
        );
        return;
    }
    assert!(out.exists());
    let log = std::fs::read_to_string(&log).unwrap();
    let out_dir = out.parent().unwrap().to_string_lossy().to_string();
    let mut opens = 0;
    for line in log.lines() {
        if line.contains("truncate(") && !line.contains("ftruncate(") {
            panic!("truncate by path: {line}");
        }
        let is_open =
            line.contains("openat(") || line.contains(" open(") || line.contains("creat(");
        if !is_open {
            continue;
        }
        opens += 1;
        let writes = [
            "O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "creat(",
        ]
        .iter()
        .any(|f| line.contains(f));
        if !writes {
            continue;
        }
        let path = line.split('"').nth(1).unwrap_or_default();
        assert!(
            path.starts_with(&out_dir),
            "a write-mode open outside the output directory: {line}"
        );
    }
    assert!(opens > 100, "strace saw only {opens} opens:\n{log}");
}

#[test]
fn finishes_inside_a_32_mib_memory_cgroup_on_a_20000_cgroup_node() {
    let mem = std::path::Path::new("/sys/fs/cgroup/memory");
    if !is_root() || !mem.join("memory.limit_in_bytes").exists() {
        may_skip(
            "finishes_inside_a_32_mib_memory_cgroup_on_a_20000_cgroup_node",
            "needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory",
        );
        return;
    }
    let root = tempfile::Builder::new()
        .prefix("memgap-test-node-")
        .tempdir_in("/dev/shm")
        .unwrap();
    synth::generate(root.path(), &Spec::new(Version::V1, 20_000, 2000)).unwrap();
    let cg = mem.join(format!("memgap-test-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            for _ in 0..50 {
                if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let _guard = Remove(cg.clone());
    std::fs::write(
        cg.join("memory.limit_in_bytes"),
        format!("{}\n", 32u64 << 20),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("node.tar.gz");
    // The shell moves itself into the cgroup, then becomes the collector.
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {} --root {} --no-kmsg --quiet -o {}",
            cg.display(),
            assert_cmd::cargo::cargo_bin("memgap-collect").display(),
            root.path().display(),
            bundle.display()
        ))
        .status()
        .unwrap();
    let oom = std::fs::read_to_string(cg.join("memory.oom_control")).unwrap();
    let peak: u64 = std::fs::read_to_string(cg.join("memory.max_usage_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(status.success(), "collector failed: {status:?}; {oom}");
    assert!(oom.contains("oom_kill 0"), "{oom}");
    assert!(peak < 32 << 20, "peak {peak}");
    eprintln!(
        "collector peak charge in a 32 MiB cgroup on 20,000 cgroups: {} KiB",
        peak >> 10
    );
    let b = unpack(&std::fs::read(&bundle).unwrap());
    assert!(b.manifest.counts.cgroups >= 20_000);
}
