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
    Analysis::of(b, &RuleSet::builtin().unwrap())
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
            let a = Analysis::of(b, &RuleSet::builtin().unwrap());
            Templates::builtin()
                .unwrap()
                .report(&a)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

#[test]
fn hostile_names_are_escaped_everywhere() {
    let a = common::hostile_analysis();
    let evil = common::HOSTILE_SCRIPT;
    let html = page(&a);
    for raw in ["<script>console", "<img src=x", "<b>bundle"] {
        assert!(!html.contains(raw), "unescaped {raw}");
    }
    // ...and the text is still there for a reader.
    let text = text_of(&html);
    assert!(text.contains(evil), "hostname shown escaped");
    assert!(text.contains("<img src=x onerror=console.error(2)>"));
    // The page's only script is memgap's own, admitted by hash.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains("script-src &#x27;sha256-"));
}
