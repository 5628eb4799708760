//! Batch review: many bundles into one output directory (`index.html`, one page per bundle,
//! `findings.jsonl`, `bundles.jsonl`), in parallel with memory bounded by a few bundles at a
//! time; deterministic shards of the input for batch schedulers, and merging of shards.
//!
//! The JSON lines are documented in `docs/batch.md`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::html::Templates;
use crate::rules::{RuleSet, Severity};
use crate::{reader, Analysis};

pub mod lines;

/// One bundle to analyze and the name it goes by in the output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Input {
    pub path: PathBuf,
    /// Display name: the path as given, or relative to the directory it was found in.
    pub name: String,
    /// What its page is named after: the file name as given, or the path found below a
    /// searched directory.
    pub stem: String,
}

/// Whether a path is a bundle: a `.tar.gz`/`.tgz` file or an unpacked bundle directory.
pub fn is_bundle(p: &Path) -> bool {
    let s = p.to_string_lossy();
    (p.is_file() && (s.ends_with(".tar.gz") || s.ends_with(".tgz")))
        || (p.is_dir() && p.join(memgap_collector::bundle::MANIFEST).is_file())
}

/// Expands the command line into bundles: files as given, directories searched for bundles
/// (an unpacked bundle is not searched further). Sorted by name, duplicates removed.
pub fn discover(args: &[PathBuf]) -> Vec<Input> {
    let mut out = BTreeSet::new();
    for a in args {
        if !a.is_dir() || is_bundle(a) {
            out.insert(Input {
                path: a.clone(),
                name: a.display().to_string(),
                stem: a.file_name().map_or_else(
                    || a.display().to_string(),
                    |n| n.to_string_lossy().to_string(),
                ),
            });
            continue;
        }
        let mut it = walkdir::WalkDir::new(a)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(e) = it.next() {
            let Ok(e) = e else { continue };
            if e.depth() == 0 {
                continue;
            }
            if is_bundle(e.path()) {
                if e.file_type().is_dir() {
                    it.skip_current_dir();
                }
                let rel = e.path().strip_prefix(a).unwrap_or(e.path());
                let name = Path::new(&a.file_name().unwrap_or_default())
                    .join(rel)
                    .display()
                    .to_string();
                out.insert(Input {
                    path: e.path().to_path_buf(),
                    stem: name.clone(),
                    name,
                });
            }
        }
    }
    out.into_iter().collect()
}

/// A shard `K/N` (1-based K).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: u32,
    pub n: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 2/8")?;
        let k: u32 = k.trim().parse().map_err(|_| format!("bad K in {s:?}"))?;
        let n: u32 = n.trim().parse().map_err(|_| format!("bad N in {s:?}"))?;
        if n == 0 || k == 0 || k > n {
            return Err(format!("{s:?}: need 1 <= K <= N"));
        }
        Ok(Shard { k, n })
    }
}

impl Shard {
    /// Whether an input belongs to this shard: by a stable hash of its name, so every worker
    /// of a batch job computes the same split without coordinating.
    pub fn has(&self, input: &Input) -> bool {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in input.name.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % u64::from(self.n) == u64::from(self.k - 1)
    }
}

/// One line of `bundles.jsonl`: a bundle's summary, or the error that stopped it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleLine {
    pub bundle: String,
    /// The report page, relative to the output directory.
    pub page: Option<String>,
    pub host: String,
    pub collected_at: String,
    pub kernel: String,
    pub cgroup_mode: String,
    pub cgroups: usize,
    pub processes: usize,
    pub critical: usize,
    pub warning: usize,
    pub info: usize,
    pub worst: Option<Severity>,
    /// The most severe, then largest, findings.
    pub top: Vec<Headline>,
    /// Problems reading the bundle or applying rules (the bundle was still analyzed).
    pub diagnostics: usize,
    /// Of those, the errors: entries or a manifest that could not be read. A line without it
    /// (an older `bundles.jsonl` given to `merge`) reads as 0.
    #[serde(default)]
    pub errors: usize,
    /// Every entry of the archive was read (`bundle.complete` of the analysis); when not, its
    /// findings may miss what the lost entries held. Absent: true.
    #[serde(default = "yes")]
    pub complete: bool,
    /// The first error, for the line on standard error (not in `bundles.jsonl`).
    #[serde(skip)]
    pub first_error: Option<String>,
    /// Why the bundle could not be analyzed at all.
    pub error: Option<String>,
}

