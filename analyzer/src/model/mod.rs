//! The model of a node built from one bundle snapshot: node memory, the cgroup tree with its
//! raw metrics and derived values, and the processes. Raw values are kept for rules; derived
//! values (effective limit, cAdvisor metrics, the bridge, process sums) are computed once here.

pub mod bridge;
pub mod dirs;
pub mod k8s;
pub mod trend;

use std::collections::BTreeMap;
use std::sync::Arc;

use memgap_collector::bundle::{self, CgroupMode, Manifest, Missed, TmpfsUsage};
use rayon::prelude::*;
use serde::Serialize;

use crate::parse::{self, flat, kv_kb, misc, nested, oom, slabinfo, sysvipc, Flat, Limit};
use crate::reader::{Bundle, Diagnostic, DirView, Files, Level};
use crate::FastMap;
pub use bridge::{Bridge, Cadvisor, Part};
use dirs::RawProcess;
pub use k8s::K8s;

/// Version of the JSON output's schema (`docs/json-schema.md`).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub schema_version: u32,
    pub bundle: BundleInfo,
    pub node: Node,
    pub cgroups: Vec<Cgroup>,
    pub processes: Vec<Process>,
    pub oom_events: Vec<oom::OomEvent>,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BundleInfo {
    pub source: String,
    pub hostname: String,
    pub kernel_release: String,
    pub collected_at: String,
    pub collector_version: String,
    pub cgroup_mode: CgroupMode,
    pub redacted: bool,
    pub samples: usize,
    /// Index of the snapshot this model describes.
    pub sample: usize,
    pub missed: Vec<Missed>,
    pub missed_not_listed: u64,
    /// Every entry of the archive was read (see `reader::Bundle::complete`). When not, what
    /// needs every cgroup of the node is unknown: v1's count of dying cgroups and each
    /// cgroup's own usage (its usage less its children's).
    pub complete: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Node {
    /// `/proc/meminfo`, bytes (counts for `HugePages_*`).
    pub meminfo: BTreeMap<String, u64>,
    /// Where the node's memory is, from meminfo; parts sum to MemTotal.
    pub breakdown: Vec<Part>,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: Option<u64>,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub slab_top: Vec<slabinfo::SlabCache>,
    pub slab_total_bytes: u64,
    /// The `dentry` cache and the `*inode_cache` caches (file-system churn), from slabinfo.
    pub dentry_slab_bytes: Option<u64>,
    pub inode_slab_bytes: u64,
    pub dentry: Option<misc::DentryState>,
    /// `nr_negative` where the kernel reports it (5.0+), and the bytes it pins.
    pub negative_dentries: Option<u64>,
    pub negative_dentry_bytes: Option<u64>,
    pub shm_segments: Vec<sysvipc::ShmSegment>,
    /// Bytes of SysV segments no process is attached to.
    pub shm_orphaned_bytes: u64,
    pub tmpfs: Vec<TmpfsUsage>,
    pub tmpfs_used_bytes: u64,
    /// The selected value of `transparent_hugepage/enabled` (`always`, `madvise`, `never`).
    pub thp_enabled: Option<String>,
    pub psi: Option<nested::Psi>,
    /// Memory cgroups the kernel holds (`/proc/cgroups`), live cgroups in the bundle, and the
    /// dying ones (removed but still pinned by charged pages).
    pub memory_cgroups_kernel: Option<u64>,
    pub memory_cgroups_live: u64,
    pub dying_cgroups: Option<u64>,
    pub cpus: u64,
    pub vm: BTreeMap<String, String>,
    /// Growth over the snapshots of a multi-sample bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend: Option<trend::Trend>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cgroup {
    /// Path in its hierarchy (`/` for the root). Shared: the cgroups it limits name it.
    pub path: Arc<str>,
    /// Host path of the hierarchy's mount point.
    pub hierarchy: Arc<str>,
    pub version: u8,
    pub depth: usize,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8s>,
    pub usage_bytes: Option<u64>,
    pub limit: Option<Limit>,
    /// The smallest limit on the path to the root, and the cgroup that sets it.
    pub effective_limit: Option<Limit>,
    pub limited_by: Option<Arc<str>>,
    /// v2 `memory.high`.
    pub high: Option<Limit>,
    pub peak_bytes: Option<u64>,
    pub failcnt: Option<u64>,
    /// v1 `memory.kmem.usage_in_bytes` and `memory.kmem.tcp.usage_in_bytes`.
    pub kmem_bytes: Option<u64>,
    pub tcp_bytes: Option<u64>,
    /// v1 `memory.memsw.usage_in_bytes`, v2 `memory.swap.current`.
    pub memsw_bytes: Option<u64>,
    pub swap_bytes: Option<u64>,
    /// Raw flat files: `memory.stat`, `memory.events`, `memory.oom_control`, `cgroup.stat`, ...
    pub stat: Flat,
    pub events: Flat,
    pub events_local: Flat,
    pub oom_control: Flat,
    pub cgroup_stat: Flat,
    /// Boxed, as `trend`: most cgroups have none (v1 has no PSI per cgroup), and a smaller
    /// `Cgroup` is cheaper to move and to walk.
    pub pressure: Option<Box<nested::Psi>>,
    /// PIDs in this cgroup itself.
    pub pids: Vec<u32>,
    /// Sums over the processes of this cgroup and its descendants.
    pub procs: ProcSum,
    /// Index (in the model's processes) of the process with the most anonymous RSS in the
    /// subtree.
    pub top_process: Option<usize>,
    pub cadvisor: Cadvisor,
    pub bridge: Option<Bridge>,
    /// usage - processes' summed RSS (what `top` shows), and usage - anon.
    pub gap_vs_rss_bytes: Option<i64>,
    pub gap_vs_anon_bytes: Option<i64>,
    /// Usage or working set over the effective limit, when limited.
    pub usage_ratio: Option<f64>,
    pub working_set_ratio: Option<f64>,
    /// usage - sum of the children's usage (charges held by this level itself).
    pub own_usage_bytes: Option<i64>,
    /// Growth over the snapshots of a multi-sample bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend: Option<Box<trend::Trend>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcSum {
    pub count: u64,
    /// PIDs the cgroup's and its descendants' `cgroup.procs` list: the processes the kernel
    /// had there, whether or not the bundle holds their `/proc/PID` (lost from a bundle read
    /// in part, or gone before it was read).
    pub listed: u64,
    pub rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    pub pss: u64,
    pub pss_anon: u64,
    pub pss_file: u64,
    pub pss_shmem: u64,
    pub swap: u64,
    pub locked: u64,
    pub lazyfree: u64,
    pub anon_huge: u64,
    pub threads: u64,
    pub pagetables: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    /// Arguments joined by spaces (they were NUL-separated).
    pub cmdline: String,
    /// Memory cgroup path from `/proc/PID/cgroup` or `cgroup.procs` (the cgroup's own string
    /// when it is in the bundle).
    pub cgroup: Option<Arc<str>>,
    pub cgroup_index: Option<usize>,
    pub state: Option<String>,
    pub threads: Option<u64>,
    pub rss: Option<u64>,
    pub rss_anon: Option<u64>,
    pub rss_file: Option<u64>,
    pub rss_shmem: Option<u64>,
    pub swap: Option<u64>,
    pub locked: Option<u64>,
    pub hwm: Option<u64>,
    pub pagetables: Option<u64>,
    pub pss: Option<u64>,
    pub pss_anon: Option<u64>,
    pub pss_file: Option<u64>,
    pub pss_shmem: Option<u64>,
    pub lazyfree: Option<u64>,
    pub anon_huge: Option<u64>,
    pub oom_score: Option<i64>,
    pub oom_score_adj: Option<i64>,
}

/// Builds the model of the latest snapshot, with the growth over all snapshots when there are
/// several.
pub fn build(b: &Bundle) -> Model {
    let mut m = build_sample(b, b.samples.len() - 1);
    trend::attach(b, &mut m);
    m
}

pub fn build_sample(b: &Bundle, sample: usize) -> Model {
    let files = &b.samples[sample];
    let mut diags: Vec<Diagnostic> = b.diagnostics.clone();
    let mut diag = |level, file: &str, msg: String| {
        diags.push(Diagnostic {
            level,
            bundle: b.source.clone(),
            file: Some(file.to_string()),
            message: msg,
        });
    };
    let m = b.manifest.as_ref();
    let mode = m
        .map(|m| m.cgroup_mode)
        .unwrap_or_else(|| guess_mode(files));
    let mounts = hierarchies(m, mode);
    let release = m
        .map(|m| m.kernel_release.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| {
            files
                .get("proc/sys/kernel/osrelease")
                .map(|t| parse::text(t).trim().to_string())
        })
        .unwrap_or_default();
    // The cgroups (with the Kubernetes names) are read while the processes and then the node's
    // files are: one pool of work for both threads instead of phases that each end on one.
    let ((mut processes, mut node, notes), (mut cgroups, links, tree_notes)) = rayon::join(
        || processes_and_node(files, &release),
        || cgroup_tree(files, &mounts, mode),
    );
    for (l, f, msg) in notes.into_iter().chain(tree_notes) {
        diag(l, &f, msg);
    }
    let cpus = node.cpus;
    let sums = attach_processes(
        &mut cgroups,
        &mut processes,
        &links,
        mode,
        &b.source,
        &mut diags,
    );
    let processes: Vec<Process> = processes.into_iter().map(|p| p.0).collect();
    derive(&mut cgroups, &links, sums, cpus);
    node.memory_cgroups_live = links.memory_cgroups;
    node.dying_cgroups = dying(&node, &cgroups, mode);
    // Lost entries may have held cgroups: counted from the bundle's cgroups, v1's dying ones
    // (the kernel's count less the bundle's) and a parent's own usage (less its children's)
    // would be too large, and say so with confidence.
    if !b.complete {
        if mode != CgroupMode::V2 {
            node.dying_cgroups = None;
        }
        cgroups.iter_mut().for_each(|c| c.own_usage_bytes = None);
    }
    crate::reader::cap_diagnostics(&mut diags);
    let mut oom_events = b
        .shared_file(bundle::OOM_FILE)
        .map(|t| oom::parse(&parse::text(t)))
        .unwrap_or_default();
    // How long ago each kill was: the kernel log counts from boot, like /proc/uptime.
    let uptime_s = files.get("proc/uptime").and_then(|t| {
        parse::text(t)
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
    });
    for e in &mut oom_events {
        if let (Some(up), Some(t)) = (uptime_s, e.time_us) {
            e.ago_seconds = Some((up - t as f64 / 1e6).max(0.0) as u64);
        }
    }
    Model {
        schema_version: SCHEMA_VERSION,
        bundle: BundleInfo {
            source: b.source.clone(),
            hostname: m
                .map(|m| m.hostname.clone())
                .or_else(|| {
                    files
                        .get("proc/sys/kernel/hostname")
                        .map(|t| parse::text(t).trim().to_string())
                })
                .unwrap_or_default(),
            kernel_release: release,
            collected_at: m
                .map(|m| {
                    m.samples
                        .get(sample)
                        .map_or_else(|| m.started_at.clone(), |s| s.started_at.clone())
                })
                .unwrap_or_default(),
            collector_version: m.map(|m| m.collector_version.clone()).unwrap_or_default(),
            cgroup_mode: mode,
            redacted: m.is_some_and(|m| m.redacted),
            samples: b.samples.len(),
            sample,
            missed: m.map(|m| m.missed.clone()).unwrap_or_default(),
            missed_not_listed: m.map_or(0, |m| m.missed_not_listed),
            complete: b.complete,
        },
        node,
        cgroups,
        processes,
        oom_events,
        diagnostics: diags,
    }
}

impl Cgroup {
    pub fn hierarchy_is_memory(&self, mode: CgroupMode) -> bool {
        match mode {
            CgroupMode::V2 => self.version == 2,
            _ => self.version == 1,
        }
    }

    /// Whether the cgroup holds memory itself rather than summing its children's: a leaf, or a
    /// parent whose own charges are a tenth of its usage or more (a pod holding an exited
    /// container's shmem). The root and the QoS levels are sums. Cause rules look at these.
    pub fn holds_own(&self) -> bool {
        if &*self.path == "/" {
            return false;
        }
        match (
            self.children.is_empty(),
            self.own_usage_bytes,
            self.usage_bytes,
        ) {
            (true, _, _) => true,
            (false, Some(own), Some(u)) => own > 0 && own as u64 * 10 >= u,
            _ => false,
        }
    }

    /// A short name for people: the Kubernetes identity where known, else the path. Made for
    /// every cgroup with a finding (thousands a bundle): concatenated, not formatted.
    pub fn display_name(&self) -> String {
        let Some(k) = self.k8s.as_ref().filter(|k| k.pod.is_some()) else {
            return self.path.to_string();
        };
        let container = match (k.level, &k.container, &k.container_id) {
            ("container", Some(c), _) => Some(&**c),
            ("container", None, Some(id)) => id.get(..12).or(Some(id)),
            _ => None,
        };
        let parts = [
            k.namespace.as_deref().unwrap_or("?"),
            "/",
            k.pod.as_deref().unwrap_or("?"),
        ];
        let mut name = String::with_capacity(64);
        name.extend(parts);
        if let Some(c) = container {
            name.extend([" [", c, "]"]);
        }
        name
    }
}

fn guess_mode(files: &Files) -> CgroupMode {
    let v1 = files.has_dir_under("sys/fs/cgroup/memory");
    let v2 = files.get("sys/fs/cgroup/cgroup.controllers").is_some();
    match (v1, v2) {
        (true, _) => CgroupMode::V1,
        (false, true) => CgroupMode::V2,
        _ => CgroupMode::None,
    }
}

/// The processes, then the node's files (which need the CPUs the processes may run on), with
/// the notes about both, in that order.
fn processes_and_node<'f>(files: &'f Files, release: &str) -> (Vec<RawProcess<'f>>, Node, Notes) {
    let (processes, mut notes) = read_processes(files);
    let cpus = processes.iter().filter_map(|p| p.1).max().unwrap_or(1);
    let node = read_node(files, cpus, release, &mut |l, f: &str, msg| {
        notes.push((l, f.to_string(), msg))
    });
    (processes, node, notes)
}

