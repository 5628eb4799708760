//! Reads one bundle many times, for a profiler (`perf record`).
//! `target/release/examples/profile_read BUNDLE [RUNS]`

/// The allocator of the `memgap` binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: memgap_analyzer::alloc::Mimalloc = memgap_analyzer::alloc::Mimalloc;

fn main() {
    memgap_analyzer::alloc::keep_freed_memory(); // as the binary does
    let mut a = std::env::args().skip(1);
    let path = a.next().expect("usage: profile_read BUNDLE [RUNS]");
    let runs: usize = a.next().map_or(20, |r| r.parse().expect("RUNS"));
    let gz = std::fs::read(&path).expect("bundle");
    let t = std::time::Instant::now();
    for _ in 0..runs {
        let b = memgap_analyzer::reader::read_from(&gz[..], &path, &Default::default());
        std::hint::black_box(b.expect("read"));
    }
    println!(
        "{:.1} ms per read",
        t.elapsed().as_secs_f64() * 1000.0 / runs as f64
    );
}