impl BundleLine {
    /// Analyzed from what could be read of it: entries were lost.
    pub fn is_partial(&self) -> bool {
        self.error.is_none() && !self.complete
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Headline {
    pub subject: String,
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub bytes: Option<u64>,
}

/// One line of `findings.jsonl`, as a value: what [`lines::write`] writes for a finding
/// (borrowed from the analysis by [`FindingLine::of`]), owned when a merge reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindingLine<'a> {
    pub bundle: Cow<'a, str>,
    pub page: Option<Cow<'a, str>>,
    pub host: Cow<'a, str>,
    pub collected_at: Cow<'a, str>,
    pub rule: Cow<'a, str>,
    pub title: Cow<'a, str>,
    pub cause: Cow<'a, str>,
    pub severity: Severity,
    pub scope: Cow<'a, str>,
    pub subject: Cow<'a, str>,
    pub cgroup: Option<Cow<'a, str>>,
    pub namespace: Option<Cow<'a, str>>,
    pub pod: Option<Cow<'a, str>>,
    pub container: Option<Cow<'a, str>>,
    pub qos: Option<Cow<'a, str>>,
    pub bytes: Option<u64>,
    pub rank: usize,
    pub summary: Cow<'a, str>,
    pub evidence: indexmap::IndexMap<Cow<'a, str>, Cow<'a, serde_json::Value>>,
}

/// Per rule, over a batch: where it fired.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleStat {
    pub rule: String,
    pub title: String,
    pub severity: Option<Severity>,
    pub bundles: BTreeSet<String>,
    /// Pages of the first bundles it fired in, for links.
    pub pages: BTreeMap<String, String>,
    pub subjects: usize,
    pub bytes: u64,
}

/// Accumulates per-rule statistics from finding lines (a batch run or a merge).
#[derive(Debug, Default)]
pub struct RuleStats(BTreeMap<String, RuleStat>);

impl RuleStats {
    pub fn add(&mut self, f: &FindingLine<'_>) {
        let page = f.page.as_deref();
        self.add_one(&f.rule, &f.title, f.severity, &f.bundle, page, f.bytes);
    }

    /// Adds one finding, given by the fields of its line that count.
    pub fn add_one(
        &mut self,
        rule: &str,
        title: &str,
        severity: Severity,
        bundle: &str,
        page: Option<&str>,
        bytes: Option<u64>,
    ) {
        let s = match self.0.get_mut(rule) {
            Some(s) => s,
            None => self.0.entry(rule.to_string()).or_insert_with(|| RuleStat {
                rule: rule.to_string(),
                ..Default::default()
            }),
        };
        // The latest line's title wins (copied into the string already there).
        s.title.clear();
        s.title.push_str(title);
        s.severity = s.severity.max(Some(severity));
        if !s.bundles.contains(bundle) {
            s.bundles.insert(bundle.to_string());
            if s.pages.len() < 20 {
                if let Some(p) = page {
                    s.pages.insert(bundle.to_string(), p.to_string());
                }
            }
        }
        s.subjects += 1;
        s.bytes += bytes.unwrap_or(0);
    }

    /// Adds the statistics of the bundles after these (one bundle's, in a batch), as if their
    /// lines had been added here one by one.
    pub fn merge(&mut self, later: RuleStats) {
        for (rule, l) in later.0 {
            let s = self.0.entry(rule).or_default();
            s.rule = l.rule;
            s.title = l.title;
            s.severity = s.severity.max(l.severity);
            for bundle in l.bundles {
                if s.bundles.insert(bundle.clone()) && s.pages.len() < 20 {
                    if let Some(p) = l.pages.get(&bundle) {
                        s.pages.insert(bundle, p.clone());
                    }
                }
            }
            s.subjects += l.subjects;
            s.bytes += l.bytes;
        }
    }