/// The cgroup tree, read and named, with the notes about its shape, then its files.
fn cgroup_tree(
    files: &Files,
    mounts: &[(String, u8)],
    mode: CgroupMode,
) -> (Vec<Cgroup>, Links, Notes) {
    let ((tree, mut notes), names) =
        rayon::join(|| skeleton(files, mounts), || k8s::Names::read(files));
    let (cgroups, links, cgroup_notes) = read_cgroups(&tree, &names, mode);
    notes.extend(cgroup_notes.into_iter().flatten());
    (cgroups, links, notes)
}

fn read_node(
    files: &Files,
    cpus: u64,
    release: &str,
    diag: &mut impl FnMut(Level, &str, String),
) -> Node {
    let mut n = Node {
        cpus,
        ..Default::default()
    };
    if let Some(t) = files.get("proc/meminfo") {
        let m = kv_kb::parse(&parse::text(t));
        bad_lines(diag, "proc/meminfo", &m.bad_lines);
        n.meminfo = m.values;
    }
    let g = |k: &str| n.meminfo.get(k).copied().unwrap_or(0);
    n.mem_total_bytes = g("MemTotal");
    n.mem_available_bytes = n.meminfo.get("MemAvailable").copied();
    n.swap_total_bytes = g("SwapTotal");
    n.swap_used_bytes = g("SwapTotal").saturating_sub(g("SwapFree"));
    let shmem = g("Shmem");
    let cache = (g("Cached") + g("Buffers")).saturating_sub(shmem);
    let mut parts = vec![
        Part {
            key: "anon",
            label: "anonymous (processes)",
            bytes: g("AnonPages"),
        },
        Part {
            key: "page_cache",
            label: "page cache",
            bytes: cache,
        },
        Part {
            key: "shmem",
            label: "shmem / tmpfs",
            bytes: shmem,
        },
        Part {
            key: "slab_reclaimable",
            label: "slab, reclaimable",
            bytes: g("SReclaimable"),
        },
        Part {
            key: "slab_unreclaimable",
            label: "slab, unreclaimable",
            bytes: g("SUnreclaim"),
        },
        Part {
            key: "kernel_stack",
            label: "kernel stacks",
            bytes: g("KernelStack"),
        },
        Part {
            key: "page_tables",
            label: "page tables",
            bytes: g("PageTables") + g("SecPageTables"),
        },
        Part {
            key: "percpu",
            label: "per-CPU",
            bytes: g("Percpu"),
        },
        Part {
            key: "swap_cached",
            label: "swap cache",
            bytes: g("SwapCached"),
        },
        Part {
            key: "hugetlb",
            label: "huge pages (hugetlbfs)",
            bytes: g("Hugetlb").max(g("HugePages_Total") * g("Hugepagesize")),
        },
        Part {
            key: "free",
            label: "free",
            bytes: g("MemFree"),
        },
    ];
    let listed: u64 = parts.iter().map(|p| p.bytes).sum();
    parts.push(Part {
        key: "other",
        label: "other kernel (drivers, vmalloc, not itemized)",
        bytes: n.mem_total_bytes.saturating_sub(listed),
    });
    parts.retain(|p| p.bytes > 0);
    n.breakdown = parts;

    if let Some(t) = files.get("proc/slabinfo") {
        let s = slabinfo::parse(&parse::text(t));
        bad_lines(diag, "proc/slabinfo", &s.bad_lines);
        n.slab_total_bytes = s.caches.iter().map(|c| c.bytes).sum();
        let mut caches = s.caches;
        caches.sort_by_key(|c| std::cmp::Reverse(c.bytes));
        let dentry = caches.iter().find(|c| c.name == "dentry");
        let dentry_size = dentry.map(|c| c.objsize);
        n.dentry_slab_bytes = dentry.map(|c| c.bytes);
        n.inode_slab_bytes = caches
            .iter()
            .filter(|c| c.name.ends_with("inode_cache"))
            .map(|c| c.bytes)
            .sum();
        caches.truncate(15);
        n.slab_top = caches;
        if let Some(t) = files.get("proc/sys/fs/dentry-state") {
            n.dentry = misc::dentry_state(&parse::text(t));
            if n.dentry.is_none() {
                diag(
                    Level::Warning,
                    "proc/sys/fs/dentry-state",
                    "unreadable".into(),
                );
            }
        }
        // Before 5.0 the 5th field is always 0: no data, not "no negatives".
        if kernel_at_least(release, 5, 0) {
            n.negative_dentries = n.dentry.map(|d| d.nr_negative);
            n.negative_dentry_bytes = n.negative_dentries.zip(dentry_size).map(|(c, s)| c * s);
        }
    } else if let Some(t) = files.get("proc/sys/fs/dentry-state") {
        n.dentry = misc::dentry_state(&parse::text(t));
    }
    if let Some(t) = files.get("proc/sysvipc/shm") {
        let s = sysvipc::parse(&parse::text(t));
        bad_lines(diag, "proc/sysvipc/shm", &s.bad_lines);
        n.shm_orphaned_bytes = s
            .segments
            .iter()
            .filter(|s| s.nattch == 0)
            .map(|s| s.rss.unwrap_or(s.size))
            .sum();
        n.shm_segments = s.segments;
    }
    if let Some(t) = files.get(bundle::TMPFS_FILE) {
        match serde_json::from_slice::<Vec<TmpfsUsage>>(t) {
            Ok(v) => {
                // /sys/fs/cgroup and similar API mounts hold nothing; /dev/shm and emptyDirs do.
                n.tmpfs_used_bytes = v.iter().filter_map(|u| u.used_bytes).sum();
                n.tmpfs = v;
            }
            Err(e) => diag(
                Level::Warning,
                bundle::TMPFS_FILE,
                format!("unreadable: {e}"),
            ),
        }
    }
    n.thp_enabled = files
        .get("sys/kernel/mm/transparent_hugepage/enabled")
        .and_then(|t| {
            let t = parse::text(t);
            let s = t.find('[')?;
            let e = t[s..].find(']')?;
            Some(t[s + 1..s + e].to_string())
        });
    n.psi = files
        .get("proc/pressure/memory")
        .and_then(|t| nested::psi(&parse::text(t)));
    if let Some(t) = files.get("proc/cgroups") {
        let (c, bad) = misc::proc_cgroups(&parse::text(t));
        bad_lines(diag, "proc/cgroups", &bad);
        n.memory_cgroups_kernel = c.iter().find(|c| c.name == "memory").map(|c| c.num_cgroups);
    }
    for (name, content) in files.dir("proc/sys/vm") {
        n.vm.insert(name.to_string(), parse::text(content).trim().to_string());
    }
    n
}

