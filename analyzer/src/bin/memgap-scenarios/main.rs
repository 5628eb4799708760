//! `memgap-scenarios`: reproduces each cause memgap diagnoses on the real kernel, inside scratch
//! memory cgroups it creates under `<memory mount>/memgap-scenarios-<pid>/`, with bounded sizes
//! and memory limits; collects a bundle with the real collector; writes the expected findings
//! beside it; checks the analyzer's diagnosis; and removes everything it created (processes,
//! SysV segments, files, cgroups), also when a scenario fails.
//!
//! ```text
//! sudo memgap-scenarios run -o samples/            # all scenarios, bundles kept
//! sudo memgap-scenarios run --only oom-kill        # one, into a temporary directory
//! memgap-scenarios list
//! ```
//!
//! It needs root and a memory cgroup controller (v1, or v2 with `memory` enabled for the root's
//! children). Elsewhere it says why and exits 0, or 3 with `--require`.

mod scratch;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use memgap_analyzer::expect::Expectation;
use memgap_analyzer::{reader, rules::RuleSet, Analysis};
use scratch::Scratch;

const MIB: u64 = 1 << 20;

#[derive(Parser)]
#[command(
    version,
    about = "Reproduce memory causes in scratch cgroups and check memgap's diagnosis"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios: create, collect, check, clean up
    Run {
        /// Only these scenarios (see `list`)
        #[arg(long)]
        only: Vec<String>,
        /// Keep the bundles and expectations here (default: a temporary directory)
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Fail (exit 3) when this host cannot run scenarios, instead of saying why and exiting 0
        #[arg(long)]
        require: bool,
    },
    /// List the scenarios
    List,
    #[command(hide = true)]
    Worker { args: Vec<String> },
}

/// The memory cgroup hierarchy scenarios run in.
struct Host {
    mount: PathBuf,
    v2: bool,
}

impl Host {
    fn detect() -> Result<Host, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: creating memory cgroups needs root".into());
        }
        let v1 = Path::new("/sys/fs/cgroup/memory");
        if v1.join("memory.stat").is_file() {
            return Ok(Host {
                mount: v1.into(),
                v2: false,
            });
        }
        let v2 = Path::new("/sys/fs/cgroup");
        let has = |f: &str| {
            std::fs::read_to_string(v2.join(f))
                .is_ok_and(|t| t.split_whitespace().any(|c| c == "memory"))
        };
        if has("cgroup.controllers") && has("cgroup.subtree_control") {
            return Ok(Host {
                mount: v2.into(),
                v2: true,
            });
        }
        Err(
            "no memory cgroup controller: neither /sys/fs/cgroup/memory (v1) nor \
             `memory` in /sys/fs/cgroup/cgroup.subtree_control (v2)"
                .into(),
        )
    }

    fn limit(&self, cg: &Path, bytes: u64) -> std::io::Result<()> {
        let f = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(cg.join(f), format!("{bytes}\n"))
    }

    fn label(&self) -> &'static str {
        if self.v2 {
            "v2"
        } else {
            "v1"
        }
    }
}

/// What a scenario needs: its parent cgroup, a work directory on disk, a unique name stem.
struct Ctx<'a> {
    host: &'a Host,
    parent: PathBuf,
    work: PathBuf,
    stem: String,
}

impl Ctx<'_> {
    /// The cgroup path as the model shows it (relative to the hierarchy's mount).
    fn rel(&self, cg: &Path) -> String {
        format!("/{}", cg.strip_prefix(&self.host.mount).unwrap().display())
    }

    /// A limited scratch cgroup for one scenario.
    fn cgroup(&self, s: &mut Scratch, name: &str, limit: u64) -> anyhow::Result<PathBuf> {
        let cg = s.cgroup(&self.parent.join(name))?;
        self.host.limit(&cg, limit)?;
        Ok(cg)
    }

    /// A file on disk, not in the page cache.
    fn uncached(&self, s: &mut Scratch, name: &str, bytes: u64) -> anyhow::Result<PathBuf> {
        let p = s.file(&self.work.join(name));
        worker::uncached_file(&p, bytes as usize)
            .with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }
}

