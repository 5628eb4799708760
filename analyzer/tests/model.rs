//! The model built from real collections: synthetic nodes through the real collector, and real
//! kernel files from fixtures.

mod common;

use common::{collect, model_of, real_v1_dir, real_v2_scope_dir};
use memgap_analyzer::model;
use memgap_analyzer::parse::Limit;
use memgap_analyzer::reader::{self, Limits};
use memgap_collector::synth::{self, Spec, Version};

#[test]
fn synthetic_v1_node_every_identity_holds() {
    let d = common::scratch();
    let s = synth::generate(d.path(), &Spec::new(Version::V1, 80, 30)).unwrap();
    let m = model_of(&collect(d.path()));
    assert!(m.diagnostics.is_empty(), "{:?}", m.diagnostics);
    assert_eq!(m.cgroups.len(), s.cgroups);
    assert_eq!(m.processes.len(), 30);
    assert!(m.processes.iter().all(|p| p.cgroup_index.is_some()));
    for c in &m.cgroups {
        let b = c
            .bridge
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no bridge", c.path));
        assert!(
            b.within_fuzz,
            "{}: remainder {} > fuzz {}",
            c.path, b.remainder_bytes, b.fuzz_bytes
        );
    }
    let container = m
        .cgroups
        .iter()
        .find(|c| {
            c.k8s
                .as_ref()
                .is_some_and(|k| k.level == "container" && k.qos == Some("burstable"))
        })
        .unwrap();
    // App containers are limited; their pods carry the sum plus headroom, the QoS level none.
    assert!(matches!(
        container.limit,
        Some(Limit::Bytes(_)) | Some(Limit::Max)
    ));
    let root = &m.cgroups[0];
    assert_eq!(&*root.path, "/");
    assert_eq!(root.procs.count, 30, "all processes sum up to the root");
    // Every cgroup's sums and top process against the plain reading: each process counts in
    // its cgroup and every ancestor; the top one has the most anonymous memory, the first
    // listed among equals.
    for (i, c) in m.cgroups.iter().enumerate() {
        let inside = |p: &model::Process| {
            let mut at = p.cgroup_index;
            while let Some(j) = at {
                if j == i {
                    return true;
                }
                at = m.cgroups[j].parent;
            }
            false
        };
        let mine: Vec<(usize, &model::Process)> = m
            .processes
            .iter()
            .enumerate()
            .filter(|(_, p)| inside(p))
            .collect();
        assert_eq!(c.procs.count, mine.len() as u64, "{}", c.path);
        let sum = |f: fn(&model::Process) -> Option<u64>| {
            mine.iter().map(|(_, p)| f(p).unwrap_or(0)).sum::<u64>()
        };
        assert_eq!(c.procs.rss, sum(|p| p.rss), "{}", c.path);
        assert_eq!(c.procs.pss_anon, sum(|p| p.pss_anon), "{}", c.path);
        assert_eq!(c.procs.threads, sum(|p| p.threads), "{}", c.path);
        let top = mine
            .iter()
            .fold(None::<(usize, u64)>, |best, (j, p)| {
                let a = p.rss_anon.unwrap_or(0);
                match best {
                    Some((_, b)) if b >= a => best,
                    _ => Some((*j, a)),
                }
            })
            .map(|(j, _)| j);
        assert_eq!(c.top_process, top, "{}", c.path);
    }
    assert_eq!(m.node.dying_cgroups, Some(0));
    assert!(m.node.thp_enabled.as_deref() == Some("madvise"));
}

#[test]
fn synthetic_v2_node_identities_limits_and_names() {
    let d = common::scratch();
    synth::generate(d.path(), &Spec::new(Version::V2, 60, 20)).unwrap();
    let m = model_of(&collect(d.path()));
    assert!(m.diagnostics.is_empty(), "{:?}", m.diagnostics);
    for c in m.cgroups.iter().filter(|c| c.parent.is_some()) {
        let b = c.bridge.as_ref().unwrap();
        assert!(b.within_fuzz, "{}: remainder {}", c.path, b.remainder_bytes);
        assert_eq!(c.cadvisor.usage_bytes, c.usage_bytes.unwrap());
    }
    // Effective limit: a pod's limit caps its pause container, which has none of its own.
    let pause = m
        .cgroups
        .iter()
        .find(|c| c.limit == Some(Limit::Max) && c.effective_limit.is_some_and(|l| l != Limit::Max))
        .expect("a cgroup limited by an ancestor");
    let by = pause.limited_by.as_ref().unwrap();
    assert!(pause.path.starts_with(&**by) && by != &pause.path);
    let c = m
        .cgroups
        .iter()
        .find(|c| c.k8s.as_ref().is_some_and(|k| k.level == "container"))
        .unwrap();
    let k = c.k8s.as_ref().unwrap();
    assert_eq!(k.runtime.as_deref(), Some("cri-containerd"));
    // Names from /var/log/pods and /var/log/containers.
    let app = m
        .cgroups
        .iter()
        .find(|c| {
            c.k8s
                .as_ref()
                .is_some_and(|k| k.container.as_deref() == Some("app"))
        })
        .expect("a named container");
    let k = app.k8s.as_ref().unwrap();
    assert_eq!(k.namespace.as_deref(), Some("default"));
    assert!(k.pod.as_ref().unwrap().starts_with("app-"));
    assert!(
        app.display_name().starts_with("default/app-") && app.display_name().ends_with("[app]")
    );
    assert!(k.pod_uid.as_ref().unwrap().contains('-'));
}