fn bad_lines(diag: &mut impl FnMut(Level, &str, String), file: &str, bad: &[usize]) {
    if !bad.is_empty() {
        diag(
            Level::Warning,
            file,
            format!(
                "{} unreadable line(s), first at line {}; the rest is used",
                bad.len(),
                bad[0]
            ),
        );
    }
}

/// `(major, minor)` of a release string such as `6.1.0-18-amd64`.
pub fn kernel_version(release: &str) -> Option<(u64, u64)> {
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Whether a release string is at least `major.minor`.
pub fn kernel_at_least(release: &str, major: u64, minor: u64) -> bool {
    kernel_version(release).is_some_and(|v| v >= (major, minor))
}

/// Problems found while building, as (level, file, message), merged into diagnostics later.
type Notes = Vec<(Level, String, String)>;

/// The hierarchies to read: from the manifest, else the usual mount points.
fn hierarchies(m: Option<&Manifest>, mode: CgroupMode) -> Vec<(String, u8)> {
    match m {
        Some(m) if !m.cgroup_mounts.is_empty() => m
            .cgroup_mounts
            .iter()
            .map(|c| (c.path.trim_matches('/').to_string(), c.version))
            .collect(),
        _ => match mode {
            CgroupMode::V2 => vec![("sys/fs/cgroup".into(), 2)],
            _ => vec![
                ("sys/fs/cgroup/memory".into(), 1),
                ("sys/fs/cgroup/unified".into(), 2),
            ],
        },
    }
}

/// Each cgroup's directory, path, hierarchy, version and parent, parents first.
/// A cgroup directory, in the bundle and in its hierarchy.
struct Place<'f> {
    dir: &'f str,
    files: DirView<'f>,
    /// Its path in the hierarchy (`/` for the root), the hierarchy's mount and version.
    path: &'f str,
    mount: &'f str,
    version: u8,
    parent: Option<usize>,
}

