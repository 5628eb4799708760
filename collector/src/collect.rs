//! One collection: walk the node, read its memory files in parallel, stream them into the bundle.
//!
//! Threads: one producer lists the work (node files, cgroup directories, processes); `jobs`
//! workers read files and build entries; the caller's thread writes the archive; a watchdog
//! abandons reads that hang (a `smaps_rollup` stuck behind a contended mmap lock cannot be
//! interrupted, so its thread is left behind and replaced). Channels are bounded, so memory
//! does not grow with the size of the node.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, Receiver, Sender};
use thiserror::Error;

use crate::bundle::members::{self, Members};
use crate::bundle::{
    self, pack, CgroupMount, Counts, Manifest, MissReason, Missed, Options, Sample,
};
use crate::discover::{self, Discovery};
use crate::read::{read_capped, ReadError};
use crate::redact::Redactor;
use crate::sources;

/// Buffer between tar and the compressor: without it every small tar write reaches the
/// compressor on its own and zlib-rs ran 2-3x slower.
const TAR_BUFFER: usize = 128 << 10;
/// Tasks per message to the workers, and the most result bytes a worker holds before sending:
/// handing work over one item at a time woke a parked thread per item and cost more than the
/// reading itself on a 5,000-cgroup node.
const TASK_BATCH: usize = 32;
const RESULT_BATCH_BYTES: usize = 64 << 10;
/// Deeper cgroups are not walked (the kernel's own default limit is far above any real layout).
const MAX_CGROUP_DEPTH: usize = 256;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the host's `/proc` and `/sys` are (`/` on the node itself).
    pub root: PathBuf,
    /// The kernel ring buffer to take OOM reports from; `None` skips it.
    pub kmsg: Option<PathBuf>,
    pub jobs: usize,
    pub samples: u32,
    pub interval: Duration,
    pub read_timeout: Duration,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub kmem_slabinfo: bool,
    pub redact: bool,
    /// gzip level, 0-9.
    pub compression: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/"),
            kmsg: Some(PathBuf::from("/dev/kmsg")),
            jobs: 1,
            samples: 1,
            interval: Duration::from_secs(30),
            read_timeout: Duration::from_secs(5),
            max_file_bytes: 16 << 20,
            max_total_bytes: 2 << 30,
            kmem_slabinfo: false,
            redact: false,
            compression: 6,
        }
    }
}

