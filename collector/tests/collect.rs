//! Collection against fake roots (real fixture files and the synthetic node), faults included.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use memgap_collector::bundle::{CgroupMode, MissReason, TmpfsUsage};
use memgap_collector::synth::{self, Spec, Version};

/// A v1 node built from real captures: the 6.18 root memory cgroup, the amzn2 EKS container and
/// the localhost procfs files.
fn real_v1_root(root: &Path) {
    copy_tree(&fixture("localhost-v1/proc"), &root.join("proc"));
    copy_tree(
        &fixture("localhost-v1/sys/fs/cgroup/memory"),
        &root.join("sys/fs/cgroup/memory"),
    );
    copy_tree(
        &fixture("elastic_elastic-agent-system-metrics/metric/system/cgroup/testdata/amzn2.zip/amzn2/sys/fs/cgroup/memory"),
        &root.join("sys/fs/cgroup/memory"),
    );
    // The process captured alive in the scratch cgroup, as PID 4242.
    copy_tree(
        &fixture("localhost-v1/scratch-demo/alive/proc/self"),
        &root.join("proc/4242"),
    );
    write(root, "proc/mounts", b"cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n");
    std::fs::create_dir_all(root.join("dev/shm")).unwrap();
    write(root, "proc/sys/kernel/hostname", b"real-v1\n");
}

#[test]
fn real_v1_files_round_trip_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    real_v1_root(d.path());
    // proc/self in the fixture is a directory, not the kernel's symlink: keep only mountinfo.
    let (m, gz) = collect_to_vec(&config(d.path()));
    let b = unpack(&gz);
    assert_eq!(m.cgroup_mode, CgroupMode::V1);
    assert_eq!(b.manifest, m);
    assert!(b.top.starts_with("memgap-real-v1-"));
    let mut compared = 0;
    for e in walkdir::WalkDir::new(d.path())
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
    {
        let rel = e
            .path()
            .strip_prefix(d.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if let Some(got) = b.files.get(&rel) {
            assert_eq!(
                got,
                &std::fs::read(e.path()).unwrap(),
                "{rel} differs from its source"
            );
            compared += 1;
        }
    }
    let container = "sys/fs/cgroup/memory/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a96c459_d529_44ae_9f99_90d3798d6426.slice/cri-containerd-1d3d308a7d48a27814a68bf33a44acf4441c9c02463ca0bc1cdfdc8c0b4a8496.scope";
    for f in [
        "memory.stat",
        "memory.usage_in_bytes",
        "memory.kmem.usage_in_bytes",
        "memory.limit_in_bytes",
    ] {
        assert!(
            b.files.contains_key(&format!("{container}/{f}")),
            "{f} missing"
        );
    }
    for f in [
        "proc/meminfo",
        "proc/slabinfo",
        "proc/sysvipc/shm",
        "proc/sys/fs/dentry-state",
        "proc/4242/status",
        "proc/4242/smaps_rollup",
    ] {
        assert!(b.files.contains_key(f), "{f} missing");
    }
    assert!(compared >= 30, "only {compared} files compared");
    // kmem.slabinfo is only read on request.
    assert!(!b
        .files
        .contains_key("sys/fs/cgroup/memory/memory.kmem.slabinfo"));
    let tmpfs: Vec<TmpfsUsage> = serde_json::from_slice(&b.files["memgap/tmpfs.json"]).unwrap();
    assert_eq!(tmpfs[0].mount_point, "/dev/shm");
    assert!(tmpfs[0].size_bytes.is_some());
    // Expected node files that this fake node lacks are listed as absent.
    assert!(m
        .missed
        .iter()
        .any(|x| x.path == "/proc/buddyinfo" && x.reason == MissReason::Absent));
}

#[test]
fn kmem_slabinfo_on_request() {
    let d = tempfile::tempdir().unwrap();
    real_v1_root(d.path());
    let mut cfg = config(d.path());
    cfg.kmem_slabinfo = true;
    let b = unpack(&collect_to_vec(&cfg).1);
    assert!(b
        .files
        .contains_key("sys/fs/cgroup/memory/memory.kmem.slabinfo"));
}

#[test]
fn v2_real_and_synthetic() {
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V2, 40, 10)).unwrap();
    let scope = "sys/fs/cgroup/user.slice/user-1000.slice/session-520.scope";
    copy_tree(
        &fixture("elastic_elastic-agent-system-metrics/metric/system/cgroup/testdata/docker2.zip/docker2").join(scope),
        &d.path().join(scope),
    );
    let (m, gz) = collect_to_vec(&config(d.path()));
    assert_eq!(m.cgroup_mode, CgroupMode::V2);
    let b = unpack(&gz);
    let real = std::fs::read(d.path().join(scope).join("memory.stat")).unwrap();
    assert_eq!(b.files[&format!("{scope}/memory.stat")], real);
    assert!(b
        .files
        .contains_key("sys/fs/cgroup/kubepods.slice/cgroup.stat"));
    // memory.reclaim is write-only: it exists in the fake root but must never be read.
    assert!(!b.files.keys().any(|k| k.ends_with("memory.reclaim")));
    assert_eq!(m.counts.processes, 10);
}

