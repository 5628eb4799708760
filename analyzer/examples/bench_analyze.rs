//! Analyzer benchmark: reading + parsing + model building of one bundle, against the time the
//! same flate2 backend takes to decompress that bundle into a sink, in the same run; then the
//! rule catalogue over that model, against the model-building time, on 1 thread and on the
//! default rayon pool.
//!
//! ```text
//! cargo build --release -p memgap-collector --examples && cargo build --release -p memgap-analyzer --examples
//! target/release/examples/bench_collect --cgroups 5000 --processes 2000 --runs 1   # makes the node
//! target/release/memgap-collect --root /dev/shm/memgap-bench/v1-5000-2000 --no-kmsg -o /tmp/synth5k.tar.gz
//! target/release/examples/bench_analyze /tmp/synth5k.tar.gz 9
//! ```

/// The allocator of the `memgap` binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: memgap_analyzer::alloc::Mimalloc = memgap_analyzer::alloc::Mimalloc;

use std::io::Read;
use std::time::{Duration, Instant};

use std::sync::Arc;

use memgap_analyzer::{model, reader, rules};

fn main() {
    memgap_analyzer::alloc::keep_freed_memory(); // as the binary does
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: bench_analyze BUNDLE [RUNS]");
    let runs: usize = args.next().map_or(9, |r| r.parse().expect("RUNS"));
    let gz = std::fs::read(&path).expect("read bundle");
    let (mut floor, mut read, mut build, mut total) = (vec![], vec![], vec![], vec![]);
    // The bundle's gzip members (none for a bundle of an earlier collector), inflated into a
    // sink on every thread: a reference for how much of reading parallel inflating saves.
    let members = memgap_collector::bundle::members::members(&gz);
    let mut par_floor = vec![];
    // The same tar as one gzip stream (as earlier collectors wrote it), to show what members
    // cost the floor itself.
    let one_stream = members.as_ref().map(|_| {
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut e, &tar).unwrap();
        e.finish().unwrap()
    });
    let mut one_floor = vec![];
    let (mut rules_par, mut rules_one) = (vec![], vec![]);
    let set = rules::RuleSet::builtin().expect("rules");
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut findings = 0;
    let mut content = 0u64;
    for _ in 0..runs {
        let t = Instant::now();
        content = std::io::copy(
            &mut flate2::read::MultiGzDecoder::new(&gz[..]),
            &mut std::io::sink(),
        )
        .unwrap();
        floor.push(t.elapsed());
        if let Some(one) = &one_stream {
            let t = Instant::now();
            std::io::copy(
                &mut flate2::read::GzDecoder::new(&one[..]),
                &mut std::io::sink(),
            )
            .unwrap();
            one_floor.push(t.elapsed());
        }
        if let Some(ms) = &members {
            use rayon::prelude::*;
            let t = Instant::now();
            ms.par_iter().for_each(|m| {
                let mut d = flate2::bufread::GzDecoder::new(&gz[m.range.clone()]);
                std::io::copy(&mut d, &mut std::io::sink()).unwrap();
            });
            par_floor.push(t.elapsed());
        }
        let t = Instant::now();
        let b = reader::read_from(&gz[..], &path, &reader::Limits::default()).expect("bundle");
        let r = t.elapsed();
        let m = model::build(&b);
        let all = t.elapsed();
        assert!(!m.cgroups.is_empty());
        let m = Arc::new(m);
        let t = Instant::now();
        findings = rules::evaluate(&set, &m).findings.len();
        rules_par.push(t.elapsed());
        let t = Instant::now();
        one.install(|| rules::evaluate(&set, &m));
        rules_one.push(t.elapsed());
        read.push(r);
        build.push(all - r);
        total.push(all);
    }
    let gzip_cmd = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc '{path}' > /dev/null"))
        .spawn()
        .and_then(|mut c| {
            let t = Instant::now();
            c.wait()?;
            Ok(t.elapsed())
        });
    // Each run's total against the floor measured just before it: drifts of the machine's
    // speed over the runs cancel out.
    let mut ratios: Vec<f64> = total
        .iter()
        .zip(&floor)
        .map(|(t, f)| t.as_secs_f64() / f.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    let (f, r, b, t) = (
        med(&mut floor),
        med(&mut read),
        med(&mut build),
        med(&mut total),
    );
    println!(
        "bundle: {path} ({} bytes compressed, {content} bytes of tar)",
        gz.len()
    );
    println!("decompress to a sink (floor):     {f:>8.1} ms (median of {runs})");
    if members.is_some() {
        let one = med(&mut one_floor);
        println!(
            "  the tar as one gzip stream:      {one:>8.1} ms (reference; ratio to it {:.2})",
            t / one
        );
        println!(
            "  gzip members on {} threads:      {:>8.1} ms (reference)",
            rayon::current_num_threads(),
            med(&mut par_floor)
        );
    }
    println!("read (gunzip + tar + index):      {r:>8.1} ms");
    println!("parse + model:                    {b:>8.1} ms");
    println!("read + parse + model:             {t:>8.1} ms");
    println!("ratio to the floor:               {:>8.2}", t / f);
    println!(
        "median of the runs' ratios:       {:>8.2}",
        ratios[ratios.len() / 2]
    );
    let (rp, r1) = (med(&mut rules_par), med(&mut rules_one));
    println!(
        "rules ({} rules, {findings} findings): {rp:>8.1} ms on {} threads, {r1:.1} ms on 1 (speed-up {:.2}x)",
        set.rules().len(),
        rayon::current_num_threads(),
        r1 / rp
    );
    println!("rules / parse + model:            {:>8.2}", rp / b);
    if let Ok(g) = gzip_cmd {
        println!(
            "gzip -dc (reference, one run):    {:>8.1} ms",
            g.as_secs_f64() * 1000.0
        );
    }
    let _ = std::io::stdin().read(&mut [0u8; 0]);
}
