use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use memgap_collector::{collect, output, Config};

/// Collect a node's kernel memory files into one memgap bundle (.tar.gz), for `memgap` to
/// explain offline.
///
/// Read-only towards the kernel: it opens nothing under /proc or /sys for writing, never reads
/// /proc/PID/environ, and abandons reads that hang. Files it cannot read are listed in the
/// bundle's manifest.json.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "\
Examples:
  memgap-collect                              # this node, into ./memgap-<host>-<time>.tar.gz
  memgap-collect --root /host -o /out/b.tar.gz   # from a pod with the host mounted at /host
  memgap-collect --samples 6 --interval 10s     # six snapshots, to see growth
  memgap-collect --redact -o - | ssh support 'cat > node.tar.gz'"
)]
struct Cli {
    /// Output file; `-` for standard output. Default: memgap-<host>-<UTC time>.tar.gz
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Read the host's /proc and /sys under DIR (e.g. /host in a privileged pod)
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Reader threads; 1 keeps a struggling node's CPUs for its workloads
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Number of snapshots to take
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    samples: u32,
    /// Time between snapshots (e.g. 30s, 5m)
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Abandon a read that has not returned after this long (e.g. 5s, 500ms)
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    read_timeout: Duration,
    /// Skip files larger than this many bytes
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    max_file_size: u64,
    /// Stop storing files once the bundle's content reaches this many bytes
    #[arg(long, default_value_t = 2 << 30, value_name = "BYTES")]
    max_total_size: u64,
    /// Also read v1 memory.kmem.slabinfo (it stalled kernel workers on hosts with many containers)
    #[arg(long)]
    kmem_slabinfo: bool,
    /// Replace the hostname and command-line arguments with stable hashes everywhere
    #[arg(long)]
    redact: bool,
    /// Kernel ring buffer to take OOM reports from
    #[arg(long, value_name = "PATH", default_value = "/dev/kmsg")]
    kmsg: PathBuf,
    /// Do not read the kernel ring buffer
    #[arg(long)]
    no_kmsg: bool,
    /// gzip level (0-9)
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    level: u32,
    /// Print nothing but errors
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memgap-collect: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = Config {
        root: cli.root.clone(),
        kmsg: (!cli.no_kmsg).then(|| cli.kmsg.clone()),
        jobs: cli.jobs as usize,
        samples: cli.samples,
        interval: cli.interval,
        read_timeout: cli.read_timeout,
        max_file_bytes: cli.max_file_size,
        max_total_bytes: cli.max_total_size,
        kmem_slabinfo: cli.kmem_slabinfo,
        redact: cli.redact,
        compression: cli.level,
    };
    if !cfg.root.join("proc").is_dir() {
        anyhow::bail!(
            "{} has no proc/ directory: is --root right?",
            cfg.root.display()
        );
    }
    output::install_signal_cleanup().context("installing signal handlers")?;

    if cli.output.as_deref() == Some(std::path::Path::new("-")) {
        let stdout = std::io::stdout().lock();
        let (m, _) = collect(&cfg, stdout).context("writing the bundle to standard output")?;
        summary(&cli, &m, "standard output");
        return Ok(());
    }
    if let Some(special) = cli.output.as_deref().filter(|p| output::is_special(p)) {
        // A device or FIFO (`/dev/null`, a pipe): written in place, never renamed over.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(special)
            .with_context(|| format!("opening {}", special.display()))?;
        let (m, _) =
            collect(&cfg, file).with_context(|| format!("writing {}", special.display()))?;
        summary(&cli, &m, &special.display().to_string());
        return Ok(());
    }
    let dest = cli.output.clone().unwrap_or_else(|| {
        let host = memgap_collector::collect::probe_host(&cfg.root);
        let name = if cfg.redact {
            memgap_collector::redact::Redactor::new(&host.hostname).hostname(&host.hostname)
        } else {
            host.hostname
        };
        PathBuf::from(format!(
            "{}.tar.gz",
            memgap_collector::collect::bundle_stem(&name, SystemTime::now())
        ))
    });
    let (pending, file) = output::Pending::create(&dest)
        .with_context(|| format!("creating a temporary file beside {}", dest.display()))?;
    let (m, file) = collect(&cfg, file).with_context(|| format!("writing {}", dest.display()))?;
    let dest = pending
        .commit(file)
        .with_context(|| format!("finishing {}", dest.display()))?;
    summary(&cli, &m, &dest.display().to_string());
    Ok(())
}

fn summary(cli: &Cli, m: &memgap_collector::bundle::Manifest, to: &str) {
    if cli.quiet {
        return;
    }
    let c = &m.counts;
    eprintln!(
        "memgap-collect: wrote {to}: {} cgroups, {} processes, {} files ({} KiB) in {} ms; cgroup mode {:?}; {} not collected{}",
        c.cgroups,
        c.processes,
        c.files,
        c.bytes / 1024,
        m.duration_ms,
        m.cgroup_mode,
        c.missed,
        if c.missed > 0 { " (listed in manifest.json)" } else { "" }
    );
}