type Tree<'f> = Vec<Place<'f>>;

/// The tree's shape (dirs_under is sorted: parents before children).
fn skeleton<'f>(files: &'f Files, mounts: &'f [(String, u8)]) -> (Tree<'f>, Notes) {
    let (mut tree, mut notes) = (Tree::new(), Notes::new());
    for (mount, version) in mounts {
        let dirs = files.dirs_under(mount);
        tree.reserve(dirs.len());
        // Bundle directory -> its cgroup's index.
        let mut index: FastMap<&str, usize> =
            FastMap::with_capacity_and_hasher(dirs.len(), Default::default());
        for (dir, files) in dirs {
            let rel = &dir[mount.len()..];
            let path = if rel.is_empty() { "/" } else { rel };
            let parent = match dir.rsplit_once('/') {
                Some((p, _)) if !rel.is_empty() => index.get(p).copied(),
                _ => None,
            };
            if path != "/" && parent.is_none() {
                notes.push((
                    Level::Warning,
                    dir.to_string(),
                    "cgroup without its parent in the bundle; treated as a root".into(),
                ));
            }
            index.insert(dir, tree.len());
            tree.push(Place {
                dir,
                files,
                path,
                mount,
                version: *version,
                parent,
            });
        }
    }
    (tree, notes)
}

