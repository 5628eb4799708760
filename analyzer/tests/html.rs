//! The HTML report: renders every kind of bundle with strict templates, snapshots of its text,
//! escaping of hostile names, and its size on a large node.

mod common;

use std::path::Path;

use common::{collect, model_of, real_v1_dir, real_v2_scope_dir};
use memgap_analyzer::html::{text_of, Templates};
use memgap_analyzer::reader::{self, Limits};
use memgap_analyzer::rules::RuleSet;
use memgap_analyzer::Analysis;
use memgap_collector::synth::{self, Spec, Version};

fn page(a: &Analysis) -> String {
    Templates::builtin()
        .unwrap()
        .report(a)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn analyze_dir(d: &Path) -> Analysis {
    let b = reader::read(d, &Limits::default()).unwrap();
    Analysis::of(&b, &RuleSet::builtin().unwrap())
}

/// The page's text with the temporary directory's name replaced, for snapshots.
fn snapshot_text(a: &Analysis, dir: &Path) -> String {
    text_of(&page(a)).replace(&dir.display().to_string(), "BUNDLE")
}

#[test]
fn real_v1_report_text() {
    let d = real_v1_dir();
    let a = analyze_dir(d.path());
    insta::assert_snapshot!("real_v1", snapshot_text(&a, d.path()));
}

#[test]
fn real_v2_report_text() {
    let d = real_v2_scope_dir();
    let a = analyze_dir(d.path());
    insta::assert_snapshot!("real_v2", snapshot_text(&a, d.path()));
}

#[test]
fn synthetic_nodes_render_and_stay_small() {
    for v in [Version::V1, Version::V2] {
        let d = common::scratch();
        synth::generate(d.path(), &Spec::new(v, 2000, 600)).unwrap();
        let m = model_of(&collect(d.path()));
        let a = Analysis::of_model(m, &RuleSet::builtin().unwrap());
        let html = page(&a);
        assert!(html.len() < 3 << 20, "{} bytes", html.len());
        assert!(html.contains("Where is the memory?"));
        // Everything is in the page: no external resource of any kind.
        for bad in ["src=\"http", "href=\"http://", "@import", "url("] {
            assert!(!html.contains(bad), "{bad}");
        }
    }
}

#[test]
fn every_sample_bundle_renders() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let Ok(rd) = std::fs::read_dir(&samples) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        let is_bundle =
            p.to_string_lossy().ends_with(".tar.gz") || p.join("manifest.json").exists();
        if is_bundle {
            let b = reader::read(&p, &Limits::default()).unwrap();
            let a = Analysis::of(&b, &RuleSet::builtin().unwrap());
            Templates::builtin()
                .unwrap()
                .report(&a)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

#[test]
fn hostile_names_are_escaped_everywhere() {
    let d = common::scratch();
    let root = d.path().join("root");
    synth::generate(&root, &Spec::new(Version::V1, 20, 4)).unwrap();
    let evil = "<script>alert(1)</script>";
    std::fs::write(root.join("proc/sys/kernel/hostname"), format!("{evil}\n")).unwrap();
    // A cgroup whose name is markup, holding shared memory so it gets a section and findings.
    let cg = root.join("sys/fs/cgroup/memory/<img src=x onerror=alert(2)>");
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
    let b = reader::read_from(&gz[..], "<b>bundle</b>.tar.gz", &Limits::default()).unwrap();
    let a = Analysis::of(&b, &RuleSet::builtin().unwrap());
    assert!(
        a.findings
            .iter()
            .any(|f| f.subject.contains("<img") && f.rule == "shmem-without-processes"),
        "the hostile cgroup must have a finding (and so a section)"
    );
    let html = page(&a);
    for raw in ["<script>alert", "<img src=x", "<b>bundle"] {
        assert!(!html.contains(raw), "unescaped {raw}");
    }
    // ...and the text is still there for a reader.
    let text = text_of(&html);
    assert!(text.contains(evil), "hostname shown escaped");
    assert!(text.contains("<img src=x onerror=alert(2)>"));
    // The page's only script is memgap's own, admitted by hash.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains("script-src &#x27;sha256-"));
}
