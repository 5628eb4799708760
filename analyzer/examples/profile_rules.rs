//! Evaluates the built-in rules over one bundle's model many times, for a profiler.
//! `target/release/examples/profile_rules BUNDLE [RUNS]`

/// The allocator of the `memgap` binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: memgap_analyzer::alloc::Mimalloc = memgap_analyzer::alloc::Mimalloc;

use std::sync::Arc;

fn main() {
    memgap_analyzer::alloc::keep_freed_memory(); // as the binary does
    let mut a = std::env::args().skip(1);
    let path = a.next().expect("usage: profile_rules BUNDLE [RUNS]");
    let runs: usize = a.next().map_or(20, |r| r.parse().expect("RUNS"));
    let gz = std::fs::read(&path).expect("bundle");
    let b = memgap_analyzer::reader::read_from(&gz[..], &path, &Default::default()).expect("read");
    let m = Arc::new(memgap_analyzer::model::build(&b));
    let set = memgap_analyzer::rules::RuleSet::builtin().expect("rules");
    let t = std::time::Instant::now();
    for _ in 0..runs {
        std::hint::black_box(memgap_analyzer::rules::evaluate(&set, &m));
    }
    println!(
        "{:.1} ms per evaluation",
        t.elapsed().as_secs_f64() * 1000.0 / runs as f64
    );
}
