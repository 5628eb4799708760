//! Collector benchmark: wall time against a floor measured in the same run, bundle size against
//! gzip of the content alone, and the peak RSS of the real binary.
//!
//! ```text
//! cargo build --release -p memgap-collector --bins --examples
//! target/release/examples/bench_collect --cgroups 5000 --processes 2000 --jobs 2 --runs 5
//! ```
//!
//! The floor is a plain program that reads exactly the files the collector stored, with the same
//! number of threads and a reused buffer, and does nothing else.
//!
//! `--real N` (root, cgroup v1 memory controller) measures this machine instead: it creates N
//! empty memory cgroups (pods of two containers) under
//! `/sys/fs/cgroup/memory/memgap-bench-<pid>/`, collects `/`, and removes them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memgap_collector::bundle::pack;
use memgap_collector::synth::{self, Spec, Version};

struct Args {
    cgroups: usize,
    processes: usize,
    jobs: usize,
    runs: usize,
    version: Version,
    dir: PathBuf,
    real: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        cgroups: 5000,
        processes: 2000,
        jobs: 2,
        runs: 5,
        version: Version::V1,
        dir: PathBuf::from("/dev/shm/memgap-bench"),
        real: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        let val = w.get(1).cloned().unwrap_or_default();
        match w[0].as_str() {
            "--cgroups" => a.cgroups = val.parse().expect("--cgroups N"),
            "--processes" => a.processes = val.parse().expect("--processes N"),
            "--jobs" => a.jobs = val.parse().expect("--jobs N"),
            "--runs" => a.runs = val.parse().expect("--runs N"),
            "--v2" => {
                a.version = if val == "yes" {
                    Version::V2
                } else {
                    Version::V1
                }
            }
            "--dir" => a.dir = PathBuf::from(val),
            "--real" => a.real = Some(val.parse().expect("--real N")),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// Real memory cgroups made for the benchmark, removed when dropped.
struct RealCgroups(PathBuf, Vec<PathBuf>);

impl RealCgroups {
    fn create(n: usize) -> RealCgroups {
        let top = PathBuf::from(format!(
            "/sys/fs/cgroup/memory/memgap-bench-{}",
            std::process::id()
        ));
        std::fs::create_dir(&top).expect("create the benchmark's cgroup (root, cgroup v1?)");
        let mut made = RealCgroups(top.clone(), Vec::new());
        let mut i = 0;
        while made.1.len() < n {
            let pod = top.join(format!("pod{i}"));
            std::fs::create_dir(&pod).expect("mkdir");
            made.1.push(pod.clone());
            for c in 0..2 {
                if made.1.len() < n {
                    let cg = pod.join(format!("c{c}"));
                    std::fs::create_dir(&cg).expect("mkdir");
                    made.1.push(cg);
                }
            }
            i += 1;
        }
        made
    }
}

impl Drop for RealCgroups {
    fn drop(&mut self) {
        for c in self.1.iter().rev() {
            let _ = std::fs::remove_dir(c);
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn main() {
    let a = args();
    let _real = a.real.map(RealCgroups::create);
    let (tag, root) = match a.real {
        Some(n) => (
            format!("this machine + {n} empty memory cgroups"),
            PathBuf::from("/"),
        ),
        None => {
            let tag = format!("{:?}-{}-{}", a.version, a.cgroups, a.processes).to_lowercase();
            let root = a.dir.join(&tag);
            if !root.join("proc/meminfo").exists() {
                eprintln!("generating {} ...", root.display());
                synth::generate(&root, &Spec::new(a.version, a.cgroups, a.processes))
                    .expect("generate");
            }
            (tag, root)
        }
    };
    std::fs::create_dir_all(&a.dir).expect("bench dir");
    let cfg = memgap_collector::Config {
        root: root.clone(),
        kmsg: None,
        jobs: a.jobs,
        ..Default::default()
    };

    // One collection to learn the file list and the content.
    let (manifest, gz) = memgap_collector::collect(&cfg, Vec::new()).expect("collect");
    let (paths, content) = files_of(&gz, &root);
    let content_gz = gzip(&content);

    let mut floor = Vec::new();
    let mut floor_list = Vec::new();
    let mut coll = Vec::new();
    for _ in 0..a.runs {
        floor.push(read_floor(&paths, a.jobs, false));
        floor_list.push(read_floor(&paths, a.jobs, true));
        let t = Instant::now();
        let out = std::fs::File::create(a.dir.join("bench.tar.gz")).unwrap();
        memgap_collector::collect(&cfg, std::io::BufWriter::new(out)).expect("collect");
        coll.push(t.elapsed());
    }
    let (f, fl, c) = (
        median(&mut floor),
        median(&mut floor_list),
        median(&mut coll),
    );
    let rss = peak_rss_of_binary(&root, a.jobs);

    println!(
        "node: {tag} ({} cgroups, {} processes, {} files, {} bytes of content)",
        manifest.counts.cgroups,
        manifest.counts.processes,
        paths.len(),
        content.len()
    );
    println!("jobs: {}, runs: {}", a.jobs, a.runs);
    println!(
        "floor A (read the same files):        {:>8.1} ms (median)",
        ms(f)
    );
    println!(
        "floor B (list their dirs, read them): {:>8.1} ms (median)",
        ms(fl)
    );
    println!(
        "collector (library, to a file):       {:>8.1} ms (median)",
        ms(c)
    );
    println!(
        "ratio collector / floor A:            {:>8.2}",
        ms(c) / ms(f)
    );
    println!(
        "ratio collector / floor B:            {:>8.2}",
        ms(c) / ms(fl)
    );
    println!("bundle .tar.gz:               {:>8} bytes", gz.len());
    println!(
        "gzip -6 of the content alone: {:>8} bytes",
        content_gz.len()
    );
    println!(
        "ratio bundle / gzip(content): {:>8.2}",
        gz.len() as f64 / content_gz.len() as f64
    );
    match rss {
        Some(kb) => println!(
            "peak RSS of memgap-collect:   {:>8.1} MiB",
            kb as f64 / 1024.0
        ),
        None => println!("peak RSS: needs the release binary and GNU time (/usr/bin/time)"),
    }
}

/// Real paths of every stored kernel file, and their concatenated content.
fn files_of(gz: &[u8], root: &Path) -> (Vec<PathBuf>, Vec<u8>) {
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut tar)
        .unwrap();
    let mut paths = Vec::new();
    let mut content = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let rel = path.split_once('/').unwrap().1.to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if rel.starts_with("memgap/") || rel == "manifest.json" {
            continue;
        }
        if let Some(dir) = rel.strip_suffix(&format!("/{}", pack::PACK_NAME)) {
            for item in pack::entries(&data) {
                let (name, c) = item.unwrap();
                paths.push(root.join(dir).join(name));
                content.extend_from_slice(c);
            }
        } else {
            paths.push(root.join(&rel));
            content.extend_from_slice(&data);
        }
    }
    (paths, content)
}

/// Reads every file once with `jobs` threads, each directory's files through one directory
/// handle (`openat`), a reused buffer, and nothing else: the cheapest way measured here.
fn read_floor(paths: &[PathBuf], jobs: usize, list_dirs: bool) -> Duration {
    // Group by directory once, outside the timing.
    let mut dirs: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for p in paths {
        let (dir, name) = (
            p.parent().unwrap().to_path_buf(),
            p.file_name().unwrap().to_string_lossy().into_owned(),
        );
        match dirs.last_mut() {
            Some((d, names)) if *d == dir => names.push(name),
            _ => dirs.push((dir, vec![name])),
        }
    }
    let t = Instant::now();
    std::thread::scope(|s| {
        for j in 0..jobs {
            let dirs = &dirs;
            s.spawn(move || {
                let mut buf = Vec::with_capacity(64 << 10);
                for (dir, names) in dirs.iter().skip(j).step_by(jobs) {
                    if list_dirs {
                        // Finding a cgroup's files and children takes one getdents pass.
                        if let Ok(rd) = std::fs::read_dir(dir) {
                            rd.for_each(drop);
                        }
                    }
                    if let Ok(d) = memgap_collector::read::Dir::open(dir) {
                        for n in names {
                            let _ = d.read(n, &mut buf, u64::MAX);
                        }
                    }
                }
            });
        }
    });
    t.elapsed()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the release binary on the same root under GNU time and returns its peak RSS in KiB
/// (`getrusage` of children would count the forked benchmark's own pages).
fn peak_rss_of_binary(root: &Path, jobs: usize) -> Option<i64> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("memgap-collect");
    if !bin.exists() || !Path::new("/usr/bin/time").exists() {
        return None;
    }
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(bin)
        .args([
            "--no-kmsg",
            "-q",
            "-o",
            "/dev/null",
            "--jobs",
            &jobs.to_string(),
            "--root",
        ])
        .arg(root)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}