/// Every cgroup of the tree, read from its directory in parallel and named, with the notes
/// about its files. Unzipped straight into their vectors: a cgroup is ~1 KiB, and moving 5,000
/// of them through an intermediate vector showed in profiles.
fn read_cgroups(
    skeleton: &Tree<'_>,
    names: &k8s::Names,
    mode: CgroupMode,
) -> (Vec<Cgroup>, Links, Vec<Notes>) {
    // `/` and the mount point, one string per hierarchy for all its cgroups.
    let name = |mount: &str| -> Arc<str> { ["/", mount].concat().into() };
    let mut hierarchies: Vec<(&str, Arc<str>)> = Vec::new();
    for &Place { mount, .. } in skeleton {
        if !hierarchies.iter().any(|(m, _)| *m == mount) {
            hierarchies.push((mount, name(mount)));
        }
    }
    let (mut cgroups, notes): (Vec<Cgroup>, Vec<Notes>) = (0..skeleton.len())
        .into_par_iter()
        .map_init(flat::Layouts::default, |layouts, i| {
            // The next directory's files are loaded while this one is read: directories
            // come sorted by path, not in the order their bytes are in the bundle.
            if let Some(next) = skeleton.get(i + 1) {
                next.files.prefetch();
            }
            let p = &skeleton[i];
            let mut d = dirs::cgroup(p.dir, p.files.iter(), layouts);
            let notes = std::mem::take(&mut d.notes);
            let at = Where {
                path: p.path,
                hierarchy: hierarchies
                    .iter()
                    .find_map(|(m, h)| (*m == p.mount).then(|| Arc::clone(h)))
                    .unwrap_or_else(|| name(p.mount)),
                version: p.version,
                parent: p.parent,
            };
            (read_cgroup(at, d, names), notes)
        })
        .unzip();
    // One pass over the cgroups (~1.3 KiB each) for everything later steps need of all of them.
    let mut links = Links {
        parents: Vec::with_capacity(cgroups.len()),
        usage: Vec::with_capacity(cgroups.len()),
        listed: Vec::with_capacity(cgroups.len()),
        by_pid: FastMap::default(),
        memory_cgroups: 0,
    };
    for i in 0..cgroups.len() {
        let c = &cgroups[i];
        links.parents.push(c.parent);
        links.usage.push(c.usage_bytes);
        links.listed.push(c.pids.len() as u64);
        if c.hierarchy_is_memory(mode) {
            links.memory_cgroups += 1;
            for &pid in &c.pids {
                links.by_pid.insert(pid, i);
            }
        }
        if let Some(p) = c.parent {
            cgroups[p].children.push(i);
        }
    }
    (cgroups, links, notes)
}