/// A scenario's expectation before the subject path is known.
struct Expect {
    scenario: &'static str,
    subject: String,
    rule: &'static str,
    primary: bool,
    bytes: Option<u64>,
    measure: &'static str,
    tolerance: f64,
    absent: &'static [&'static str],
}

impl Expect {
    fn new(scenario: &'static str, subject: String, rule: &'static str) -> Expect {
        Expect {
            scenario,
            subject,
            rule,
            primary: false,
            bytes: None,
            measure: "bytes",
            tolerance: 0.15,
            absent: &[],
        }
    }
    fn primary(mut self) -> Self {
        self.primary = true;
        self
    }
    fn bytes(mut self, b: u64, measure: &'static str) -> Self {
        self.bytes = Some(b);
        self.measure = measure;
        self
    }
    fn absent(mut self, r: &'static [&'static str]) -> Self {
        self.absent = r;
        self
    }
    fn done(self) -> Expectation {
        Expectation {
            scenario: self.scenario.into(),
            subject: self.subject,
            rule: self.rule.into(),
            primary: self.primary,
            bytes: self.bytes,
            measure: self.measure.into(),
            tolerance: self.tolerance,
            absent: self.absent.iter().map(|s| s.to_string()).collect(),
        }
    }
}

type Setup = fn(&Ctx, &mut Scratch) -> anyhow::Result<Expectation>;

const SCENARIOS: &[(&str, &str, Setup)] = &[
    (
        "page-cache",
        "a 96 MiB file read once: inactive page cache",
        page_cache,
    ),
    (
        "page-cache-active",
        "the same file read twice: active page cache",
        page_cache_active,
    ),
    (
        "tmpfs",
        "64 MiB written to a file on /dev/shm (tmpfs)",
        tmpfs,
    ),
    (
        "sysv-left-behind",
        "a 48 MiB SysV segment left by a process that exited",
        sysv,
    ),
    (
        "shared-mapping",
        "an 80 MiB file mapped shared: RSS above the memcg's rss",
        shared_mapping,
    ),
    (
        "negative-dentries",
        "400,000 lookups of missing files: dentry slab",
        negative_dentries,
    ),
    ("mlock", "32 MiB locked with mlock: unevictable", mlock),
    (
        "dying-cgroups",
        "1,100 cgroups that held page cache, removed",
        dying,
    ),
    (
        "hierarchy-limit",
        "a 256 MiB limit under a 64 MiB parent",
        hierarchy_limit,
    ),
    (
        "oom-kill",
        "64 MiB allocated under a 32 MiB limit",
        oom_kill,
    ),
    (
        "healthy-anon",
        "96 MiB of plain anonymous memory",
        healthy_anon,
    ),
    (
        "dirty",
        "96 MiB written without sync: dirty page cache",
        dirty,
    ),
    (
        "socket-buffers",
        "TCP data on 8 connections a reader never reads",
        socket_buffers,
    ),
    (
        "thp",
        "64 MiB of anonymous memory in transparent huge pages",
        thp,
    ),
];

/// Absent from a healthy container: the kernel-side causes.
const KERNEL_SIDE: &[&str] = &[
    "page-cache-reclaimable",
    "page-cache-active",
    "dirty-page-cache",
    "shmem-tmpfs",
    "shmem-without-processes",
    "kernel-memory-v1",
    "kernel-slab",
    "kernel-other",
    "socket-buffers",
    "accounting-residue",
    "parent-charges",
];

fn ready(w: &mut scratch::Worker, what: &str) -> anyhow::Result<u64> {
    w.go()
        .with_context(|| format!("the {what} worker died before it was ready"))
}

