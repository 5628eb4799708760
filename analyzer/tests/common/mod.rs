//! Helpers shared by the analyzer's integration tests: bundles from the real collector over a
//! synthetic node, and unpacked bundles assembled from the real kernel files in fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use memgap_analyzer::model::{self, Model};
use memgap_analyzer::reader::{self, Limits};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/realdata");

pub fn collect(root: &Path) -> Vec<u8> {
    let cfg = memgap_collector::Config {
        root: root.to_path_buf(),
        kmsg: None,
        jobs: 2,
        ..Default::default()
    };
    memgap_collector::collect(&cfg, Vec::new()).unwrap().1
}

pub fn model_of(gz: &[u8]) -> Model {
    model::build(&reader::read_from(gz, "test.tar.gz", &Limits::default()).unwrap())
}

pub fn copy_tree(src: &Path, dest: &Path) {
    for e in walkdir::WalkDir::new(src) {
        let e = e.unwrap();
        let to = dest.join(e.path().strip_prefix(src).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// A v1 node from real captures: the 6.18 root memory cgroup, the EKS container of amzn2, and
/// the scratch cgroup (48 MiB of shmem, no process) after its process exited.
pub fn real_v1_dir() -> tempfile::TempDir {
    let d = scratch();
    let r = d.path();
    let f = |p: &str| PathBuf::from(FIXTURES).join(p);
    copy_tree(&f("localhost-v1/proc"), &r.join("proc"));
    copy_tree(
        &f("localhost-v1/sys/fs/cgroup/memory"),
        &r.join("sys/fs/cgroup/memory"),
    );
    copy_tree(&f("elastic_elastic-agent-system-metrics/metric/system/cgroup/testdata/amzn2.zip/amzn2/sys/fs/cgroup/memory"), &r.join("sys/fs/cgroup/memory"));
    copy_tree(
        &f("localhost-v1/scratch-demo/after-exit/sys/fs/cgroup/memory/research_scratch"),
        &r.join("sys/fs/cgroup/memory/research_scratch"),
    );
    // The after-exit IPC namespace view: the 16 MiB segment with nattch 0.
    std::fs::copy(
        f("localhost-v1/scratch-demo/after-exit/proc/sysvipc/shm"),
        r.join("proc/sysvipc/shm"),
    )
    .unwrap();
    std::fs::create_dir_all(r.join("proc/sys/kernel")).unwrap();
    std::fs::write(r.join("proc/sys/kernel/osrelease"), "6.18.44\n").unwrap();
    d
}

/// An unpacked v2 bundle holding one real session scope (docker2 capture, kernel ~6.5).
pub fn real_v2_scope_dir() -> tempfile::TempDir {
    let d = scratch();
    let scope = "sys/fs/cgroup/user.slice/user-1000.slice/session-520.scope";
    copy_tree(&PathBuf::from(FIXTURES).join("elastic_elastic-agent-system-metrics/metric/system/cgroup/testdata/docker2.zip/docker2").join(scope), &d.path().join(scope));
    std::fs::write(
        d.path().join("sys/fs/cgroup/cgroup.controllers"),
        "cpu io memory pids\n",
    )
    .unwrap();
    d
}

/// A scratch directory, on tmpfs when there is one: synthetic nodes are thousands of small
/// files, and creating them on an overlay root file system costs far more than the test.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("memgap-test-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// Adds `delta` to the shmem (and so file and usage) of a v2 cgroup directory, keeping the
/// kernel's identities.
pub fn grow_v2_shmem(dir: &Path, delta: u64) {
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap();
    let out: Vec<String> = stat
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((k @ ("shmem" | "file"), v)) => {
                format!("{k} {}", v.parse::<u64>().unwrap() + delta)
            }
            _ => l.to_string(),
        })
        .collect();
    std::fs::write(dir.join("memory.stat"), out.join("\n") + "\n").unwrap();
    let cur: u64 = std::fs::read_to_string(dir.join("memory.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(dir.join("memory.current"), format!("{}\n", cur + delta)).unwrap();
}

/// A bundle whose hostname, one cgroup's name and one command line are markup and script
/// (that would log to the console if it ever ran), analyzed with the built-in rules.
pub fn hostile_analysis() -> memgap_analyzer::Analysis {
    let d = scratch();
    let root = d.path().join("root");
    memgap_collector::synth::generate(
        &root,
        &memgap_collector::synth::Spec::new(memgap_collector::synth::Version::V1, 20, 4),
    )
    .unwrap();
    let evil = HOSTILE_SCRIPT;
    std::fs::write(root.join("proc/sys/kernel/hostname"), format!("{evil}\n")).unwrap();
    // A cgroup whose name is markup, holding shared memory so it gets a section and findings.
    let cg = root.join("sys/fs/cgroup/memory/<img src=x onerror=console.error(2)>");
    std::fs::create_dir_all(&cg).unwrap();
    let stat = "cache 104857600\nrss 0\nshmem 104857600\nactive_file 0\ninactive_file 0\n\
                total_cache 104857600\ntotal_rss 0\ntotal_shmem 104857600\n\
                total_active_anon 104857600\ntotal_inactive_anon 0\ntotal_active_file 0\n\
                total_inactive_file 0\n";
    std::fs::write(cg.join("memory.stat"), stat).unwrap();
    std::fs::write(cg.join("memory.usage_in_bytes"), "104857600\n").unwrap();
    std::fs::write(cg.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
    std::fs::write(cg.join("cgroup.procs"), "").unwrap();
    // A process whose command line is markup.
    let pid = std::fs::read_dir(root.join("proc"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .unwrap()
        .path();
    std::fs::write(pid.join("cmdline"), format!("sh\0-c\0{evil}\0")).unwrap();
    let gz = collect(&root);
    let b = memgap_analyzer::reader::read_from(
        &gz[..],
        "<b>bundle</b>.tar.gz",
        &memgap_analyzer::reader::Limits::default(),
    )
    .unwrap();
    let a = memgap_analyzer::Analysis::of(b, &memgap_analyzer::rules::RuleSet::builtin().unwrap());
    assert!(
        a.findings
            .iter()
            .any(|f| f.subject.contains("<img") && &*f.rule == "shmem-without-processes"),
        "the hostile cgroup must have a finding (and so a section)"
    );
    a
}

/// The hostname of [`hostile_analysis`].
pub const HOSTILE_SCRIPT: &str = "<script>console.error(1)</script>";

/// The first container cgroup directory of a synthetic v2 node (`cri-containerd-*.scope`),
/// optionally one with a memory limit.
pub fn v2_container(cgroup_root: &Path, limited: bool) -> PathBuf {
    walkdir::WalkDir::new(cgroup_root)
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| {
            e.file_type().is_dir()
                && e.file_name()
                    .to_string_lossy()
                    .starts_with("cri-containerd-")
                && (!limited
                    || std::fs::read_to_string(e.path().join("memory.max"))
                        .is_ok_and(|m| m.trim() != "max"))
        })
        .expect("a container cgroup")
        .path()
        .to_path_buf()
}
