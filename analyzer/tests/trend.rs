//! A multi-sample bundle from the real collector, over a synthetic node whose container writes
//! to a tmpfs between snapshots: the growth shows in the model, fires the growth rule, and
//! draws trend charts in the report.

mod common;

use std::time::Duration;

use memgap_analyzer::html::{text_of, Templates};
use memgap_analyzer::reader::{self, Limits};
use memgap_analyzer::rules::RuleSet;
use memgap_analyzer::Analysis;
use memgap_collector::synth::{self, Spec, Version};

#[test]
fn growth_across_snapshots_fires_and_is_drawn() {
    let d = common::scratch();
    synth::generate(d.path(), &Spec::new(Version::V2, 30, 8)).unwrap();
    // The first app container found.
    let target = common::v2_container(&d.path().join("sys/fs/cgroup"), true);
    let path = target.strip_prefix(d.path().join("sys/fs/cgroup")).unwrap();
    let cg_path = format!("/{}", path.display());
    let writer = {
        let target = target.clone();
        std::thread::spawn(move || {
            for _ in 0..2 {
                std::thread::sleep(Duration::from_millis(500));
                common::grow_v2_shmem(&target, 8 << 20);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let cfg = memgap_collector::Config {
        root: d.path().to_path_buf(),
        kmsg: None,
        samples: 3,
        interval: Duration::from_secs(1),
        ..Default::default()
    };
    let gz = memgap_collector::collect(&cfg, Vec::new()).unwrap().1;
    writer.join().unwrap();
    let b = reader::read_from(&gz[..], "trend.tar.gz", &Limits::default()).unwrap();
    assert_eq!(b.samples.len(), 3);
    let a = Analysis::of(b, &RuleSet::builtin().unwrap());
    let c = a
        .model
        .cgroups
        .iter()
        .find(|c| *c.path == *cg_path)
        .unwrap();
    let t = c.trend.as_ref().expect("a trend");
    assert_eq!(t.at_s.len(), 3);
    let shmem: Vec<u64> = t.series["shmem"].iter().map(|v| v.unwrap()).collect();
    assert_eq!(shmem[2] - shmem[0], 16 << 20, "{shmem:?}");
    assert!(t.steady["shmem"]);
    // 16 MiB in ~2 s is tens of GiB per hour.
    assert!(t.per_hour["shmem"] > (1u64 << 30) as f64);
    assert!(!t.steady.get("anon").copied().unwrap_or(false));
    let f = a
        .findings
        .iter()
        .find(|f| &*f.rule == "shmem-growing")
        .expect("shmem-growing fired");
    assert_eq!(f.cgroup_path.as_deref(), Some(cg_path.as_str()));
    // Only the grown container is flagged.
    assert_eq!(
        a.findings
            .iter()
            .filter(|f| &*f.rule == "shmem-growing")
            .count(),
        1
    );
    let html = Templates::builtin().unwrap().report(&a).unwrap();
    assert!(html.contains("<polyline"), "trend charts drawn");
    assert!(text_of(&html).contains("Across the 3 snapshots"));
}