fn page_cache(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let f = c.uncached(s, "cache.dat", 96 * MIB)?;
    let cg = c.cgroup(s, "page-cache", 512 * MIB)?;
    let n = ready(s.worker(&cg, &["read", &f.to_string_lossy()])?, "read")?;
    Ok(
        Expect::new("page-cache", c.rel(&cg), "page-cache-reclaimable")
            .primary()
            .bytes(n, "bytes")
            .done(),
    )
}

fn page_cache_active(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let f = c.uncached(s, "hot.dat", 96 * MIB)?;
    let cg = c.cgroup(s, "page-cache-active", 512 * MIB)?;
    let n = ready(
        s.worker(&cg, &["read-twice", &f.to_string_lossy()])?,
        "read",
    )?;
    Ok(
        Expect::new("page-cache-active", c.rel(&cg), "page-cache-active")
            .primary()
            .bytes(n, "bytes")
            .done(),
    )
}

fn tmpfs(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let f = s.file(Path::new(&format!("/dev/shm/{}-tmpfs.dat", c.stem)));
    let cg = c.cgroup(s, "tmpfs", 256 * MIB)?;
    let n = ready(
        s.worker(
            &cg,
            &["write-file", &f.to_string_lossy(), &(64 * MIB).to_string()],
        )?,
        "tmpfs",
    )?;
    Ok(Expect::new("tmpfs", c.rel(&cg), "shmem-tmpfs")
        .primary()
        .bytes(n, "bytes")
        .done())
}

fn sysv(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let cg = c.cgroup(s, "sysv-left-behind", 256 * MIB)?;
    let w = s.worker(&cg, &["sysv", &(48 * MIB).to_string()])?;
    let id = ready(w, "sysv")?;
    w.wait();
    s.segment(id as i32);
    Ok(
        Expect::new("sysv-left-behind", c.rel(&cg), "shmem-without-processes")
            .primary()
            .bytes(48 * MIB, "bytes")
            .done(),
    )
}

fn shared_mapping(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let f = c.uncached(s, "mapped.dat", 80 * MIB)?;
    let cg = c.cgroup(s, "shared-mapping", 512 * MIB)?;
    let n = ready(
        s.worker(&cg, &["map-shared", &f.to_string_lossy()])?,
        "mapping",
    )?;
    // The worker's own binary and libraries are mapped files too: a few MiB within tolerance.
    Ok(
        Expect::new("shared-mapping", c.rel(&cg), "mapped-files-in-rss")
            .bytes(n, "evidence:rss_file_bytes")
            .done(),
    )
}

fn slab_objsize(cache: &str) -> Option<u64> {
    let t = std::fs::read_to_string("/proc/slabinfo").ok()?;
    t.lines()
        .find(|l| l.split_whitespace().next() == Some(cache))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
}

fn negative_dentries(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let dir = s.dir(&c.work.join("lookups"))?;
    let cg = c.cgroup(s, "negative-dentries", 512 * MIB)?;
    let n = 400_000u64;
    ready(
        s.worker(
            &cg,
            &["negative-dentries", &dir.to_string_lossy(), &n.to_string()],
        )?,
        "lookup",
    )?;
    let size = slab_objsize("dentry").unwrap_or(192);
    let (rule, measure) = if c.host.v2 {
        ("kernel-slab", "bytes")
    } else {
        ("kernel-memory-v1", "bytes")
    };
    Ok(Expect::new("negative-dentries", c.rel(&cg), rule)
        .primary()
        .bytes(n * size, measure)
        .done())
}

fn mlock(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let cg = c.cgroup(s, "mlock", 256 * MIB)?;
    let n = ready(s.worker(&cg, &["mlock", &(32 * MIB).to_string()])?, "mlock")?;
    Ok(Expect::new("mlock", c.rel(&cg), "unevictable-mlock")
        .primary()
        .bytes(n, "bytes")
        .done())
}

