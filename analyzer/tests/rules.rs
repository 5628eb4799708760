//! The rule catalogue: its examples, its coverage of the causes, and its findings on real kernel
//! files and on the collector's synthetic node.

mod common;

use std::collections::BTreeSet;

use common::{collect, model_of, real_v1_dir, real_v2_scope_dir};
use memgap_analyzer::reader::{self, Limits};
use memgap_analyzer::rules::{self, RuleSet, Scope, Severity};
use memgap_analyzer::{model, Analysis};
use memgap_collector::synth::{self, Spec, Version};

fn builtin() -> RuleSet {
    RuleSet::builtin().unwrap_or_else(|e| panic!("{e:#?}"))
}

#[test]
fn every_example_in_the_catalogue_passes() {
    let set = builtin();
    let results = rules::examples::run(&set);
    let failed: Vec<_> = results.iter().filter(|r| r.failure.is_some()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(results.len() >= 2 * set.rules().len());
}

#[test]
fn the_catalogue_covers_every_cause() {
    // The 22 causes of shared/domain/causes.md and the confusions, by the rules' cause tags.
    let want = [
        "page-cache",
        "dirty-cache",
        "shmem",
        "sysv-shm",
        "rss-vs-memcg",
        "kernel-slab",
        "negative-dentries",
        "kernel-memory",
        "socket-buffers",
        "unevictable",
        "swap",
        "thp",
        "lazyfree",
        "dying-cgroups",
        "parent-charges",
        "limits",
        "oom",
        "anon",
        "pressure",
        "residue",
    ];
    let set = builtin();
    let have: BTreeSet<&str> = set.rules().iter().map(|r| r.spec.cause.as_str()).collect();
    for c in want {
        assert!(have.contains(c), "no rule for cause {c}");
    }
    for r in set.rules() {
        assert!(!r.spec.refs.is_empty(), "{} has no refs", r.spec.id);
        assert!(
            r.spec.thresholds.is_some(),
            "{} does not justify its thresholds",
            r.spec.id
        );
    }
}

#[test]
fn real_v1_files_name_the_left_behind_shared_memory() {
    let d = real_v1_dir();
    let b = reader::read(d.path(), &Limits::default()).unwrap();
    let a = Analysis::of(b, &builtin());
    let rule_problems: Vec<_> = a
        .diagnostics
        .iter()
        .filter(|d| d.message.starts_with("rule "))
        .collect();
    assert!(rule_problems.is_empty(), "{rule_problems:#?}");
    let on = |path: &str| -> Vec<&str> {
        a.findings
            .iter()
            .filter(|f| f.cgroup_path.as_deref() == Some(path))
            .map(|f| &*f.rule)
            .collect()
    };
    // The scratch cgroup after its process exited: 48 MiB of shmem (a 32 MiB /dev/shm file and
    // a 16 MiB SysV segment), no process. That is the headline, with its bytes.
    let scratch = a
        .findings
        .iter()
        .find(|f| f.cgroup_path.as_deref() == Some("/research_scratch") && f.rank == 1)
        .unwrap();
    assert_eq!(&*scratch.rule, "shmem-without-processes");
    assert_eq!(scratch.bytes, Some(48 << 20));
    assert!(scratch.summary.contains("48.0 MiB"), "{}", scratch.summary);
    // The node: the 16 MiB SysV segment with nattch 0.
    let node: Vec<&str> = a
        .findings
        .iter()
        .filter(|f| f.scope == Scope::Node)
        .map(|f| &*f.rule)
        .collect();
    assert!(node.contains(&"sysv-shm-orphaned"), "{node:?}");
    // The EKS container (real amzn2 files): 1.1 GiB used of a 2 GiB limit, mostly anon;
    // nothing alarming, and not 'usage above limit'.
    let eks = a
        .model
        .cgroups
        .iter()
        .find(|c| c.k8s.as_ref().is_some_and(|k| k.level == "container"))
        .unwrap();
    let fired = on(&eks.path);
    assert!(!fired.contains(&"usage-above-limit"), "{fired:?}");
    assert!(!fired.contains(&"near-oom"), "{fired:?}");
    // The root is a sum: cause rules do not repeat its children's causes there.
    assert!(
        on("/").iter().all(|r| !r.starts_with("page-cache")),
        "{:?}",
        on("/")
    );
}

#[test]
fn real_v2_scope_with_pressure_data() {
    let d = real_v2_scope_dir();
    let m = model::build(&reader::read(d.path(), &Limits::default()).unwrap());
    let a = Analysis::of_model(m, &builtin());
    let fired: Vec<(&str, Option<u64>)> = a.findings.iter().map(|f| (&*f.rule, f.bytes)).collect();
    // 6.7 GB of the 10.4 GB charged to this session is inactive page cache: the headline.
    assert_eq!(
        fired.first(),
        Some(&("page-cache-reclaimable", Some(6_685_749_248)))
    );
    assert!(a
        .diagnostics
        .iter()
        .all(|d| !d.message.starts_with("rule ")));
}

#[test]
fn synthetic_node_findings_are_consistent_with_its_model() {
    let d = common::scratch();
    synth::generate(d.path(), &Spec::new(Version::V1, 300, 120)).unwrap();
    let m = model_of(&collect(d.path()));
    let a = Analysis::of_model(m, &builtin());
    assert!(a.diagnostics.is_empty(), "{:#?}", a.diagnostics);
    let count = |rule: &str| a.findings.iter().filter(|f| &*f.rule == rule).count();
    // The generator keeps usage under limits, gives BestEffort app containers no limit and puts
    // shmem in some pods: each shows up, and nothing impossible does.
    assert_eq!(count("usage-above-limit"), 0);
    assert!(count("container-without-limit") > 0);
    assert!(count("page-cache-reclaimable") > 0);
    for f in &a.findings {
        let c = f.cgroup_index.map(|i| &a.model.cgroups[i]);
        match &*f.rule {
            "shmem-without-processes" => {
                let c = c.unwrap();
                assert_eq!(c.procs.count, 0);
                assert_eq!(f.bytes, Some(c.bridge.as_ref().unwrap().part("shmem")));
            }
            "container-without-limit" => {
                let c = c.unwrap();
                assert_eq!(c.k8s.as_ref().unwrap().level, "container");
                assert!(matches!(
                    c.limit,
                    None | Some(memgap_analyzer::parse::Limit::Max)
                ));
            }
            _ => {}
        }
    }
    // Ranks: 1..n within each cgroup, most bytes first.
    for i in 0..a.model.cgroups.len() {
        let fs: Vec<_> = a
            .findings
            .iter()
            .filter(|f| f.cgroup_index == Some(i))
            .collect();
        for (k, f) in fs.iter().enumerate() {
            assert_eq!(f.rank, k + 1);
            if k > 0 {
                assert!(fs[k - 1].bytes.unwrap_or(0) >= f.bytes.unwrap_or(0));
            }
        }
    }
    // Deterministic: the same model gives the same findings in the same order.
    let again = Analysis::of_model((*a.model).clone(), &builtin());
    let ids = |a: &Analysis| -> Vec<(String, Option<usize>)> {
        a.findings
            .iter()
            .map(|f| (f.rule.to_string(), f.cgroup_index))
            .collect()
    };
    assert_eq!(ids(&a), ids(&again));
}

#[test]
fn a_rule_failing_at_run_time_is_a_diagnostic_and_the_others_run() {
    let broken = r#"
[[rule]]
id = "reads-a-missing-key"
title = "t"
cause = "test"
severity = "info"
scope = "cgroup"
thresholds = "test"
when = "cg.stat.no_such_key > 0"
summary = "s"
explain = "e"
fix = "f"
refs = ["x"]
[[rule.example]]
name = "fires"
fire = true
cg = { stat = { no_such_key = 1 } }
[[rule.example]]
name = "near miss"
fire = false
cg = { stat = { no_such_key = 0 } }
"#;
    let dir = common::scratch();
    std::fs::write(dir.path().join("broken.toml"), broken).unwrap();
    let set = RuleSet::with_dir(dir.path()).unwrap();
    let d = real_v1_dir();
    let a = Analysis::of(reader::read(d.path(), &Limits::default()).unwrap(), &set);
    let diag = a
        .diagnostics
        .iter()
        .find(|d| d.message.contains("reads-a-missing-key"))
        .expect("diagnostic");
    assert!(diag.message.contains("field when"), "{}", diag.message);
    assert!(diag.message.contains("/research_scratch") || diag.message.contains(" on /"));
    // The built-in rules still ran.
    assert!(a
        .findings
        .iter()
        .any(|f| &*f.rule == "shmem-without-processes"));
}

#[test]
fn severity_filters() {
    let d = real_v1_dir();
    let a = Analysis::of(
        reader::read(d.path(), &Limits::default()).unwrap(),
        &builtin(),
    );
    let warn: Vec<_> = rules::engine::at_least(&a.findings, Severity::Warning).collect();
    assert!(warn.iter().all(|f| f.severity >= Severity::Warning));
    assert!(warn.len() < a.findings.len());
}

/// The engine evaluates conditions, bytes and evidence with expressions compiled to Rust,
/// and minijinja wherever those decline. Both must give the same values: on every example,
/// on real kernel files (v1 and v2) and on synthetic v1 and v2 nodes.
#[test]
fn compiled_expressions_agree_with_minijinja() {
    let set = builtin();
    let check = |what: &str, a: rules::Agreement| {
        assert!(a.mismatches.is_empty(), "{what}: {:#?}", a.mismatches);
        // Every condition is compiled; only what uses `max`, `last`, `round` or a loop is not.
        let not_compiled: BTreeSet<&str> = a
            .not_compiled
            .iter()
            .map(|s| s.split(" on ").next().unwrap())
            .collect();
        assert_eq!(
            not_compiled.into_iter().collect::<Vec<_>>(),
            [
                "anon-growing explain",
                "node-oom-kills explain",
                "node-oom-kills summary",
                "oom-killed summary",
                "tmpfs-in-use explain",
                "unevictable-mlock bytes",
                "unevictable-mlock summary"
            ],
            "{what}"
        );
        assert!(a.compared > 0, "{what}");
        a
    };
    let ex = check("examples", rules::examples::check_native(&set));
    // Examples leave out what a rule that does not fire need not read, so texts and evidence
    // may be left to minijinja there (which fails the same way), but never a condition.
    assert!(!ex.deferred.iter().any(|d| d.contains(" when ")), "{ex:#?}");
    for (what, dir) in [("real v1", real_v1_dir()), ("real v2", real_v2_scope_dir())] {
        let b = reader::read(dir.path(), &Limits::default()).unwrap();
        let m = std::sync::Arc::new(model::build(&b));
        let a = check(what, rules::check_native(&set, &m));
        // On a real model no condition is left to minijinja at run time.
        assert!(
            !a.deferred.iter().any(|d| d.contains(" when ")),
            "{what}: {:#?}",
            a.deferred
        );
    }
    for v in [Version::V1, Version::V2] {
        let d = common::scratch();
        synth::generate(d.path(), &Spec::new(v, 200, 80)).unwrap();
        let m = std::sync::Arc::new(model_of(&collect(d.path())));
        let a = check("synthetic", rules::check_native(&set, &m));
        assert!(
            !a.deferred.iter().any(|d| d.contains(" when ")),
            "{v:?}: {:#?}",
            a.deferred
        );
        assert!(a.compared > 200 * 20, "{}", a.compared);
    }
}

/// Without the texts for people (a batch without pages) the findings are the same, their
/// evidence values and summaries included; only evidence texts, `explain` and `fix` are empty.
#[test]
fn findings_without_texts_for_people_keep_everything_else() {
    let set = builtin();
    let d = common::scratch();
    synth::generate(d.path(), &Spec::new(Version::V1, 200, 80)).unwrap();
    let m = std::sync::Arc::new(model_of(&collect(d.path())));
    let full = rules::evaluate_compiled(&rules::compile(&set), &m).findings;
    let lean =
        rules::evaluate_compiled(&rules::compile(&set).without_texts_for_people(), &m).findings;
    assert!(full.iter().any(|f| !f.evidence.is_empty()));
    assert_eq!(full.len(), lean.len());
    for (f, l) in full.iter().zip(&lean) {
        assert!(l.evidence.iter().all(|e| e.text.is_empty()), "{}", l.rule);
        assert!(f.evidence.iter().all(|e| !e.text.is_empty()), "{}", f.rule);
        assert!(l.explain.is_empty() && l.fix.is_empty(), "{}", l.rule);
        assert!(!f.explain.is_empty() && !f.fix.is_empty(), "{}", f.rule);
        assert!(!l.summary.is_empty(), "{}", l.rule);
        let mut f = serde_json::to_value(f).unwrap();
        for e in f["evidence"].as_array_mut().unwrap() {
            e["text"] = "".into();
        }
        f["explain"] = "".into();
        f["fix"] = "".into();
        assert_eq!(f, serde_json::to_value(l).unwrap());
    }
}