    /// Most severe first, then by how many bundles.
    pub fn sorted(self) -> Vec<RuleStat> {
        let mut v: Vec<RuleStat> = self.0.into_values().collect();
        v.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.bundles.len().cmp(&a.bundles.len()))
                .then(a.rule.cmp(&b.rule))
        });
        v
    }
}

pub struct Options<'a> {
    pub out: &'a Path,
    pub rules: &'a RuleSet,
    pub templates: &'a Templates,
    pub min_severity: Severity,
    pub limits: reader::Limits,
    /// Write a report page per bundle (the index and JSON lines are always written).
    pub pages: bool,
}

/// What a batch run produced, for the exit code.
#[derive(Debug, Default)]
pub struct Outcome {
    pub bundles: usize,
    pub failed: usize,
    /// Bundles analyzed from what could be read of them (see [`BundleLine::complete`]).
    pub partial: usize,
    /// The most severe finding seen.
    pub worst: Option<Severity>,
}

/// Analyzes every input into `out`: pages under `bundles/`, the JSON lines, and the index.
/// Bundles are processed a few at a time in parallel; results are written in input order.
pub fn run(
    inputs: &[Input],
    o: &Options<'_>,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Outcome> {
    use anyhow::Context as _;
    std::fs::create_dir_all(o.out.join("bundles"))
        .with_context(|| format!("creating {}", o.out.display()))?;
    let names = page_names(inputs);
    let mut findings_out = std::io::BufWriter::new(create(&o.out.join("findings.jsonl"))?);
    let mut bundles_out = std::io::BufWriter::new(create(&o.out.join("bundles.jsonl"))?);
    let mut stats = RuleStats::default();
    let mut rows = Vec::with_capacity(inputs.len());
    let mut outcome = Outcome::default();
    // Bundles are read in parallel already: each inflates on one thread.
    let o = &Options {
        limits: reader::Limits {
            inflate_threads: if inputs.len() > 1 {
                1
            } else {
                o.limits.inflate_threads
            },
            ..o.limits
        },
        ..*o
    };
    let jobs: Vec<(&Input, &String)> = inputs.iter().zip(&names).collect();
    let mut write = |(row, json, bundle_stats): Done| -> anyhow::Result<()> {
        outcome.bundles += 1;
        if let Some(e) = &row.error {
            outcome.failed += 1;
            progress.suspend(|| eprintln!("memgap: error: {e}"));
        }
        if row.is_partial() {
            outcome.partial += 1;
            let first = row.first_error.as_deref().unwrap_or("entries were lost");
            let more = match row.errors {
                0 | 1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            progress.suspend(|| {
                eprintln!(
                    "memgap: warning: {}: read in part: {first}{more}",
                    row.bundle
                )
            });
        }
        outcome.worst = outcome.worst.max(row.worst);
        findings_out.write_all(&json)?;
        stats.merge(bundle_stats);
        serde_json::to_writer(&mut bundles_out, &row)?;
        bundles_out.write_all(b"\n")?;
        rows.push(row);
        Ok(())
    };
    // The rules compiled once per thread, not once per bundle; not once for all threads: the
    // findings share the catalogue's strings, and counting references to them from both
    // threads made contended cache lines.
    in_order(
        &jobs,
        || match crate::rules::compile(o.rules) {
            c if o.pages => c,
            c => c.without_texts_for_people(),
        },
        |catalogue, (input, page)| one(input, page, o, catalogue),
        progress,
        &mut write,
    )?;
    findings_out.flush()?;
    bundles_out.flush()?;
    write_index(o.out, o.templates, &rows, stats.sorted())?;
    Ok(outcome)
}

/// What analyzing one bundle gives: its line, its finding lines (JSON) and their statistics.
type Done = (BundleLine, Vec<u8>, RuleStats);

/// Analyzes the jobs on the rayon pool's number of threads and hands the results to `write`
/// in the jobs' order, each as soon as those before it are written. At most two bundles per
/// thread are analyzed or waiting to be written at once: memory is bounded by a few bundles,
/// not the batch, and no thread waits for a slow bundle's neighbours or for the writing.
/// Each bundle is analyzed on one thread (its own single-thread pool) when the batch has
/// bundles enough for every thread: splitting one bundle's work across threads only cost
/// the splitting there. Each thread makes its own state (`init`) for its jobs.
fn in_order<J: Sync, S: Send>(
    jobs: &[J],
    init: impl Fn() -> S + Sync,
    analyze: impl Fn(&mut S, &J) -> Done + Sync,
    progress: &indicatif::ProgressBar,
    write: &mut impl FnMut(Done) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let threads = rayon::current_num_threads().max(1);
    let ahead = threads * 2;
    let solo = jobs.len() >= ahead;
    let next = AtomicUsize::new(0);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, Done)>();
    // A ticket per bundle that may be in flight; the writer gives one back per bundle written.
    let (ticket_tx, ticket_rx) = crossbeam_channel::bounded::<()>(ahead);
    for _ in 0..ahead {
        let _ = ticket_tx.send(());
    }
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()) {
            let (done_tx, ticket_rx) = (done_tx.clone(), ticket_rx.clone());
            let (next, init, analyze) = (&next, &init, &analyze);
            s.spawn(move || {
                let pool = solo
                    .then(|| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok())
                    .flatten();
                let mut state = init();
                while ticket_rx.recv().is_ok() {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let done = match &pool {
                        Some(p) => p.install(|| analyze(&mut state, job)),
                        None => analyze(&mut state, job),
                    };
                    progress.inc(1);
                    if done_tx.send((i, done)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        // Owned here: were writing to fail, dropping them stops the threads after the bundles
        // they are on.
        let (done_rx, ticket_tx) = (done_rx, ticket_tx);
        let mut waiting: BTreeMap<usize, Done> = BTreeMap::new();
        let mut i = 0;
        for (k, done) in done_rx.iter() {
            waiting.insert(k, done);
            while let Some(done) = waiting.remove(&i) {
                write(done)?;
                i += 1;
                let _ = ticket_tx.send(());
            }
        }
        Ok(())
    })
}

fn create(p: &Path) -> anyhow::Result<std::fs::File> {
    use anyhow::Context as _;
    std::fs::File::create(p).with_context(|| format!("writing {}", p.display()))
}

/// Page file names (`bundles/NAME.html`): from the bundle's name, safe characters only, unique.
fn page_names(inputs: &[Input]) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    inputs
        .iter()
        .map(|i| {
            let stem = i
                .stem
                .trim_end_matches('/')
                .trim_end_matches(".tar.gz")
                .trim_end_matches(".tgz");
            let mut safe: String = stem
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            safe = safe.trim_start_matches(['.', '_']).to_string();
            if safe.is_empty() {
                safe = "bundle".into();
            }
            let n = seen.entry(safe.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                safe = format!("{safe}-{n}");
            }
            format!("bundles/{safe}.html")
        })
        .collect()
}

/// One bundle: analyze, write its page, summarize; its finding lines serialized and counted
/// here, on the worker, while the analysis they borrow from is alive. A panic in here (a bug
/// met by a strange bundle) becomes that bundle's error row, not the end of the batch.
fn one(
    input: &Input,
    page: &str,
    o: &Options<'_>,
    rules: &crate::rules::Catalogue<'_>,
) -> (BundleLine, Vec<u8>, RuleStats) {
    let run = || -> Result<(BundleLine, Vec<u8>, RuleStats), String> {
        let b = reader::read(&input.path, &o.limits).map_err(|e| e.to_string())?;
        let mut a = Analysis::of(b, rules);
        a.findings.retain(|f| f.severity >= o.min_severity);
        let page = if o.pages {
            let html = o
                .templates
                .report(&a)
                .map_err(|e| format!("{}: {e}", input.name))?;
            std::fs::write(o.out.join(page), html)
                .map_err(|e| format!("{}: writing {page}: {e}", input.name))?;
            Some(page)
        } else {
            None
        };
        let row = summarize(&input.name, page, &a);
        let (mut json, mut stats) = (
            Vec::with_capacity(a.findings.len() * 800),
            RuleStats::default(),
        );
        lines::write(&input.name, page, &a, &mut json, &mut stats);
        Ok((row, json, stats))
    };
    let failed = |e| (error_line(&input.name, e), Vec::new(), RuleStats::default());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => failed(e),
        Err(_) => failed(format!(
            "{}: internal error while analyzing (please report it)",
            input.name
        )),
    }
}