#[test]
fn hybrid_walks_both_hierarchies() {
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V1, 20, 4)).unwrap();
    let mut mounts = std::fs::read_to_string(d.path().join("proc/mounts")).unwrap();
    mounts.push_str("cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n");
    write(d.path(), "proc/mounts", mounts.as_bytes());
    copy_tree(
        &fixture("localhost-v1/sys/fs/cgroup/unified"),
        &d.path().join("sys/fs/cgroup/unified"),
    );
    let (m, gz) = collect_to_vec(&config(d.path()));
    assert_eq!(m.cgroup_mode, CgroupMode::Hybrid);
    let b = unpack(&gz);
    assert!(b.files.contains_key("sys/fs/cgroup/unified/cgroup.stat"));
    assert!(b
        .files
        .contains_key("sys/fs/cgroup/memory/kubepods/memory.stat"));
}

#[test]
fn synthetic_node_collects_everything_and_never_reads_forbidden_files() {
    let d = tempfile::tempdir().unwrap();
    let s = synth::generate(d.path(), &Spec::new(Version::V1, 120, 30)).unwrap();
    let (m, gz) = collect_to_vec(&config(d.path()));
    assert_eq!(m.counts.cgroups as usize, s.cgroups);
    assert_eq!(m.counts.processes as usize, s.processes);
    assert_eq!(m.counts.vanished_processes, 0);
    let b = unpack(&gz);
    for forbidden in [
        "environ",
        "memory.force_empty",
        "cgroup.event_control",
        "memory.pressure_level",
        "drop_caches",
        "compact_memory",
        "tasks",
    ] {
        assert!(
            !b.files.keys().any(|k| k.ends_with(forbidden)),
            "{forbidden} was collected"
        );
    }
    // One entry per cgroup directory and per process, not per file.
    assert!(
        b.entries.len() < s.cgroups + s.processes + 100,
        "{} entries",
        b.entries.len()
    );
    assert!(b.files.contains_key("memgap/pods.txt"));
    assert_eq!(b.entries.last().unwrap(), "manifest.json");
}

#[test]
fn vanished_process_and_unreadable_file_are_recorded_not_fatal() {
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V1, 20, 3)).unwrap();
    // A process that exited between listing and reading: its directory has no files.
    std::fs::create_dir_all(d.path().join("proc/77777")).unwrap();
    // A node file that fails to read (EISDIR stands in for EIO/ENODEV: any I/O error).
    std::fs::remove_file(d.path().join("proc/vmstat")).unwrap();
    std::fs::create_dir_all(d.path().join("proc/vmstat")).unwrap();
    let (m, gz) = collect_to_vec(&config(d.path()));
    assert_eq!(m.counts.vanished_processes, 1);
    let miss = m
        .missed
        .iter()
        .find(|x| x.path == "/proc/vmstat")
        .expect("vmstat listed as missed");
    assert_eq!(miss.reason, MissReason::Io);
    assert!(unpack(&gz).files.contains_key("proc/meminfo"));
}

#[test]
fn a_read_that_blocks_is_abandoned_and_the_rest_is_kept() {
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V1, 20, 3)).unwrap();
    // A FIFO with no writer blocks in open(2), like smaps_rollup behind a contended mmap lock.
    let fifo = d.path().join("proc/1001/smaps_rollup");
    std::fs::remove_file(&fifo).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut cfg = config(d.path());
    cfg.read_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let (m, gz) = collect_to_vec(&cfg);
    assert!(started.elapsed() < Duration::from_secs(5));
    let t = m
        .missed
        .iter()
        .find(|x| x.reason == MissReason::Timeout)
        .expect("timeout recorded");
    assert_eq!(t.path, "/proc/1001/smaps_rollup");
    let b = unpack(&gz);
    assert!(
        b.files.contains_key("proc/1001/status"),
        "files read before the hang are kept"
    );
    assert!(
        b.files.contains_key("proc/1002/smaps_rollup"),
        "other processes still collected"
    );
    assert_eq!(m.counts.processes, 3);
}

