//! Batch benchmark: N copies of a bundle (symbolic links) reviewed into one output directory,
//! against decompressing all of them in-process on the same rayon pool, in the same run:
//! ROUNDS (5) of the two alternated, their median ratio; then once with a page per bundle.
//! The floor is flate2's `MultiGzDecoder` (zlib-rs), the usual way; each round also times
//! inflating every member whole with libdeflate, as `memgap` reads bundles, for comparison.
//!
//! ```text
//! cargo build --release -p memgap-analyzer --examples
//! target/release/examples/bench_batch /tmp/synth5k.tar.gz 200 [ROUNDS]
//! ```

/// The allocator of the `memgap` binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: memgap_analyzer::alloc::Mimalloc = memgap_analyzer::alloc::Mimalloc;

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
        std::fs::canonicalize(args.next().expect("usage: bench_batch BUNDLE [N] [ROUNDS]"))
            .expect("bundle");
    let n: usize = args.next().map_or(200, |s| s.parse().expect("N"));
    let rounds: usize = args.next().map_or(5, |s| s.parse().expect("ROUNDS"));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bundles");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..n {
        std::os::unix::fs::symlink(&bundle, src.join(format!("node-{i:04}.tar.gz"))).unwrap();
    }
    let inputs = batch::discover(std::slice::from_ref(&src));
    assert_eq!(inputs.len(), n);

    let decompress = || -> (f64, u64) {
        let t = Instant::now();
        let bytes = inputs
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
        (t.elapsed().as_secs_f64(), bytes)
    };
    let inflate_whole = || -> f64 {
        let t = Instant::now();
        let bytes: u64 = inputs
            .par_iter()
            .map(|i| {
                let gz = std::fs::read(&i.path).unwrap();
                memgap_analyzer::reader::inflate_members(&gz).expect("a bundle of members")
            })
            .sum();
        std::hint::black_box(bytes);
        t.elapsed().as_secs_f64()
    };

    // The process's CPU time (user + system, all threads), next to wall time: on a shared
    // machine a phase can be slowed by what it does not control, and CPU time shows the work.
    let cpu = || -> f64 {
        let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
        // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
        let u = unsafe {
            libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
            u.assume_init()
        };
        let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        s(u.ru_utime) + s(u.ru_stime)
    };
    let timed = |f: &dyn Fn() -> f64| -> (f64, f64) {
        let c = cpu();
        let wall = f();
        (wall, cpu() - c)
    };

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
    // Floor and batch alternate, round after round: this machine's speed drifts by tens of
    // percent between runs, and a ratio of two runs made next to each other drifts less.
    let (mut ratios, mut whole_ratios, mut cpu_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let bytes = std::cell::Cell::new(0);
    println!("{n} bundles, {} threads", rayon::current_num_threads());
    for round in 1..=rounds {
        let (floor, floor_cpu) = timed(&|| {
            let (t, b) = decompress();
            bytes.set(b);
            t
        });
        let whole = inflate_whole();
        let (lines, lines_cpu) = timed(&|| run(false, &dir.path().join("out-lines")));
        println!(
            "round {round}: decompress all (floor) {floor:.2} s, batch (index + JSON lines) \
             {lines:.2} s: {:.2}x the floor; members inflated whole (libdeflate) {whole:.2} s: \
             {:.2}x that; CPU time {floor_cpu:.2} s and {lines_cpu:.2} s: {:.2}x",
            lines / floor,
            lines / whole,
            lines_cpu / floor_cpu
        );
        ratios.push(lines / floor);
        whole_ratios.push(lines / whole);
        cpu_ratios.push(lines_cpu / floor_cpu);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("{} MB of tar", bytes.get() / 1_000_000);
    println!(
        "batch, index + JSON lines:        {:.2}x the floor (median of {rounds} rounds); {:.2}x \
         libdeflate's inflating; {:.2}x the floor's CPU time",
        median(&mut ratios),
        median(&mut whole_ratios),
        median(&mut cpu_ratios)
    );
    let (floor, _) = decompress();
    let pages = run(true, &dir.path().join("out-pages"));
    println!(
        "batch, with a page per bundle:    {pages:.2} s, {:.2}x the floor ({floor:.2} s)",
        pages / floor
    );
    let size = |p: &str| std::fs::metadata(dir.path().join(p)).map_or(0, |m| m.len());
    println!(
        "findings.jsonl {} MB, index.html {} KB",
        size("out-lines/findings.jsonl") / 1_000_000,
        size("out-lines/index.html") / 1000
    );
}