#[test]
fn real_v1_files_as_an_unpacked_directory() {
    let d = real_v1_dir();
    let b = reader::read(d.path(), &Limits::default()).unwrap();
    let m = model::build(&b);
    // No manifest in a hand-made directory: said, not fatal.
    assert!(m
        .diagnostics
        .iter()
        .any(|x| x.file.as_deref() == Some("manifest.json")));
    let eks = m
        .cgroups
        .iter()
        .find(|c| c.k8s.as_ref().is_some_and(|k| k.level == "container"))
        .unwrap();
    assert_eq!(
        eks.k8s.as_ref().unwrap().pod_uid.as_deref(),
        Some("7a96c459-d529-44ae-9f99-90d3798d6426")
    );
    assert_eq!(eks.limit, Some(Limit::Bytes(2 << 30)));
    assert_eq!(eks.effective_limit, Some(Limit::Bytes(2 << 30)));
    assert!(eks.bridge.as_ref().unwrap().within_fuzz);
    let scratch = m
        .cgroups
        .iter()
        .find(|c| &*c.path == "/research_scratch")
        .unwrap();
    let br = scratch.bridge.as_ref().unwrap();
    assert_eq!(br.parts[1].key, "shmem");
    assert_eq!(scratch.procs.count, 0);
    assert_eq!(m.node.shm_orphaned_bytes, 16 << 20);
    assert!(m.node.negative_dentries.is_some());
    let root = &m.cgroups[0];
    assert!(
        root.bridge.as_ref().unwrap().within_fuzz,
        "root v1 identity"
    );
}

#[test]
fn real_v2_session_scope() {
    let d = real_v2_scope_dir();
    let m = model::build(&reader::read(d.path(), &Limits::default()).unwrap());
    let c = m
        .cgroups
        .iter()
        .find(|c| c.path.ends_with("session-520.scope"))
        .unwrap();
    let b = c.bridge.as_ref().unwrap();
    assert!(b.within_fuzz, "remainder {}", b.remainder_bytes);
    assert_eq!(
        c.cadvisor.kernel_usage, 0,
        "cAdvisor never fills kernel usage on v2"
    );
    assert!(c.pressure.is_some());
}

/// A node big enough for several gzip members, through the real collector: read on 1 and 2
/// threads, its members inflated and scanned, it gives the same analysis, to the byte, as the
/// same tar recompressed as one gzip stream (how earlier collectors wrote it).
#[test]
fn a_bundle_of_gzip_members_reads_as_one_stream() {
    use std::io::{Read, Write};
    let d = common::scratch();
    synth::generate(d.path(), &Spec::new(Version::V1, 600, 300)).unwrap();
    let gz = collect(d.path());
    let members = memgap_collector::bundle::members::members(&gz).expect("members");
    assert!(members.len() >= 3, "{} members", members.len());
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut tar)
        .unwrap();
    let mut one = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    one.write_all(&tar).unwrap();
    let one = one.finish().unwrap();
    assert!(memgap_collector::bundle::members::members(&one).is_none());
    let rules = memgap_analyzer::rules::RuleSet::builtin().unwrap();
    let json = |gz: &[u8], threads: usize| {
        let limits = Limits {
            inflate_threads: threads,
            ..Limits::default()
        };
        let b = reader::read_from(gz, "node.tar.gz", &limits).unwrap();
        let a = memgap_analyzer::Analysis::of(b, &rules);
        assert!(a.diagnostics.is_empty(), "{:?}", a.diagnostics);
        let min = memgap_analyzer::rules::Severity::Info;
        String::from_utf8(memgap_analyzer::output::json(&[a], min).unwrap()).unwrap()
    };
    let want = json(&one, 1);
    assert!(want.contains("kubepods"));
    assert!(json(&gz, 1) == want, "members on 1 thread");
    assert!(json(&gz, 2) == want, "members on 2 threads");
}

/// A process that no `cgroup.procs` lists is placed by its `/proc/PID/cgroup`; one that claims
/// a cgroup the bundle lacks counts for none, and the model says so.
#[test]
fn processes_not_in_any_cgroup_procs_are_placed_by_their_own_cgroup_file() {
    let d = common::scratch();
    synth::generate(d.path(), &Spec::new(Version::V1, 80, 30)).unwrap();
    let listed = model_of(&collect(d.path()));
    let (a, b) = (&listed.processes[3], &listed.processes[7]);
    let (pid_a, pid_b) = (a.pid, b.pid);
    // Both taken out of every cgroup.procs; b's own file then names a cgroup that is not there.
    for e in walkdir::WalkDir::new(d.path().join("sys/fs/cgroup/memory")) {
        let e = e.unwrap();
        if e.file_name() == "cgroup.procs" {
            let t = std::fs::read_to_string(e.path()).unwrap();
            let kept: String = t
                .lines()
                .filter(|l| {
                    ![pid_a, pid_b]
                        .map(|p| p.to_string())
                        .contains(&l.to_string())
                })
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(e.path(), kept).unwrap();
        }
    }
    let own = d.path().join(format!("proc/{pid_b}/cgroup"));
    std::fs::write(&own, "7:memory:/nowhere\n0::/\n").unwrap();
    let m = model_of(&collect(d.path()));
    let at = |pid: u32| m.processes.iter().find(|p| p.pid == pid).unwrap();
    assert_eq!(at(pid_a).cgroup_index, a.cgroup_index);
    assert_eq!(at(pid_a).cgroup, a.cgroup);
    assert_eq!(at(pid_b).cgroup_index, None);
    assert_eq!(at(pid_b).cgroup.as_deref(), Some("/nowhere"));
    let said = format!(
        "1 process(es) are in cgroups the bundle does not hold (PID {pid_b} claims /nowhere)"
    );
    assert!(
        m.diagnostics.iter().any(|d| d.message.starts_with(&said)),
        "{:?}",
        m.diagnostics
    );
}