#[derive(Debug, Error)]
pub enum CollectError {
    #[error("writing the bundle: {0}")]
    Output(#[from] std::io::Error),
}

/// Name and kernel of the node, read before anything else (the output name needs them).
#[derive(Debug, Clone)]
pub struct Host {
    pub hostname: String,
    pub kernel_release: String,
}

pub fn probe_host(root: &Path) -> Host {
    let read = |p: &str| {
        std::fs::read_to_string(root.join(p))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut hostname = read("proc/sys/kernel/hostname");
    if hostname.is_empty() {
        hostname = "unknown-host".into();
    }
    Host {
        hostname,
        kernel_release: read("proc/sys/kernel/osrelease"),
    }
}

/// The bundle's top folder and default file stem: `memgap-<host>-<UTC time>`.
pub fn bundle_stem(hostname: &str, at: SystemTime) -> String {
    let t = humantime::format_rfc3339_seconds(at).to_string();
    let t: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let host: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("memgap-{host}-{t}")
}

/// Collects the node described by `cfg` into a `.tar.gz` written to `out`, and returns the
/// manifest it wrote. Only a failure to write `out` is an error; everything that could not be
/// read is listed in the manifest.
pub fn collect<W: Write>(cfg: &Config, out: W) -> Result<(Manifest, W), CollectError> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let host = probe_host(&cfg.root);
    let redactor = if cfg.redact {
        Redactor::new(&host.hostname)
    } else {
        Redactor::off()
    };
    let hostname = redactor.hostname(&host.hostname);
    let top = bundle_stem(&hostname, started);
    let disc = discover::discover(&cfg.root);

    let mut sink = Sink::new(out, &top, cfg, started);

    let mut samples = Vec::new();
    let mut counts = Counts::default();
    let samples_n = cfg.samples.max(1);
    for index in 0..samples_n {
        let sample_start = Instant::now();
        let s = collect_sample(cfg, &disc, &redactor, index, samples_n, &mut sink)?;
        counts.add(&s.counts);
        samples.push(s);
        if index + 1 < samples_n {
            std::thread::sleep(cfg.interval.saturating_sub(sample_start.elapsed()));
        }
    }

    if let Some(kmsg) = &cfg.kmsg {
        match crate::kmsg::read_oom_reports(kmsg) {
            Ok(mut text) => {
                redactor.text(&mut text);
                sink.put(bundle::OOM_FILE, &text, 0)?;
            }
            Err(e) => sink.miss(kmsg.display().to_string(), crate::read::classify(e), 0),
        }
    }

    let finished = SystemTime::now();
    counts.missed = sink.missed.len() as u64 + sink.missed_not_listed;
    let manifest = Manifest {
        format_version: bundle::FORMAT_VERSION,
        collector_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname,
        kernel_release: host.kernel_release,
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        finished_at: humantime::format_rfc3339_seconds(finished).to_string(),
        duration_ms: clock.elapsed().as_millis() as u64,
        cgroup_mode: disc.mode,
        cgroup_mounts: disc.cgroups.clone(),
        root: cfg.root.display().to_string(),
        options: Options {
            jobs: cfg.jobs,
            samples: samples_n,
            interval_ms: cfg.interval.as_millis() as u64,
            read_timeout_ms: cfg.read_timeout.as_millis() as u64,
            max_file_bytes: cfg.max_file_bytes,
            max_total_bytes: cfg.max_total_bytes,
            kmem_slabinfo: cfg.kmem_slabinfo,
        },
        redacted: cfg.redact,
        samples,
        counts,
        missed: std::mem::take(&mut sink.missed),
        missed_not_listed: sink.missed_not_listed,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    sink.append_raw(bundle::MANIFEST, &json)?;
    Ok((manifest, sink.finish()?))
}

/// The archive being written, with the size cap and the missed-file list.
struct Sink<W: Write> {
    tar: tar::Builder<std::io::BufWriter<Members<W>>>,
    top: String,
    mtime: u64,
    total: u64,
    max_total: u64,
    missed: Vec<Missed>,
    missed_not_listed: u64,
}

impl<W: Write> Sink<W> {
    fn new(out: W, top: &str, cfg: &Config, at: SystemTime) -> Self {
        let gz = Members::new(out, flate2::Compression::new(cfg.compression.min(9)));
        let w = std::io::BufWriter::with_capacity(TAR_BUFFER, gz);
        let mtime = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Sink {
            tar: tar::Builder::new(w),
            top: top.to_string(),
            mtime,
            total: 0,
            max_total: cfg.max_total_bytes,
            missed: Vec::new(),
            missed_not_listed: 0,
        }
    }

    /// Stores `data` at `rel` (below the top folder) unless the size cap is reached.
    fn put(&mut self, rel: &str, data: &[u8], sample: u32) -> std::io::Result<bool> {
        if self.total + data.len() as u64 > self.max_total {
            self.record(Missed {
                path: format!("/{rel}"),
                reason: MissReason::TotalCap,
                detail: format!("{} bytes", data.len()),
                sample,
            });
            return Ok(false);
        }
        self.append_raw(rel, data)?;
        Ok(true)
    }

    fn append_raw(&mut self, rel: &str, data: &[u8]) -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(self.mtime);
        h.set_entry_type(tar::EntryType::Regular);
        self.total += data.len() as u64;
        self.tar
            .append_data(&mut h, format!("{}/{rel}", self.top), data)?;
        // Members end between entries, so each holds whole entries.
        let w = self.tar.get_mut();
        if w.buffer().len() as u64 + w.get_ref().len() >= members::MEMBER_BYTES {
            w.flush()?;
            w.get_mut().end_member()?;
        }
        Ok(())
    }

    fn miss(&mut self, path: String, e: ReadError, sample: u32) {
        let (reason, detail) = e.into_reason();
        self.record(Missed {
            path,
            reason,
            detail,
            sample,
        });
    }

    fn record(&mut self, m: Missed) {
        if self.missed.len() < bundle::MAX_MISSED_RECORDS {
            self.missed.push(m);
        } else {
            self.missed_not_listed += 1;
        }
    }

    /// Ends the archive and the gzip stream explicitly, so that a write error (disk full)
    /// surfaces here instead of being lost in a `Drop`.
    fn finish(self) -> std::io::Result<W> {
        let buffered = self.tar.into_inner()?;
        let gz = buffered.into_inner().map_err(|e| e.into_error())?;
        gz.finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Node,
    Cgroup,
    Process,
}

enum Task {
    /// A node file (`dir/name`, host path), stored verbatim.
    File(&'static str, &'static str),
    /// A cgroup directory (host path) and the names of its files to pack.
    Dir(String, Vec<&'static str>),
    Process(String),
}

/// A tar entry to write.
struct Entry {
    path: String,
    data: Vec<u8>,
    kind: Kind,
    files: u64,
    bytes: u64,
}

/// Everything one task produced. One message per task keeps channel traffic, and the
/// thread wake-ups it causes, low.
#[derive(Default)]
struct Outcome {
    entry: Option<Entry>,
    missed: Vec<Missed>,
    vanished: Option<Kind>,
}

enum Msg {
    /// Outcomes of finished tasks (or of one the watchdog abandoned).
    Tasks(Vec<Outcome>),
    /// Problems met while listing the work (not a task).
    Walk(Outcome),
    /// The producer has listed everything: this many tasks.
    Produced(u64),
}

/// What the watchdog needs to know of a worker to abandon its current read.
struct Slot {
    /// 0 when not inside a read; otherwise 1 + the read's start in ms since `Ctx::clock`.
    reading_since: AtomicU64,
    job: Mutex<Job>,
}

#[derive(Default)]
struct Job {
    /// Host directory of the task (no leading `/`) and the file being read in it.
    dir: String,
    current: &'static str,
    out: Outcome,
    /// Finished outcomes not yet sent, and their bytes.
    done: Vec<Outcome>,
    done_bytes: usize,
    /// Tasks of the current batch not yet started (a replacement worker takes them over).
    pending: Vec<Task>,
}

struct Ctx {
    cfg: Config,
    redactor: Redactor,
    sample: u32,
    prefix: String,
    clock: Instant,
    /// Dropped (by the writer) when the sample is complete, waking the watchdog to exit.
    stop: Mutex<Option<Sender<()>>>,
    slots: Mutex<Vec<Arc<Slot>>>,
}

impl Ctx {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn missed(&self, path: String, e: ReadError) -> Missed {
        let (reason, detail) = e.into_reason();
        Missed {
            path: self.redactor.path(&path),
            reason,
            detail,
            sample: self.sample,
        }
    }
}

fn collect_sample<W: Write>(
    cfg: &Config,
    disc: &Discovery,
    redactor: &Redactor,
    index: u32,
    samples: u32,
    sink: &mut Sink<W>,
) -> Result<Sample, CollectError> {
    let started = SystemTime::now();
    let (stop_tx, stop_rx) = bounded::<()>(0);
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        redactor: redactor.clone(),
        sample: index,
        prefix: bundle::sample_prefix(index, samples),
        clock: Instant::now(),
        stop: Mutex::new(Some(stop_tx)),
        slots: Mutex::new(Vec::new()),
    });
    let (task_tx, task_rx) = bounded::<Vec<Task>>(32);
    let (msg_tx, msg_rx) = bounded::<Msg>(64);

    {
        let (ctx, disc, msg_tx) = (ctx.clone(), disc.clone(), msg_tx.clone());
        std::thread::Builder::new()
            .name("memgap-walk".into())
            .spawn(move || produce(&ctx, &disc, task_tx, msg_tx))
            .expect("spawn walker");
    }
    for _ in 0..cfg.jobs.max(1) {
        spawn_worker(&ctx, task_rx.clone(), msg_tx.clone(), Vec::new());
    }
    let watchdog = {
        let (ctx, task_rx, msg_tx) = (ctx.clone(), task_rx.clone(), msg_tx.clone());
        std::thread::Builder::new()
            .name("memgap-watchdog".into())
            .spawn(move || watchdog(&ctx, &stop_rx, &task_rx, &msg_tx))
            .expect("spawn watchdog")
    };
    drop((task_rx, msg_tx));

    let mut counts = Counts::default();
    let mut produced = None;
    let mut done = 0u64;
    let missed_before = sink.missed.len() as u64 + sink.missed_not_listed;
    let result = (|| -> Result<(), CollectError> {
        while produced.is_none_or(|n| done < n) {
            let Ok(msg) = msg_rx.recv() else { break };
            let outs = match msg {
                Msg::Produced(n) => {
                    produced = Some(n);
                    continue;
                }
                Msg::Walk(out) => vec![out],
                Msg::Tasks(outs) => {
                    done += outs.len() as u64;
                    outs
                }
            };
            for out in outs {
                for m in out.missed {
                    sink.record(m);
                }
                match out.vanished {
                    Some(Kind::Process) => counts.vanished_processes += 1,
                    Some(_) => counts.vanished_cgroups += 1,
                    None => {}
                }
                if let Some(e) = out.entry {
                    if sink.put(&format!("{}{}", ctx.prefix, e.path), &e.data, index)? {
                        counts.files += e.files;
                        counts.bytes += e.bytes;
                        match e.kind {
                            Kind::Node => counts.node_files += 1,
                            Kind::Cgroup => counts.cgroups += 1,
                            Kind::Process => counts.processes += 1,
                        }
                    }
                }
            }
        }
        Ok(())
    })();
    drop(ctx.stop.lock().expect("stop lock").take());
    let _ = watchdog.join();
    result?;

    let tmpfs = discover::tmpfs_usage(&cfg.root, &disc.tmpfs);
    let mut json = serde_json::to_vec_pretty(&tmpfs).expect("tmpfs usage serializes");
    redactor.text(&mut json);
    sink.put(
        &format!("{}{}", ctx.prefix, bundle::TMPFS_FILE),
        &json,
        index,
    )?;
    if let Some(mut pods) = pod_log_dirs(&cfg.root) {
        redactor.text(&mut pods);
        sink.put(
            &format!("{}{}", ctx.prefix, bundle::PODS_FILE),
            &pods,
            index,
        )?;
    }
    if let Some(mut names) = container_log_names(&cfg.root) {
        redactor.text(&mut names);
        let path = format!("{}{}", ctx.prefix, bundle::CONTAINERS_FILE);
        sink.put(&path, &names, index)?;
    }

    counts.missed = sink.missed.len() as u64 + sink.missed_not_listed - missed_before;
    Ok(Sample {
        index,
        prefix: ctx.prefix.clone(),
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        finished_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        counts,
    })
}

/// `var/log/pods/<namespace>_<pod>_<uid>/<container>` names (never the logs), or `None` when
/// the node has no such directory.
fn pod_log_dirs(root: &Path) -> Option<Vec<u8>> {
    let base = root.join("var/log/pods");
    if !base.is_dir() {
        return None;
    }
    let mut lines: Vec<String> = walkdir::WalkDir::new(&base)
        .min_depth(1)
        .max_depth(2)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .filter_map(|e| {
            e.path()
                .strip_prefix(&base)
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        })
        .collect();
    lines.sort();
    let mut out = lines.join("\n").into_bytes();
    out.push(b'\n');
    Some(out)
}

/// Names of the entries of `var/log/containers` (symlinks to the logs: never followed, never
/// read), or `None` when the node has no such directory.
fn container_log_names(root: &Path) -> Option<Vec<u8>> {
    let rd = std::fs::read_dir(root.join("var/log/containers")).ok()?;
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    let mut out = names.join("\n").into_bytes();
    out.push(b'\n');
    Some(out)
}

fn produce(ctx: &Ctx, disc: &Discovery, tasks: Sender<Vec<Task>>, msgs: Sender<Msg>) {
    let mut n = 0u64;
    let mut batch = Vec::with_capacity(TASK_BATCH);
    let mut send = |t: Task| {
        n += 1;
        batch.push(t);
        if batch.len() < TASK_BATCH {
            return true;
        }
        tasks
            .send(std::mem::replace(
                &mut batch,
                Vec::with_capacity(TASK_BATCH),
            ))
            .is_ok()
    };
    for f in sources::NODE_FILES {
        let (dir, name) = f.rsplit_once('/').expect("node files have a directory");
        send(Task::File(dir, name));
    }
    for f in sources::VM_TUNABLES {
        send(Task::File("proc/sys/vm", f));
    }
    for f in sources::THP_FILES {
        send(Task::File("sys/kernel/mm/transparent_hugepage", f));
    }
    for m in &disc.cgroups {
        walk_cgroups(ctx, m, &mut send, &msgs);
    }
    match std::fs::read_dir(ctx.cfg.root.join("proc")) {
        Ok(rd) => {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                    send(Task::Process(name.into_owned()));
                }
            }
        }
        Err(e) => {
            let missed = vec![ctx.missed("/proc".into(), crate::read::classify(e))];
            let _ = msgs.send(Msg::Walk(Outcome {
                missed,
                ..Outcome::default()
            }));
        }
    }
    if !batch.is_empty() {
        let _ = tasks.send(batch);
    }
    let _ = msgs.send(Msg::Produced(n));
}