fn error_line(bundle: &str, error: String) -> BundleLine {
    BundleLine {
        bundle: bundle.to_string(),
        page: None,
        host: String::new(),
        collected_at: String::new(),
        kernel: String::new(),
        cgroup_mode: String::new(),
        cgroups: 0,
        processes: 0,
        critical: 0,
        warning: 0,
        info: 0,
        worst: None,
        top: Vec::new(),
        diagnostics: 0,
        errors: 0,
        complete: false,
        first_error: None,
        error: Some(error),
    }
}

/// A bundle's line (its findings' lines: [`lines::write`]).
pub fn summarize(bundle: &str, page: Option<&str>, a: &Analysis) -> BundleLine {
    let m = &a.model;
    let b = &m.bundle;
    let count = |s| a.findings.iter().filter(|f| f.severity == s).count();
    let top = crate::rules::engine::by_importance(&a.findings);
    let reading_errors = a
        .diagnostics
        .iter()
        .filter(|d| d.level == reader::Level::Error);
    BundleLine {
        bundle: bundle.to_string(),
        page: page.map(str::to_string),
        host: b.hostname.clone(),
        collected_at: b.collected_at.clone(),
        kernel: b.kernel_release.clone(),
        cgroup_mode: b.cgroup_mode.name().to_string(),
        cgroups: m.cgroups.len(),
        processes: m.processes.len(),
        critical: count(Severity::Critical),
        warning: count(Severity::Warning),
        info: count(Severity::Info),
        worst: a.findings.iter().map(|f| f.severity).max(),
        top: top
            .iter()
            .take(3)
            .map(|f| Headline {
                subject: f.subject.to_string(),
                rule: f.rule.to_string(),
                title: f.title.to_string(),
                severity: f.severity,
                bytes: f.bytes,
            })
            .collect(),
        diagnostics: a.diagnostics.len(),
        errors: reading_errors.clone().count(),
        complete: m.bundle.complete,
        first_error: reading_errors.clone().next().map(|d| match &d.file {
            Some(file) => format!("{file}: {}", d.message),
            None => d.message.clone(),
        }),
        error: None,
    }
}