/// What is known of every cgroup once they are read, kept compact.
struct Links {
    parents: Vec<Option<usize>>,
    usage: Vec<Option<u64>>,
    /// PIDs in each cgroup's own `cgroup.procs`.
    listed: Vec<u64>,
    /// PID -> the memory cgroup whose `cgroup.procs` lists it (the last one, if several do).
    by_pid: FastMap<u32, usize>,
    /// Cgroups of the memory hierarchy.
    memory_cgroups: u64,
}

/// Where a cgroup is: its path in its hierarchy, the hierarchy.
struct Where<'a> {
    path: &'a str,
    /// `/` and the mount point: the cgroup's `hierarchy`.
    hierarchy: Arc<str>,
    version: u8,
    parent: Option<usize>,
}

fn read_cgroup(at: Where, d: dirs::CgroupDir, names: &k8s::Names) -> Cgroup {
    let Where {
        path,
        hierarchy,
        version,
        parent,
    } = at;
    let v = usize::from(version == 2);
    let (usage, limit, peak) = (d.usage[v], d.limit[v], d.peak[v]);
    let v1 = |x: Option<u64>| x.filter(|_| version != 2);
    let (failcnt, kmem, tcp, memsw) = (v1(d.failcnt), v1(d.kmem), v1(d.tcp), v1(d.memsw));
    let high = d.high.filter(|_| version == 2);
    let stat = d.stat;
    let swap = if version == 2 {
        d.swap_current
    } else {
        bridge::Stat::new(&stat).v1(bridge::K::total_swap, bridge::K::swap)
    };
    // The hierarchy root, not merely a cgroup whose parent the bundle lacks.
    let is_root = path == "/";
    let inputs = bridge::Inputs {
        version,
        is_root,
        stat: &stat,
        usage,
        peak,
        failcnt,
        kmem,
        tcp,
        swap_current: swap,
    };
    let cadvisor = bridge::cadvisor(&inputs);
    let bridge = bridge::bridge(&inputs);
    Cgroup {
        path: path.into(),
        hierarchy,
        version,
        depth: if path == "/" {
            0
        } else {
            path.bytes().filter(|&b| b == b'/').count()
        },
        parent,
        children: Vec::new(),
        k8s: names.identify(path),
        usage_bytes: usage.or_else(|| bridge.as_ref().map(|b| b.usage_bytes)),
        limit,
        effective_limit: None,
        limited_by: None,
        high,
        peak_bytes: peak,
        failcnt,
        kmem_bytes: kmem,
        tcp_bytes: tcp,
        memsw_bytes: memsw,
        swap_bytes: swap,
        pressure: d.pressure.map(Box::new),
        stat,
        events: d.events,
        events_local: d.events_local,
        oom_control: d.oom_control,
        cgroup_stat: d.cgroup_stat,
        pids: d.pids,
        procs: ProcSum::default(),
        top_process: None,
        cadvisor,
        bridge,
        gap_vs_rss_bytes: None,
        gap_vs_anon_bytes: None,
        usage_ratio: None,
        working_set_ratio: None,
        own_usage_bytes: None,
        trend: None,
    }
}

fn read_processes(files: &Files) -> (Vec<RawProcess<'_>>, Notes) {
    let under = files.dirs_under("proc");
    let read: Vec<dirs::ProcessDir> = (0..under.len())
        .into_par_iter()
        .map_init(dirs::Recalled::default, |recalled, i| {
            // As for cgroups (`read_cgroups`): the next directory's files load meanwhile.
            if let Some((_, next)) = under.get(i + 1) {
                next.prefetch();
            }
            let (dir, files) = &under[i];
            dirs::process(dir, files.iter(), recalled)
        })
        .collect();
    let (mut out, mut all) = (Vec::with_capacity(read.len()), Notes::new());
    for p in read {
        all.extend(p.notes);
        out.extend(p.process);
    }
    (out, all)
}