/// Walks one hierarchy depth-first; each directory becomes one task with the names of its
/// wanted files, from a single `getdents` pass that allocates only for matches and subdirectories
/// (a general-purpose walker allocated a path per entry, ~150,000 on a 5,000-cgroup node).
fn walk_cgroups(
    ctx: &Ctx,
    m: &CgroupMount,
    send: &mut impl FnMut(Task) -> bool,
    msgs: &Sender<Msg>,
) {
    let mut wanted: Vec<&'static str> = if m.version == 1 {
        sources::V1_CGROUP_FILES.to_vec()
    } else {
        sources::V2_CGROUP_FILES.to_vec()
    };
    if m.version == 1 && ctx.cfg.kmem_slabinfo {
        wanted.push(sources::V1_KMEM_SLABINFO);
    }
    // Host paths without the leading '/', and their depth below the mount.
    let mut stack: Vec<(String, usize)> = vec![(m.path.trim_matches('/').to_string(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let rd = match std::fs::read_dir(ctx.cfg.root.join(&dir)) {
            Ok(rd) => rd,
            Err(e) => {
                let mut out = Outcome::default();
                match crate::read::classify(e) {
                    ReadError::Vanished => out.vanished = Some(Kind::Cgroup),
                    err => out.missed.push(ctx.missed(format!("/{dir}"), err)),
                }
                let _ = msgs.send(Msg::Walk(out));
                continue;
            }
        };
        let mut names = Vec::with_capacity(wanted.len());
        for e in rd.flatten() {
            let name = e.file_name();
            let bytes = name.as_encoded_bytes();
            // d_type from getdents: no stat. Symlinks are neither followed nor read.
            match e.file_type() {
                Ok(t) if t.is_dir() && depth < MAX_CGROUP_DEPTH => {
                    stack.push((format!("{dir}/{}", name.to_string_lossy()), depth + 1));
                }
                Ok(t) if t.is_file() => {
                    if let Some(w) = wanted.iter().find(|w| w.as_bytes() == bytes) {
                        names.push(*w);
                    }
                }
                _ => {}
            }
        }
        if !send(Task::Dir(dir, names)) {
            return;
        }
    }
}

fn spawn_worker(
    ctx: &Arc<Ctx>,
    tasks: Receiver<Vec<Task>>,
    msgs: Sender<Msg>,
    leftover: Vec<Task>,
) {
    let slot = Arc::new(Slot {
        reading_since: AtomicU64::new(0),
        job: Mutex::new(Job::default()),
    });
    ctx.slots.lock().expect("slots lock").push(slot.clone());
    let ctx = ctx.clone();
    std::thread::Builder::new()
        .name("memgap-read".into())
        .stack_size(256 << 10)
        .spawn(move || {
            let mut w = Worker {
                ctx: &ctx,
                slot: &slot,
                buf: Vec::with_capacity(64 << 10),
            };
            let mut batch = leftover;
            loop {
                // Keep the batch where the watchdog can hand it to a replacement.
                w.job().pending = batch;
                while let Some(task) = w.next_pending() {
                    let Some(out) = w.run(task) else {
                        return; // abandoned by the watchdog, which replaced this thread
                    };
                    let mut job = w.job();
                    job.done_bytes += out.entry.as_ref().map_or(0, |e| e.data.len());
                    job.done.push(out);
                    if job.done_bytes >= RESULT_BATCH_BYTES {
                        send_done(&mut job, &msgs);
                    }
                }
                batch = match tasks.try_recv() {
                    Ok(b) => b,
                    Err(_) => {
                        // About to wait: hand over what is done first.
                        send_done(&mut w.job(), &msgs);
                        match tasks.recv() {
                            Ok(b) => b,
                            Err(_) => return,
                        }
                    }
                };
            }
        })
        .expect("spawn reader");
}

fn send_done(job: &mut Job, msgs: &Sender<Msg>) {
    if !job.done.is_empty() {
        job.done_bytes = 0;
        let _ = msgs.send(Msg::Tasks(std::mem::take(&mut job.done)));
    }
}

struct Worker<'a> {
    ctx: &'a Ctx,
    slot: &'a Slot,
    buf: Vec<u8>,
}