#[derive(Serialize)]
struct IndexView<'a> {
    memgap_version: &'static str,
    bundles: &'a [BundleLine],
    failed: usize,
    partial: usize,
    rules: Vec<RuleStat>,
    critical: usize,
    warning: usize,
    info: usize,
}

/// Writes `index.html` for a set of bundle lines and rule statistics.
pub fn write_index(
    out: &Path,
    t: &Templates,
    rows: &[BundleLine],
    rules: Vec<RuleStat>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let v = IndexView {
        memgap_version: env!("CARGO_PKG_VERSION"),
        bundles: rows,
        failed: rows.iter().filter(|r| r.error.is_some()).count(),
        partial: rows.iter().filter(|r| r.is_partial()).count(),
        rules,
        critical: rows.iter().map(|r| r.critical).sum(),
        warning: rows.iter().map(|r| r.warning).sum(),
        info: rows.iter().map(|r| r.info).sum(),
    };
    let html = t.render("index.html", &v)?;
    let p = out.join("index.html");
    std::fs::write(&p, html).with_context(|| format!("writing {}", p.display()))
}

/// `memgap merge`: joins shard directories into one: pages copied (renamed on collision),
/// the JSON lines concatenated in the order given, and a new index.
pub fn merge(shards: &[PathBuf], out: &Path, t: &Templates) -> anyhow::Result<Outcome> {
    use anyhow::Context as _;
    std::fs::create_dir_all(out.join("bundles"))
        .with_context(|| format!("creating {}", out.display()))?;
    let mut rows: Vec<BundleLine> = Vec::new();
    let mut stats = RuleStats::default();
    let mut findings_out = std::io::BufWriter::new(create(&out.join("findings.jsonl"))?);
    let mut renamed: BTreeMap<(usize, String), String> = BTreeMap::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut outcome = Outcome::default();
    for (si, dir) in shards.iter().enumerate() {
        let bl = dir.join("bundles.jsonl");
        let f = std::fs::File::open(&bl).with_context(|| format!("reading {}", bl.display()))?;
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", bl.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let mut row: BundleLine = serde_json::from_str(&line)
                .with_context(|| format!("{}: line {}", bl.display(), n + 1))?;
            if let Some(page) = row.page.clone() {
                let mut target = page.clone();
                let mut k = 1;
                while !taken.insert(target.clone()) {
                    k += 1;
                    target = format!("{}-{k}.html", page.trim_end_matches(".html"));
                }
                let from = dir.join(&page);
                std::fs::copy(&from, out.join(&target))
                    .with_context(|| format!("copying {}", from.display()))?;
                renamed.insert((si, page), target.clone());
                row.page = Some(target);
            }
            outcome.bundles += 1;
            outcome.failed += usize::from(row.error.is_some());
            outcome.partial += usize::from(row.is_partial());
            outcome.worst = outcome.worst.max(row.worst);
            rows.push(row);
        }
        let fl = dir.join("findings.jsonl");
        let f = std::fs::File::open(&fl).with_context(|| format!("reading {}", fl.display()))?;
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", fl.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let mut l: FindingLine = serde_json::from_str(&line)
                .with_context(|| format!("{}: line {}", fl.display(), n + 1))?;
            if let Some(p) = &l.page {
                if let Some(to) = renamed.get(&(si, p.to_string())) {
                    l.page = Some(to.clone().into());
                }
            }
            stats.add(&l);
            serde_json::to_writer(&mut findings_out, &l)?;
            findings_out.write_all(b"\n")?;
        }
    }
    findings_out.flush()?;
    let mut bundles_out = std::io::BufWriter::new(create(&out.join("bundles.jsonl"))?);
    for r in &rows {
        serde_json::to_writer(&mut bundles_out, r)?;
        bundles_out.write_all(b"\n")?;
    }
    bundles_out.flush()?;
    write_index(out, t, &rows, stats.sorted())?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_bundle_statistics_equal_lines_added_one_by_one() {
        let line = |bundle: usize, rule: usize, bytes: u64| FindingLine {
            bundle: format!("b{bundle}").into(),
            page: (bundle % 3 != 0).then(|| format!("bundles/b{bundle}.html").into()),
            host: "".into(),
            collected_at: "".into(),
            rule: format!("rule-{rule}").into(),
            title: format!("title {rule} in b{bundle}").into(),
            cause: "".into(),
            severity: [Severity::Info, Severity::Warning, Severity::Critical][(bundle + rule) % 3],
            scope: "cgroup".into(),
            subject: "".into(),
            cgroup: None,
            namespace: None,
            pod: None,
            container: None,
            qos: None,
            bytes: Some(bytes),
            rank: 1,
            summary: "".into(),
            evidence: Default::default(),
        };
        let bundles: Vec<Vec<FindingLine>> = (0..40)
            .map(|b| {
                (0..(b % 7))
                    .map(|i| line(b, (b * i) % 5, (b * 1000 + i) as u64))
                    .collect()
            })
            .collect();
        let (mut one_by_one, mut merged) = (RuleStats::default(), RuleStats::default());
        for lines in &bundles {
            let mut partial = RuleStats::default();
            for l in lines {
                one_by_one.add(l);
                partial.add(l);
            }
            merged.merge(partial);
        }
        let show = |s: RuleStats| format!("{:?}", s.sorted());
        assert_eq!(show(merged), show(one_by_one));
    }

    /// Jobs taking uneven times come out in order, never more than two per thread ahead of
    /// the writing, and a failed write stops the batch early.
    #[test]
    fn bundles_are_written_in_order_a_few_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let ahead = rayon::current_num_threads().max(1) * 2;
        let jobs: Vec<usize> = (0..60).collect();
        let (written, most_ahead) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let analyze = |_: &mut (), &j: &usize| {
            most_ahead.fetch_max(j - written.load(SeqCst), SeqCst);
            std::thread::sleep(std::time::Duration::from_micros((j as u64 * 7919) % 3000));
            (
                error_line(&j.to_string(), String::new()),
                Vec::new(),
                RuleStats::default(),
            )
        };
        let hidden = indicatif::ProgressBar::hidden();
        let mut order = Vec::new();
        in_order(&jobs, || (), analyze, &hidden, &mut |d| {
            order.push(d.0.bundle);
            written.fetch_add(1, SeqCst);
            Ok(())
        })
        .unwrap();
        let want: Vec<String> = jobs.iter().map(|j| j.to_string()).collect();
        assert_eq!(order, want);
        assert!(most_ahead.load(SeqCst) < ahead, "{most_ahead:?} ahead");

        let many: Vec<usize> = (0..10_000).collect();
        let analyzed = AtomicUsize::new(0);
        let mut n = 0;
        let failed = in_order(
            &many,
            || (),
            |_, _| {
                analyzed.fetch_add(1, SeqCst);
                (
                    error_line("b", String::new()),
                    Vec::new(),
                    RuleStats::default(),
                )
            },
            &hidden,
            &mut |_| {
                n += 1;
                anyhow::ensure!(n < 3, "disk full");
                Ok(())
            },
        );
        assert_eq!(failed.unwrap_err().to_string(), "disk full");
        assert!(
            analyzed.load(SeqCst) < 3 + 2 * ahead,
            "{analyzed:?} analyzed"
        );
    }

    #[test]
    fn shards_partition_the_inputs() {
        let inputs: Vec<Input> = (0..500)
            .map(|i| Input {
                path: PathBuf::from(format!("b{i}.tar.gz")),
                name: format!("fleet/node-{i}.tar.gz"),
                stem: format!("fleet/node-{i}.tar.gz"),
            })
            .collect();
        let n = 7;
        let mut seen = 0;
        for k in 1..=n {
            let s = Shard { k, n };
            let mine = inputs.iter().filter(|i| s.has(i)).count();
            assert!(mine > 40 && mine < 110, "shard {k}: {mine}");
            seen += mine;
        }
        assert_eq!(seen, inputs.len());
        assert!("0/3".parse::<Shard>().is_err());
        assert!("4/3".parse::<Shard>().is_err());
        assert_eq!("2/3".parse::<Shard>().unwrap(), Shard { k: 2, n: 3 });
    }

    #[test]
    fn page_names_are_safe_and_unique() {
        let i = |n: &str| Input {
            path: PathBuf::from(n),
            name: n.to_string(),
            stem: n.to_string(),
        };
        let names = page_names(&[
            i("a/node.tar.gz"),
            i("a_node.tgz"),
            i("../../etc/passwd"),
            i(".."),
        ]);
        assert_eq!(names[0], "bundles/a_node.html");
        assert_eq!(names[1], "bundles/a_node-2.html");
        assert!(
            names
                .iter()
                .all(|n| !n[8..].contains('/') && !n.contains("..")),
            "{names:?}"
        );
    }
}