/// Puts each process in its memory cgroup (`cgroup.procs` first, `/proc/PID/cgroup` else) and
/// sums them up the tree: each cgroup's process sums and top process, for [`derive`] to store.
fn attach_processes(
    cgroups: &mut [Cgroup],
    procs: &mut [RawProcess<'_>],
    links: &Links,
    mode: CgroupMode,
    source: &str,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<ProcSum>, Vec<Option<usize>>) {
    // Needed only for processes that no `cgroup.procs` lists: built on first use.
    let mut by_path: Option<FastMap<&str, usize>> = None;
    let by_pid = &links.by_pid;
    let mut missing = 0usize;
    let mut example = String::new();
    for (p, _, cg) in procs.iter_mut() {
        // `/proc/PID/cgroup` is read only when no `cgroup.procs` lists the process.
        let listed = by_pid.get(&p.pid).copied();
        let claimed = match listed {
            Some(_) => None,
            None => cg.and_then(|t| dirs::claimed_cgroup(t, mode == CgroupMode::V2)),
        };
        let idx = listed.or_else(|| {
            let by_path = by_path.get_or_insert_with(|| {
                cgroups
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.hierarchy_is_memory(mode))
                    .map(|(i, c)| (&*c.path, i))
                    .collect()
            });
            claimed.as_deref().and_then(|c| by_path.get(c).copied())
        });
        match idx {
            Some(i) => {
                p.cgroup = Some(Arc::clone(&cgroups[i].path));
                p.cgroup_index = Some(i);
            }
            None => {
                if let Some(c) = claimed {
                    missing += 1;
                    if example.is_empty() {
                        example = format!("PID {} claims {c}", p.pid);
                    }
                    p.cgroup = Some(c.into());
                }
            }
        }
    }
    if missing > 0 {
        diags.push(Diagnostic {
            level: Level::Warning,
            bundle: source.to_string(),
            file: None,
            message: format!("{missing} process(es) are in cgroups the bundle does not hold ({example}); they count for no cgroup"),
        });
    }
    subtree_sums(&links.parents, &links.listed, procs)
}