#[test]
fn size_caps_are_enforced_and_recorded() {
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V1, 20, 3)).unwrap();
    let mut cfg = config(d.path());
    cfg.max_file_bytes = 20_000; // slabinfo and zoneinfo are larger
    let (m, gz) = collect_to_vec(&cfg);
    assert!(m
        .missed
        .iter()
        .any(|x| x.path == "/proc/slabinfo" && x.reason == MissReason::TooLarge));
    assert!(!unpack(&gz).files.contains_key("proc/slabinfo"));
    cfg.max_total_bytes = 50_000;
    let (m, gz) = collect_to_vec(&cfg);
    assert!(m.missed.iter().any(|x| x.reason == MissReason::TotalCap));
    let b = unpack(&gz);
    let stored: usize = b
        .files
        .iter()
        .filter(|(k, _)| *k != "manifest.json")
        .map(|(_, v)| v.len())
        .sum();
    // Packs add their framing to the content they hold, so compare with some headroom.
    assert!(stored > 0 && stored <= 50_000, "{stored} bytes stored");
}

#[test]
fn full_output_disk_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V1, 20, 3)).unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let err = memgap_collector::collect(&config(d.path()), full).unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
}

#[test]
fn samples_go_under_snapshots() {
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V2, 15, 2)).unwrap();
    let mut cfg = config(d.path());
    cfg.samples = 2;
    cfg.interval = Duration::from_millis(10);
    let (m, gz) = collect_to_vec(&cfg);
    assert_eq!(m.samples.len(), 2);
    assert_eq!(m.samples[1].prefix, "snapshots/1/");
    let b = unpack(&gz);
    assert!(b.files.contains_key("snapshots/0/proc/meminfo"));
    assert!(b
        .files
        .contains_key("snapshots/1/sys/fs/cgroup/kubepods.slice/memory.current"));
    assert_eq!(m.counts.processes, 4);
}

#[test]
fn redaction_leaves_no_hostname_or_argument_anywhere() {
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V1, 20, 3)).unwrap();
    let host = "zz-secret-host-7731";
    write(
        d.path(),
        "proc/sys/kernel/hostname",
        format!("{host}\n").as_bytes(),
    );
    write(
        d.path(),
        "proc/1001/cmdline",
        b"/opt/app/bin/server\0--token=zz-secret-arg-4410\0",
    );
    std::fs::create_dir_all(
        d.path()
            .join(format!("var/log/pods/kube-system_etcd-{host}_abc/etcd")),
    )
    .unwrap();
    let kmsg = d.path().join("kmsg");
    std::fs::write(&kmsg, format!("4,1,1,-;server invoked oom-killer: gfp_mask=0xcc0, order=0, oom_score_adj=0\n4,2,2,-;{host} kernel: something\n3,3,3,-;Memory cgroup out of memory: Killed process 1001 (server) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB\n")).unwrap();
    let mut cfg = config(d.path());
    cfg.redact = true;
    cfg.kmsg = Some(kmsg);
    let (m, gz) = collect_to_vec(&cfg);
    let b = unpack(&gz);
    let hay = String::from_utf8_lossy(&b.raw_tar);
    for marker in [host, "zz-secret-arg-4410"] {
        assert!(!hay.contains(marker), "{marker} survived redaction");
    }
    assert!(m.redacted);
    assert!(m.hostname.starts_with("redacted-"));
    assert!(b.files["proc/1001/cmdline"].starts_with(b"server\0redacted-"));
    assert!(b.files["memgap/kmsg-oom.txt"]
        .windows(14)
        .any(|w| w == b"Killed process"));
}

#[test]
fn real_eio_and_enxio_from_the_kernel_are_recorded_not_fatal() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var_os("CI").is_some() {
            panic!(
                "real_eio_and_enxio_from_the_kernel_are_recorded_not_fatal must run in CI (root)"
            );
        }
        eprintln!(
            "SKIPPED real_eio_and_enxio_from_the_kernel_are_recorded_not_fatal: mknod needs root"
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    synth::generate(d.path(), &Spec::new(Version::V1, 20, 3)).unwrap();
    // ENXIO: a character device whose driver does not exist (major 60 is reserved for local
    // use and unassigned).
    let dev = d.path().join("proc/zoneinfo");
    std::fs::remove_file(&dev).unwrap();
    let c = std::ffi::CString::new(dev.to_str().unwrap()).unwrap();
    // SAFETY: creating a device node in our own temporary directory.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o444, libc::makedev(60, 0)) };
    assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
    // EIO: the kernel's /proc/self/mem at offset 0 (nothing is mapped there).
    let vm = d.path().join("proc/vmstat");
    std::fs::remove_file(&vm).unwrap();
    std::os::unix::fs::symlink("/proc/self/mem", &vm).unwrap();
    let (m, gz) = collect_to_vec(&config(d.path()));
    for (p, errno) in [
        ("/proc/zoneinfo", "os error 6"),
        ("/proc/vmstat", "os error 5"),
    ] {
        let miss = m
            .missed
            .iter()
            .find(|x| x.path == p)
            .unwrap_or_else(|| panic!("{p} not recorded as missed"));
        assert_eq!(miss.reason, MissReason::Io, "{miss:?}");
        assert!(miss.detail.contains(errno), "{miss:?}");
    }
    assert!(unpack(&gz).files.contains_key("proc/meminfo"));
}
