//! memgap's analyzer: reads bundles, builds a model of the node, its cgroups and processes,
//! applies the rule catalogue and explains why memory usage exceeds RSS.
//!
//! Pipeline: [`reader`] (bundle -> files, with diagnostics) -> [`parse`] (text -> typed values)
//! -> [`model`] (node, cgroup tree, derived values) -> [`rules`] (findings) -> [`output`]
//! (JSON, text).

pub mod alloc;
pub mod batch;
pub mod diff;
pub mod expect;
pub mod format;
pub mod html;
pub mod model;
pub mod output;
pub mod parse;
pub mod reader;
pub mod rules;

/// Hash maps keyed by what bundles hold (paths, keys, pids): foldhash, fast and seeded afresh
/// in every process, so a hostile bundle cannot be crafted to make its keys collide (std's
/// SipHash cost 3% of model building; an unseeded hash such as FxHash could be attacked).
pub type FastMap<K, V> = foldhash::HashMap<K, V>;
/// The set of the same hash.
pub type FastSet<K> = foldhash::HashSet<K>;

/// The files of `rules/` and `templates/`, embedded at build time (see `build.rs`).
pub mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

/// A model and what the rules found in it.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub model: Arc<model::Model>,
    pub findings: Vec<rules::Finding>,
    /// The bundle's problems, then rules that failed at run time.
    pub diagnostics: Vec<reader::Diagnostic>,
    /// What the bundle stores (for the report's appendix); empty for a model built elsewhere.
    pub stored: reader::Stored,
}

impl Analysis {
    /// Builds the model of the bundle's latest snapshot and applies the rules. The bundle is
    /// taken whole: what it stores is kept for the report's appendix without a copy, and its
    /// bytes are freed before the rules run.
    pub fn of(mut b: reader::Bundle, rules: &impl rules::Evaluate) -> Analysis {
        let stored = std::mem::take(&mut b.stored);
        let model = model::build(&b);
        drop(b);
        let mut a = Self::of_model(model, rules);
        a.stored = stored;
        a
    }

    pub fn of_model(m: model::Model, rules: &impl rules::Evaluate) -> Analysis {
        let model = Arc::new(m);
        let out = rules.evaluate(&model);
        let mut diagnostics = model.diagnostics.clone();
        diagnostics.extend(out.diagnostics);
        reader::cap_diagnostics(&mut diagnostics);
        Analysis {
            model,
            findings: out.findings,
            diagnostics,
            stored: reader::Stored::default(),
        }
    }

    /// The top-ranked finding of each cgroup that has one, by cgroup index.
    pub fn headline(&self, cgroup: usize) -> Option<&rules::Finding> {
        self.findings
            .iter()
            .find(|f| f.cgroup_index == Some(cgroup) && f.rank == 1)
    }
}

/// Reads one bundle and analyzes its latest snapshot with the given rules.
pub fn analyze(path: &Path, rules: &rules::RuleSet) -> Result<Analysis, reader::BundleError> {
    let b = reader::read(path, &reader::Limits::default())?;
    Ok(Analysis::of(b, rules))
}

/// The JSON document of one analysis (`docs/json-schema.md`).
#[derive(Serialize)]
pub struct AnalysisJson<'a> {
    pub schema_version: u32,
    pub bundle: &'a model::BundleInfo,
    pub findings: Vec<&'a rules::Finding>,
    pub node: &'a model::Node,
    pub cgroups: &'a [model::Cgroup],
    pub processes: &'a [model::Process],
    pub oom_events: &'a [parse::oom::OomEvent],
    pub diagnostics: &'a [reader::Diagnostic],
}

impl Analysis {
    pub fn json(&self, min: rules::Severity) -> AnalysisJson<'_> {
        let m = &self.model;
        AnalysisJson {
            schema_version: m.schema_version,
            bundle: &m.bundle,
            findings: rules::engine::at_least(&self.findings, min).collect(),
            node: &m.node,
            cgroups: &m.cgroups,
            processes: &m.processes,
            oom_events: &m.oom_events,
            diagnostics: &self.diagnostics,
        }
    }
}