fn dying(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let count = 1100u64;
    // Pages 8 apart, read without readahead: each cgroup is charged for its own page.
    let f = c.uncached(s, "dying.dat", count * 8 * 4096 / MIB * MIB + MIB)?;
    let home = c.cgroup(s, "dying-home", 64 * MIB)?;
    let w = s.worker(&home, &["read-chunks", &f.to_string_lossy()])?;
    let pid = w.pid();
    w.send("go");
    w.read_line().context("the reader did not start")?;
    let mut made = Vec::new();
    for i in 0..count {
        let cg = s.cgroup(&c.parent.join(format!("dying-{i:04}")))?;
        scratch::move_to(&cg, pid)?;
        let w = s.last_worker();
        w.send(&(i * 8).to_string());
        w.read_line().context("the reader stopped")?;
        made.push(cg);
    }
    scratch::move_to(&home, pid)?;
    // Empty now; their page cache keeps them alive in the kernel after removal.
    for cg in &made {
        s.remove_cgroup(cg)?;
    }
    Ok(Expect::new("dying-cgroups", "node".into(), "dying-cgroups").done())
}

fn hierarchy_limit(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let outer = c.cgroup(s, "hierarchy-limit", 64 * MIB)?;
    let inner = s.cgroup(&outer.join("child"))?;
    c.host.limit(&inner, 256 * MIB)?;
    ready(
        s.worker(&inner, &["anon", &(16 * MIB).to_string()])?,
        "anon",
    )?;
    Ok(Expect::new("hierarchy-limit", c.rel(&inner), "hierarchy-limit").done())
}

fn oom_kill(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let cg = c.cgroup(s, "oom-kill", 32 * MIB)?;
    let w = s.worker(&cg, &["oom", &(64 * MIB).to_string()])?;
    if w.go().is_some() {
        bail!("the worker allocated 64 MiB under a 32 MiB limit and was not killed");
    }
    let status = w.wait();
    let killed = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
    if killed != Some(libc::SIGKILL) {
        bail!("the worker ended without SIGKILL: {status:?}");
    }
    // Let the kernel log the report before the collector reads /dev/kmsg.
    std::thread::sleep(std::time::Duration::from_millis(200));
    Ok(Expect::new("oom-kill", c.rel(&cg), "oom-killed").done())
}

fn healthy_anon(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let cg = c.cgroup(s, "healthy-anon", 256 * MIB)?;
    let n = ready(s.worker(&cg, &["anon", &(96 * MIB).to_string()])?, "anon")?;
    Ok(Expect::new("healthy-anon", c.rel(&cg), "anon-dominates")
        .primary()
        .bytes(n, "bytes")
        .absent(KERNEL_SIDE)
        .done())
}

fn dirty(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let f = s.file(&c.work.join("dirty.dat"));
    let cg = c.cgroup(s, "dirty", 512 * MIB)?;
    let n = ready(
        s.worker(
            &cg,
            &["write-file", &f.to_string_lossy(), &(96 * MIB).to_string()],
        )?,
        "writer",
    )?;
    Ok(Expect::new("dirty", c.rel(&cg), "dirty-page-cache")
        .bytes(n, "bytes")
        .done())
}

fn socket_buffers(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let cg = c.cgroup(s, "socket-buffers", 512 * MIB)?;
    if !c.host.v2 {
        // v1 charges TCP buffers only once a TCP limit is set on the cgroup.
        std::fs::write(
            cg.join("memory.kmem.tcp.limit_in_bytes"),
            format!("{}\n", 256 * MIB),
        )?;
    }
    let n = ready(
        s.worker(&cg, &["sockets", "8", &(16 * MIB).to_string()])?,
        "sockets",
    )?;
    Ok(Expect::new("socket-buffers", c.rel(&cg), "socket-buffers")
        .primary()
        .bytes(n, "bytes")
        .done())
}