/// Where a worker reads from: a node file by path, or files of an open directory.
enum Source<'a> {
    Path(std::path::PathBuf),
    Dir(&'a crate::read::Dir),
}

impl Worker<'_> {
    fn next_pending(&self) -> Option<Task> {
        let mut job = self.job();
        if job.pending.is_empty() {
            None
        } else {
            Some(job.pending.remove(0))
        }
    }

    /// Runs one task; `None` when the watchdog abandoned it mid-read.
    fn run(&mut self, task: Task) -> Option<Outcome> {
        match task {
            Task::File(dir, name) => {
                self.begin(dir.to_string());
                let path = self.ctx.cfg.root.join(dir).join(name);
                match self.read(Source::Path(path), name)? {
                    Ok(()) => {
                        let mut data = std::mem::take(&mut self.buf);
                        self.ctx.redactor.file(name, &mut data);
                        let mut job = self.job();
                        let bytes = data.len() as u64;
                        let path = self.ctx.redactor.path(&format!("{dir}/{name}"));
                        job.out.entry = Some(Entry {
                            path,
                            data,
                            kind: Kind::Node,
                            files: 1,
                            bytes,
                        });
                    }
                    Err(e) => self.miss(name, e),
                }
            }
            Task::Dir(dir, names) => {
                let handle = match self.open_dir(&dir, Kind::Cgroup) {
                    Ok(h) => h,
                    Err(out) => return Some(out),
                };
                for name in names {
                    match self.read(Source::Dir(&handle), name)? {
                        Ok(()) => self.add(name),
                        // A file that disappears alone is skipped; a removed cgroup is
                        // caught by `open_dir` or by its directory being gone.
                        Err(ReadError::Vanished) => {
                            if !self.ctx.cfg.root.join(&dir).is_dir() {
                                return Some(self.vanished(Kind::Cgroup));
                            }
                        }
                        Err(e) => self.miss(name, e),
                    }
                }
            }
            Task::Process(pid) => {
                let dir = format!("proc/{pid}");
                let handle = match self.open_dir(&dir, Kind::Process) {
                    Ok(h) => h,
                    Err(out) => return Some(out),
                };
                for (i, &name) in sources::PROCESS_FILES.iter().enumerate() {
                    match self.read(Source::Dir(&handle), name)? {
                        Ok(()) => self.add(name),
                        // Exited before we started: skipped, not an error.
                        Err(ReadError::Vanished) if i == 0 => {
                            return Some(self.vanished(Kind::Process))
                        }
                        // Exited mid-read: keep what was read.
                        Err(ReadError::Vanished) if !self.ctx.cfg.root.join(&dir).is_dir() => break,
                        Err(ReadError::Vanished) => {}
                        Err(e) => self.miss(name, e),
                    }
                }
            }
        }
        Some(std::mem::take(&mut self.job().out))
    }

    fn job(&self) -> std::sync::MutexGuard<'_, Job> {
        self.slot.job.lock().expect("job lock")
    }

    fn begin(&mut self, dir: String) {
        let mut job = self.job();
        job.out = Outcome::default();
        job.dir = dir;
    }

    /// Opens a cgroup or process directory and starts its pack.
    fn open_dir(&mut self, dir: &str, kind: Kind) -> Result<crate::read::Dir, Outcome> {
        self.begin(dir.to_string());
        match crate::read::Dir::open(&self.ctx.cfg.root.join(dir)) {
            Ok(h) => {
                self.job().out.entry = Some(Entry {
                    path: self
                        .ctx
                        .redactor
                        .path(&format!("{dir}/{}", pack::PACK_NAME)),
                    data: Vec::new(),
                    kind,
                    files: 0,
                    bytes: 0,
                });
                Ok(h)
            }
            Err(ReadError::Vanished) => Err(self.vanished(kind)),
            Err(e) => {
                self.miss("", e);
                Err(std::mem::take(&mut self.job().out))
            }
        }
    }

    fn vanished(&mut self, kind: Kind) -> Outcome {
        Outcome {
            vanished: Some(kind),
            ..Outcome::default()
        }
    }

    /// Reads `name` into `self.buf`; `None` if the watchdog abandoned the read.
    fn read(&mut self, src: Source<'_>, name: &'static str) -> Option<Result<(), ReadError>> {
        self.job().current = name;
        self.slot
            .reading_since
            .store(self.ctx.now_ms() + 1, Ordering::SeqCst);
        let cap = self.ctx.cfg.max_file_bytes;
        let r = match src {
            Source::Path(p) => read_capped(&p, &mut self.buf, cap),
            Source::Dir(d) => d.read(name, &mut self.buf, cap),
        };
        // Only the watchdog sets a non-zero value back to 0 while we read.
        if self.slot.reading_since.swap(0, Ordering::SeqCst) == 0 {
            return None;
        }
        Some(r)
    }

    fn add(&mut self, name: &str) {
        self.ctx.redactor.file(name, &mut self.buf);
        let mut job = self.slot.job.lock().expect("job lock");
        if let Some(e) = job.out.entry.as_mut() {
            e.files += 1;
            e.bytes += self.buf.len() as u64;
            pack::push(&mut e.data, name, &self.buf)
                .expect("kernel file names are valid pack names");
        }
    }

    fn miss(&mut self, name: &str, e: ReadError) {
        let mut job = self.job();
        let path = if name.is_empty() {
            format!("/{}", job.dir)
        } else {
            format!("/{}/{name}", job.dir)
        };
        let m = self.ctx.missed(path, e);
        job.out.missed.push(m);
    }
}

