//! A bundle from arbitrary bytes through the whole pipeline: reader, model, rules, report.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use memgap_analyzer::html::Templates;
use memgap_analyzer::reader::{self, Limits};
use memgap_analyzer::rules::RuleSet;
use memgap_analyzer::Analysis;

static RULES: OnceLock<RuleSet> = OnceLock::new();
static TEMPLATES: OnceLock<Templates> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_total_bytes: 64 << 20,
        max_entry_bytes: 16 << 20,
        max_entries: 100_000,
        inflate_threads: 2, // gzip members (see the seeds) read in parallel
    };
    if let Ok(b) = reader::read_from(data, "fuzz.tar.gz", &limits) {
        let rules = RULES.get_or_init(|| RuleSet::builtin().expect("rules"));
        let a = Analysis::of(b, rules);
        let t = TEMPLATES.get_or_init(|| Templates::builtin().expect("templates"));
        let _ = t.report(&a).expect("a report renders for every bundle");
    }
});