fn thp(c: &Ctx, s: &mut Scratch) -> anyhow::Result<Expectation> {
    let mode =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if mode.contains("[never]") || mode.is_empty() {
        bail!(
            "transparent huge pages are not available here ({})",
            mode.trim()
        );
    }
    let cg = c.cgroup(s, "thp", 256 * MIB)?;
    let n = ready(s.worker(&cg, &["thp", &(64 * MIB).to_string()])?, "thp")?;
    // With THP `always` the kernel chose huge pages (thp-inflation); with `madvise` the
    // program asked for them: the anonymous memory is the program's.
    let e = if mode.contains("[always]") {
        Expect::new("thp", c.rel(&cg), "thp-inflation").bytes(n, "bytes")
    } else {
        Expect::new("thp", c.rel(&cg), "anon-dominates")
            .bytes(n, "part:anon_thp")
            .absent(&["thp-inflation"])
    };
    Ok(e.primary().done())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Worker { args } => {
            worker::main(&args);
            ExitCode::SUCCESS
        }
        Cmd::List => {
            for (name, what, _) in SCENARIOS {
                println!("{name:<20} {what}");
            }
            ExitCode::SUCCESS
        }
        Cmd::Run {
            only,
            output,
            require,
        } => match run(&only, output, require) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("memgap-scenarios: error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn run(only: &[String], output: Option<PathBuf>, require: bool) -> anyhow::Result<ExitCode> {
    for o in only {
        if !SCENARIOS.iter().any(|(n, _, _)| n == o) {
            bail!("unknown scenario {o:?} (see `memgap-scenarios list`)");
        }
    }
    let host = match Host::detect() {
        Ok(h) => h,
        Err(why) => {
            eprintln!("memgap-scenarios: cannot run here: {why}");
            return Ok(if require {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            });
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let tmp;
    let out = match output {
        Some(o) => {
            std::fs::create_dir_all(&o)?;
            o
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let stem = format!("memgap-scenarios-{}", std::process::id());
    let mut top = Scratch::default();
    let parent = top.cgroup(&host.mount.join(&stem))?;
    if host.v2 {
        std::fs::write(parent.join("cgroup.subtree_control"), "+memory\n")?;
    }
    let work = top.dir(&std::env::temp_dir().join(&stem))?;
    let ctx = Ctx {
        host: &host,
        parent,
        work,
        stem,
    };
    let rules = RuleSet::builtin().map_err(|e| anyhow::anyhow!("rules: {e:?}"))?;
    let mut failed = 0;
    for (name, what, setup) in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        if stop.load(Ordering::Relaxed) {
            eprintln!("memgap-scenarios: interrupted; cleaning up");
            failed += 1;
            break;
        }
        let bundle = out.join(format!("{}-{name}.tar.gz", host.label()));
        let result = (|| -> anyhow::Result<Expectation> {
            let mut s = Scratch::default();
            let exp = setup(&ctx, &mut s)?;
            // The kernel log is a ring buffer that outlives scenarios: only the OOM scenario
            // reads it, so the other samples are not about an earlier run's kill.
            let cfg = memgap_collector::Config {
                redact: true,
                kmsg: (*name == "oom-kill").then(|| PathBuf::from("/dev/kmsg")),
                ..Default::default()
            };
            let file = std::fs::File::create(&bundle)?;
            memgap_collector::collect(&cfg, std::io::BufWriter::new(file))?;
            drop(s);
            Ok(exp)
        })();
        match result {
            Ok(exp) => {
                let b = reader::read(&bundle, &reader::Limits::default())?;
                let a = Analysis::of(b, &rules);
                std::fs::write(
                    out.join(format!("{}-{name}.expect.toml", host.label())),
                    toml::to_string(&exp)?,
                )?;
                match exp.check(&a) {
                    Ok(()) => println!("PASS {name:<20} {what}"),
                    Err(e) => {
                        failed += 1;
                        println!("FAIL {name:<20} {e}");
                    }
                }
            }
            Err(e) if e.to_string().contains("not available here") => {
                let _ = std::fs::remove_file(&bundle);
                println!("SKIP {name:<20} {e:#}");
            }
            Err(e) => {
                let _ = std::fs::remove_file(&bundle);
                failed += 1;
                println!("FAIL {name:<20} {e:#}");
            }
        }
    }
    drop(top);
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