/// Abandons reads that outlive the timeout: records them, keeps what the task had read, counts
/// the task as done and starts a replacement worker.
fn watchdog(ctx: &Arc<Ctx>, stop: &Receiver<()>, tasks: &Receiver<Vec<Task>>, msgs: &Sender<Msg>) {
    let timeout = ctx.cfg.read_timeout.as_millis().max(1) as u64;
    let tick = Duration::from_millis((timeout / 4).clamp(5, 100));
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(tick) {
        let slots: Vec<Arc<Slot>> = ctx.slots.lock().expect("slots lock").clone();
        for slot in slots {
            let since = slot.reading_since.load(Ordering::SeqCst);
            if since == 0 || ctx.now_ms() + 1 - since <= timeout {
                continue;
            }
            if slot
                .reading_since
                .compare_exchange(since, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue; // the read returned just now
            }
            ctx.slots
                .lock()
                .expect("slots lock")
                .retain(|s| !Arc::ptr_eq(s, &slot));
            let (outs, leftover) = {
                let mut job = slot.job.lock().expect("job lock");
                let path = format!("/{}/{}", job.dir, job.current);
                let mut out = std::mem::take(&mut job.out);
                out.missed.push(Missed {
                    path: ctx.redactor.path(&path),
                    reason: MissReason::Timeout,
                    detail: format!("no data within {timeout} ms; read abandoned"),
                    sample: ctx.sample,
                });
                // A pack with nothing in it yet is not worth an entry.
                if out.entry.as_ref().is_some_and(|e| e.files == 0) {
                    out.entry = None;
                }
                let mut outs = std::mem::take(&mut job.done);
                outs.push(out);
                (outs, std::mem::take(&mut job.pending))
            };
            let _ = msgs.send(Msg::Tasks(outs));
            spawn_worker(ctx, tasks.clone(), msgs.clone(), leftover);
        }
    }
}
