//! Batch benchmark: N copies of a bundle (symbolic links) reviewed into one output directory,
//! against decompressing all of them in-process on the same rayon pool, in the same run.
//!
//! ```text
//! cargo build --release -p memgap-analyzer --examples
//! target/release/examples/bench_batch /tmp/synth5k.tar.gz 200
//! ```

/// The allocator of the `memgap` binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use memgap_analyzer::batch::{self, Options};
use memgap_analyzer::html::Templates;
use memgap_analyzer::reader::Limits;
use memgap_analyzer::rules::{RuleSet, Severity};
use rayon::prelude::*;

fn main() {
    memgap_analyzer::alloc::keep_freed_memory(); // as the binary does
    let mut args = std::env::args().skip(1);
    let bundle =
        std::fs::canonicalize(args.next().expect("usage: bench_batch BUNDLE [N]")).expect("bundle");
    let n: usize = args.next().map_or(200, |s| s.parse().expect("N"));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bundles");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..n {
        std::os::unix::fs::symlink(&bundle, src.join(format!("node-{i:04}.tar.gz"))).unwrap();
    }
    let inputs = batch::discover(std::slice::from_ref(&src));
    assert_eq!(inputs.len(), n);

    let t = Instant::now();
    let bytes: u64 = inputs
        .par_iter()
        .map(|i| {
            let f = std::io::BufReader::new(std::fs::File::open(&i.path).unwrap());
            std::io::copy(
                &mut flate2::read::MultiGzDecoder::new(f),
                &mut std::io::sink(),
            )
            .unwrap()
        })
        .sum();
    let floor = t.elapsed().as_secs_f64();

    let rules = RuleSet::builtin().unwrap();
    let templates = Templates::builtin().unwrap();
    let run = |pages: bool, out: &std::path::Path| {
        let t = Instant::now();
        let o = batch::run(
            &inputs,
            &Options {
                out,
                rules: &rules,
                templates: &templates,
                min_severity: Severity::Info,
                limits: Limits::default(),
                pages,
            },
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(o.failed, 0);
        t.elapsed().as_secs_f64()
    };
    let lines = run(false, &dir.path().join("out-lines"));
    let pages = run(true, &dir.path().join("out-pages"));
    let size = |p: &str| std::fs::metadata(dir.path().join(p)).map_or(0, |m| m.len());
    println!(
        "{n} bundles ({} MB of tar), {} threads",
        bytes / 1_000_000,
        rayon::current_num_threads()
    );
    println!("decompress all (floor):           {floor:>8.2} s");
    println!(
        "batch, index + JSON lines:        {lines:>8.2} s  ({:.2}x the floor)",
        lines / floor
    );
    println!(
        "batch, with a page per bundle:    {pages:>8.2} s  ({:.2}x the floor)",
        pages / floor
    );
    println!(
        "findings.jsonl {} MB, index.html {} KB",
        size("out-lines/findings.jsonl") / 1_000_000,
        size("out-lines/index.html") / 1000
    );
}
