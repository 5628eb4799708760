//! Times each phase of one bundle's batch work on one thread, many times, for a profiler and
//! for deciding what to work on. `target/release/examples/profile_phases BUNDLE [RUNS]`

/// The allocator of the `memgap` binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: memgap_analyzer::alloc::Mimalloc = memgap_analyzer::alloc::Mimalloc;

use std::time::Instant;

use memgap_analyzer::{batch, reader, rules, Analysis};

fn main() {
    memgap_analyzer::alloc::keep_freed_memory(); // as the binary does
    let mut a = std::env::args().skip(1);
    let path = a.next().expect("usage: profile_phases BUNDLE [RUNS]");
    let runs: usize = a.next().map_or(20, |r| r.parse().expect("RUNS"));
    let set = rules::RuleSet::builtin().expect("rules");
    let catalogue = rules::compile(&set).without_texts_for_people(); // as a batch without pages
    let limits = reader::Limits {
        inflate_threads: 1,
        ..Default::default()
    };
    let names = ["read", "model", "rules", "summary", "lines", "drop"];
    let mut total = [0f64; 6];
    // On one pool thread, as a batch analyzes each bundle (`batch::in_order`): the model's
    // parallel steps then allocate on the thread that frees, as in the batch.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a thread");
    pool.install(|| {
        for _ in 0..runs {
            let mut t = Instant::now();
            let mut lap = |i: usize, t: &mut Instant| {
                total[i] += t.elapsed().as_secs_f64();
                *t = Instant::now();
            };
            let mut b = reader::read(std::path::Path::new(&path), &limits).expect("read");
            lap(0, &mut t);
            let stored = std::mem::take(&mut b.stored);
            let model = memgap_analyzer::model::build(&b);
            drop(b);
            lap(1, &mut t);
            let mut an = Analysis::of_model(model, &catalogue);
            an.stored = stored;
            lap(2, &mut t);
            let row = batch::summarize("b", None, &an);
            lap(3, &mut t);
            let (mut json, mut stats) = (
                Vec::with_capacity(an.findings.len() * 800), // as the batch does
                batch::RuleStats::default(),
            );
            batch::lines::write("b", None, &an, &mut json, &mut stats);
            std::hint::black_box((&row, &json));
            lap(4, &mut t);
            drop((row, json, stats));
            drop(an);
            lap(5, &mut t);
        }
    });
    for (n, t) in names.iter().zip(total) {
        println!("{n:6} {:6.2} ms", t * 1000.0 / runs as f64);
    }
    println!(
        "total  {:6.2} ms",
        total.iter().sum::<f64>() * 1000.0 / runs as f64
    );
}