/// Each cgroup's process sums and top process (the most anonymous memory; the first listed
/// among equals), counting every process in its cgroup and every ancestor. Summed bottom-up
/// (a parent comes before its children), in compact arrays: walking up from each process
/// touched a ~1 KiB cgroup per level.
fn subtree_sums(
    parents: &[Option<usize>],
    listed: &[u64],
    procs: &[RawProcess<'_>],
) -> (Vec<ProcSum>, Vec<Option<usize>>) {
    let mut sums: Vec<ProcSum> = listed
        .iter()
        .map(|&listed| ProcSum {
            listed,
            ..ProcSum::default()
        })
        .collect();
    let mut tops: Vec<Option<usize>> = vec![None; parents.len()];
    let anon = |j: usize| procs[j].0.rss_anon.unwrap_or(0);
    let better = |a: Option<usize>, b: Option<usize>| match (a, b) {
        (Some(x), Some(y)) if anon(y) > anon(x) || (anon(y) == anon(x) && y < x) => b,
        (None, _) => b,
        _ => a,
    };
    for (pi, (p, _, _)) in procs.iter().enumerate() {
        if let Some(i) = p.cgroup_index {
            sums[i].add(p);
            tops[i] = better(tops[i], Some(pi));
        }
    }
    for i in (0..parents.len()).rev() {
        if let Some(parent) = parents[i] {
            let child = std::mem::take(&mut sums[i]);
            sums[parent].merge(&child);
            sums[i] = child;
            tops[parent] = better(tops[parent], tops[i]);
        }
    }
    (sums, tops)
}

impl ProcSum {
    fn add(&mut self, p: &Process) {
        let add = |x: &mut u64, v: Option<u64>| *x += v.unwrap_or(0);
        self.count += 1;
        add(&mut self.rss, p.rss);
        add(&mut self.rss_anon, p.rss_anon);
        add(&mut self.rss_file, p.rss_file);
        add(&mut self.rss_shmem, p.rss_shmem);
        add(&mut self.pss, p.pss);
        add(&mut self.pss_anon, p.pss_anon);
        add(&mut self.pss_file, p.pss_file);
        add(&mut self.pss_shmem, p.pss_shmem);
        add(&mut self.swap, p.swap);
        add(&mut self.locked, p.locked);
        add(&mut self.lazyfree, p.lazyfree);
        add(&mut self.anon_huge, p.anon_huge);
        add(&mut self.threads, p.threads);
        add(&mut self.pagetables, p.pagetables);
    }

    fn merge(&mut self, o: &ProcSum) {
        self.count += o.count;
        self.listed += o.listed;
        self.rss += o.rss;
        self.rss_anon += o.rss_anon;
        self.rss_file += o.rss_file;
        self.rss_shmem += o.rss_shmem;
        self.pss += o.pss;
        self.pss_anon += o.pss_anon;
        self.pss_file += o.pss_file;
        self.pss_shmem += o.pss_shmem;
        self.swap += o.swap;
        self.locked += o.locked;
        self.lazyfree += o.lazyfree;
        self.anon_huge += o.anon_huge;
        self.threads += o.threads;
        self.pagetables += o.pagetables;
    }
}

/// Effective limits (top-down), gaps and ratios, and the bridges' fuzz for the node's CPUs;
/// stores the process sums. One pass over the cgroups.
fn derive(
    cgroups: &mut [Cgroup],
    links: &Links,
    (sums, tops): (Vec<ProcSum>, Vec<Option<usize>>),
    cpus: u64,
) {
    // The children's usage, summed from the compact arrays (a cgroup comes before its
    // children, so it could not be read from them in the pass below).
    let mut kids: Vec<Option<u64>> = vec![None; cgroups.len()];
    for (parent, usage) in links.parents.iter().zip(&links.usage) {
        if let Some(p) = *parent {
            *kids[p].get_or_insert(0) += usage.unwrap_or(0);
        }
    }
    for (i, (sum, top)) in sums.into_iter().zip(tops).enumerate() {
        let (parent_eff, parent_by) = match cgroups[i].parent {
            Some(p) => (cgroups[p].effective_limit, cgroups[p].limited_by.clone()),
            None => (None, None),
        };
        let own = cgroups[i].limit;
        let (eff, by) = match (own, parent_eff) {
            (Some(Limit::Bytes(o)), Some(Limit::Bytes(p))) if p < o => {
                (Some(Limit::Bytes(p)), parent_by)
            }
            (Some(Limit::Bytes(o)), _) => (Some(Limit::Bytes(o)), Some(cgroups[i].path.clone())),
            (_, Some(Limit::Bytes(p))) => (Some(Limit::Bytes(p)), parent_by),
            (o, p) => (o.or(p), None),
        };
        let c = &mut cgroups[i];
        c.procs = sum;
        c.top_process = top;
        c.effective_limit = eff;
        c.limited_by = by;
        if let Some(b) = &mut c.bridge {
            b.settle(cpus);
        }
        if let Some(u) = c.usage_bytes {
            if c.procs.count > 0 {
                c.gap_vs_rss_bytes = Some(u as i64 - c.procs.rss as i64);
            }
            c.gap_vs_anon_bytes = Some(u as i64 - c.cadvisor.rss as i64);
            if let Some(l) = eff.and_then(Limit::bytes).filter(|l| *l > 0) {
                c.usage_ratio = Some(u as f64 / l as f64);
                c.working_set_ratio = Some(c.cadvisor.working_set_bytes as f64 / l as f64);
            }
            if let Some(k) = kids[i] {
                c.own_usage_bytes = Some(u as i64 - k as i64);
            }
        }
    }
}

fn dying(node: &Node, cgroups: &[Cgroup], mode: CgroupMode) -> Option<u64> {
    if mode == CgroupMode::V2 {
        let root = cgroups
            .iter()
            .find(|c| c.version == 2 && c.parent.is_none())?;
        return root.cgroup_stat.get("nr_dying_descendants");
    }
    // v1: /proc/cgroups counts live and dying memory cgroups alike.
    node.memory_cgroups_kernel
        .map(|k| k.saturating_sub(node.memory_cgroups_live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_say_namespace_pod_and_container_else_the_path() {
        let at = |path| Where {
            path,
            hierarchy: "/sys/fs/cgroup/memory".into(),
            version: 1,
            parent: None,
        };
        let mut c = read_cgroup(
            at("/a/b"),
            dirs::CgroupDir::default(),
            &k8s::Names::default(),
        );
        assert_eq!(c.display_name(), "/a/b");
        let pod = K8s {
            level: "pod",
            namespace: Some("ns".into()),
            pod: Some("web-1".into()),
            ..K8s::default()
        };
        c.k8s = Some(pod.clone());
        assert_eq!(c.display_name(), "ns/web-1");
        let container = |name: Option<&str>, id: Option<&str>| K8s {
            level: "container",
            container: name.map(Into::into),
            container_id: id.map(Into::into),
            ..pod.clone()
        };
        c.k8s = Some(container(Some("app"), Some("0123456789abcdef")));
        assert_eq!(c.display_name(), "ns/web-1 [app]");
        c.k8s = Some(container(None, Some("0123456789abcdef")));
        assert_eq!(c.display_name(), "ns/web-1 [0123456789ab]");
        c.k8s = Some(container(None, Some("short")));
        assert_eq!(c.display_name(), "ns/web-1 [short]");
        // An ID whose twelfth byte is inside a character is kept whole, not cut (or panicked on).
        c.k8s = Some(container(None, Some("01234567890é-x")));
        assert_eq!(c.display_name(), "ns/web-1 [01234567890é-x]");
        c.k8s = Some(K8s {
            pod: None,
            ..container(Some("app"), None)
        });
        assert_eq!(c.display_name(), "/a/b");
    }

    #[test]
    fn sums_count_each_process_in_every_ancestor_and_ties_go_to_the_first() {
        // 0 <- 1 <- 3, 0 <- 2
        let parents = [None, Some(0), Some(0), Some(1)];
        let proc = |cgroup: Option<usize>, anon: u64| {
            let p = Process {
                cgroup_index: cgroup,
                rss: Some(anon + 1),
                rss_anon: Some(anon),
                ..Process::default()
            };
            (p, None, Default::default())
        };
        let procs = [
            proc(Some(3), 5),
            proc(Some(2), 7),
            proc(Some(1), 7),
            proc(None, 100),
            proc(Some(3), 7),
        ];
        let (sums, tops) = subtree_sums(&parents, &[1, 4, 2, 5], &procs);
        let counts: Vec<u64> = sums.iter().map(|s| s.count).collect();
        assert_eq!(counts, [4, 3, 1, 2]);
        let listed: Vec<u64> = sums.iter().map(|s| s.listed).collect();
        assert_eq!(listed, [12, 9, 2, 5]);
        assert_eq!(sums[0].rss, 6 + 8 + 8 + 8);
        assert_eq!(sums[1].rss_anon, 5 + 7 + 7);
        // Ties at 7: the first listed process wins wherever both count.
        assert_eq!(tops, [Some(1), Some(2), Some(1), Some(4)]);
    }

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.18.44-fc-v782", 5, 0));
        assert!(kernel_at_least("5.0.0", 5, 0));
        assert!(!kernel_at_least("4.15.0-112-generic", 5, 0));
        assert!(!kernel_at_least("", 5, 0));
    }
}
