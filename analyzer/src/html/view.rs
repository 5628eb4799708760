//! What the report page shows, computed from an analysis: which cgroups get a section, the
//! geometry of the charts, the rows of the tables. Templates only lay it out and format it.

use serde::Serialize;

use crate::model::{Cgroup, Model, Part, Process};
use crate::parse::Limit;
use crate::reader::{Diagnostic, EntryInfo};
use crate::rules::{Finding, Severity};
use crate::Analysis;

/// Cgroups that get a section of their own; the others are rows of a table.
pub const MAX_SECTIONS: usize = 40;
/// Rows of the table of the other cgroups (the JSON output has them all).
pub const MAX_TABLE_ROWS: usize = 1000;
/// Processes listed per section.
pub const MAX_PROCESSES: usize = 15;
/// Parts smaller than this share of usage are merged in the bridge chart.
const SMALL_PART: f64 = 0.005;

#[derive(Debug, Serialize)]
pub struct ReportView<'a> {
    pub memgap_version: &'static str,
    pub bundle: &'a crate::model::BundleInfo,
    pub node: NodeView<'a>,
    pub node_findings: Vec<&'a Finding>,
    /// Every finding, most severe and largest first.
    pub findings: Vec<FindingRow<'a>>,
    pub counts: Counts,
    pub sections: Vec<Section<'a>>,
    pub table: Vec<Row<'a>>,
    /// Cgroups holding memory that are in neither the sections nor the table.
    pub table_more: usize,
    pub diagnostics: &'a [Diagnostic],
    pub files: FilesView<'a>,
}

#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub critical: usize,
    pub warning: usize,
    pub info: usize,
    pub cgroups: usize,
    pub processes: usize,
}

#[derive(Debug, Serialize)]
pub struct FindingRow<'a> {
    pub finding: &'a Finding,
    /// `#cg-N` of the cgroup's section or table row, `#node` for node findings.
    pub anchor: String,
}

#[derive(Debug, Serialize)]
pub struct NodeView<'a> {
    pub mem_total_bytes: u64,
    pub mem_available_bytes: Option<u64>,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    /// The breakdown as one stacked bar (x and width in thousandths).
    pub bar: Vec<Segment>,
    pub slab_top: Vec<&'a crate::parse::slabinfo::SlabCache>,
    pub dentry: Option<crate::parse::misc::DentryState>,
    pub negative_dentry_bytes: Option<u64>,
    pub shm_segments: Vec<&'a crate::parse::sysvipc::ShmSegment>,
    pub shm_segments_more: usize,
    pub shm_orphaned_bytes: u64,
    pub tmpfs: Vec<&'a memgap_collector::bundle::TmpfsUsage>,
    pub thp_enabled: Option<&'a str>,
    pub psi: Option<&'a crate::parse::nested::Psi>,
    pub memory_cgroups_live: u64,
    pub dying_cgroups: Option<u64>,
    pub cpus: u64,
    pub oom_events: &'a [crate::parse::oom::OomEvent],
    pub trend: Vec<Spark>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub key: &'static str,
    pub label: &'static str,
    pub bytes: u64,
    pub share: f64,
    pub x: u64,
    pub w: u64,
}

#[derive(Debug, Serialize)]
pub struct Section<'a> {
    pub anchor: String,
    pub index: usize,
    pub name: String,
    pub cgroup: &'a Cgroup,
    pub limit_bytes: Option<u64>,
    pub effective_limit_bytes: Option<u64>,
    pub worst: Option<Severity>,
    pub findings: Vec<&'a Finding>,
    pub steps: Vec<Step>,
    pub cadvisor: Vec<Metric>,
    pub processes: Vec<&'a Process>,
    pub processes_more: usize,
    /// One small chart per part that changed across the snapshots.
    pub trend: Vec<Spark>,
}

/// A sparkline: one part's values across the snapshots of a multi-sample bundle.
#[derive(Debug, Serialize)]
pub struct Spark {
    pub key: String,
    pub label: String,
    /// SVG polyline points in a 200 x 40 box.
    pub points: String,
    pub first: u64,
    pub last: u64,
    pub per_hour: f64,
    pub steady: bool,
}

/// Sparklines of a trend, for the keys given, skipping parts that are zero throughout.
pub fn sparks(t: &crate::model::trend::Trend, keys: &[&str]) -> Vec<Spark> {
    let span = t.at_s.last().copied().unwrap_or(0.0).max(1e-9);
    let mut out = Vec::new();
    for key in keys {
        let Some(series) = t.series.get(*key) else {
            continue;
        };
        let pts: Vec<(f64, u64)> = t
            .at_s
            .iter()
            .zip(series)
            .filter_map(|(x, y)| y.map(|y| (*x, y)))
            .collect();
        if pts.len() < 2 || pts.iter().all(|p| p.1 == 0) {
            continue;
        }
        let lo = pts.iter().map(|p| p.1).min().unwrap_or(0) as f64;
        let hi = pts.iter().map(|p| p.1).max().unwrap_or(0) as f64;
        let points = pts
            .iter()
            .map(|(x, y)| {
                let fy = if hi > lo {
                    (*y as f64 - lo) / (hi - lo)
                } else {
                    0.5
                };
                format!("{:.1},{:.1}", x / span * 200.0, 38.0 - fy * 36.0)
            })
            .collect::<Vec<_>>()
            .join(" ");
        let label = match *key {
            "usage" => "usage".to_string(),
            "kernel_total" => "kernel memory".to_string(),
            "slab_total" => "slab".to_string(),
            "negative_dentries" => "negative dentries".to_string(),
            k => crate::model::bridge::label(k).to_string(),
        };
        out.push(Spark {
            key: key.to_string(),
            label,
            points,
            first: pts[0].1,
            last: pts[pts.len() - 1].1,
            per_hour: t.per_hour.get(*key).copied().unwrap_or(0.0),
            steady: t.steady.get(*key).copied().unwrap_or(false),
        });
    }
    out
}

const CGROUP_TREND_KEYS: &[&str] = &[
    "usage",
    "anon",
    "shmem",
    "active_file",
    "inactive_file",
    "file_dirty",
    "kernel_total",
    "sock",
    "swap",
];

const NODE_TREND_KEYS: &[&str] = &[
    "anon",
    "page_cache",
    "shmem",
    "slab_total",
    "negative_dentries",
    "free",
];

/// One step of the usage-to-RSS waterfall, from usage down to anonymous memory.
#[derive(Debug, Serialize)]
pub struct Step {
    pub key: &'static str,
    pub label: String,
    pub bytes: u64,
    /// `usage`, `part`, `remainder` or `anon`.
    pub kind: &'static str,
    /// Position and width in thousandths of the largest bar.
    pub x: u64,
    pub w: u64,
}

/// A cAdvisor metric next to the kernel file it comes from.
#[derive(Debug, Serialize)]
pub struct Metric {
    pub name: &'static str,
    pub bytes: u64,
    pub source: String,
    /// Glossary anchor.
    pub term: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Row<'a> {
    pub anchor: String,
    pub name: String,
    pub cgroup: &'a Cgroup,
    pub limit_bytes: Option<u64>,
    pub headline: Option<&'a Finding>,
    pub findings: usize,
    /// The index of the section, when the cgroup has one.
    pub section: bool,
}

#[derive(Debug, Serialize)]
pub struct FilesView<'a> {
    /// Node-level files (one entry each), with their sizes.
    pub node: Vec<&'a EntryInfo>,
    pub cgroup_dirs: usize,
    pub process_dirs: usize,
    pub entries: usize,
    pub bytes: u64,
    pub missed: &'a [memgap_collector::bundle::Missed],
    pub missed_not_listed: u64,
}

fn limit_bytes(l: Option<Limit>) -> Option<u64> {
    l.and_then(Limit::bytes)
}

pub fn build(a: &Analysis) -> ReportView<'_> {
    let m: &Model = &a.model;
    let findings = crate::rules::engine::by_importance(&a.findings);
    let mut counts = Counts {
        cgroups: m.cgroups.len(),
        processes: m.processes.len(),
        ..Default::default()
    };
    for f in &a.findings {
        match f.severity {
            Severity::Critical => counts.critical += 1,
            Severity::Warning => counts.warning += 1,
            Severity::Info => counts.info += 1,
        }
    }
    // Cgroups with findings, most severe then largest headline first, get sections.
    let all: Vec<&Finding> = a.findings.iter().collect();
    let ranked = crate::output::ranked_cgroups(&all);
    // A section explains something: a warning, or a cause of at least a tenth of usage.
    let explains = |i: usize, fs: &Vec<&Finding>| {
        let usage = m.cgroups[i].usage_bytes.unwrap_or(0);
        fs.iter().any(|f| {
            f.severity >= Severity::Warning || f.bytes.is_some_and(|b| b * 10 >= usage && b > 0)
        })
    };
    let mut sections = Vec::new();
    for (i, fs) in &ranked {
        if sections.len() == MAX_SECTIONS {
            break;
        }
        if explains(*i, fs) {
            sections.push(section(m, *i, fs.clone()));
        }
    }
    let in_section: std::collections::HashSet<usize> = sections.iter().map(|s| s.index).collect();
    let finding_count = |i: usize| {
        a.findings
            .iter()
            .filter(|f| f.cgroup_index == Some(i))
            .count()
    };
    let mut rows: Vec<Row> = m
        .cgroups
        .iter()
        .enumerate()
        .filter(|(i, c)| (c.holds_own() || in_section.contains(i)) && c.bridge.is_some())
        .map(|(i, c)| Row {
            anchor: format!("cg-{i}"),
            name: c.display_name(),
            cgroup: c,
            limit_bytes: limit_bytes(c.effective_limit),
            headline: a.headline(i),
            findings: finding_count(i),
            section: in_section.contains(&i),
        })
        .collect();
    rows.sort_by(|x, y| {
        y.cgroup
            .usage_bytes
            .cmp(&x.cgroup.usage_bytes)
            .then(x.anchor.cmp(&y.anchor))
    });
    let table_more = rows.len().saturating_sub(MAX_TABLE_ROWS);
    rows.truncate(MAX_TABLE_ROWS);
    let anchor_of = |f: &Finding| match f.cgroup_index {
        Some(i) => format!("#cg-{i}"),
        None => "#node".into(),
    };
    ReportView {
        memgap_version: env!("CARGO_PKG_VERSION"),
        bundle: &m.bundle,
        node: node_view(m),
        node_findings: a
            .findings
            .iter()
            .filter(|f| f.cgroup_index.is_none())
            .collect(),
        findings: findings
            .into_iter()
            .map(|f| FindingRow {
                anchor: anchor_of(f),
                finding: f,
            })
            .collect(),
        counts,
        sections,
        table: rows,
        table_more,
        diagnostics: &a.diagnostics,
        files: files_view(a),
    }
}

fn node_view(m: &Model) -> NodeView<'_> {
    let n = &m.node;
    let total = n.mem_total_bytes.max(1);
    let mut x = 0;
    let bar = n
        .breakdown
        .iter()
        .map(|p| {
            let w = p.bytes * 1000 / total;
            let s = Segment {
                key: p.key,
                label: p.label,
                bytes: p.bytes,
                share: p.bytes as f64 / total as f64,
                x,
                w,
            };
            x += w;
            s
        })
        .collect();
    let mut shm: Vec<&crate::parse::sysvipc::ShmSegment> = n.shm_segments.iter().collect();
    shm.sort_by_key(|s| (s.nattch != 0, std::cmp::Reverse(s.size)));
    let shm_more = shm.len().saturating_sub(20);
    shm.truncate(20);
    let mut tmpfs: Vec<&memgap_collector::bundle::TmpfsUsage> = n
        .tmpfs
        .iter()
        .filter(|t| t.used_bytes.unwrap_or(0) > 0)
        .collect();
    tmpfs.sort_by_key(|t| std::cmp::Reverse(t.used_bytes));
    tmpfs.truncate(20);
    NodeView {
        mem_total_bytes: n.mem_total_bytes,
        mem_available_bytes: n.mem_available_bytes,
        swap_total_bytes: n.swap_total_bytes,
        swap_used_bytes: n.swap_used_bytes,
        bar,
        slab_top: n.slab_top.iter().take(10).collect(),
        dentry: n.dentry,
        negative_dentry_bytes: n.negative_dentry_bytes,
        shm_segments: shm,
        shm_segments_more: shm_more,
        shm_orphaned_bytes: n.shm_orphaned_bytes,
        tmpfs,
        thp_enabled: n.thp_enabled.as_deref(),
        psi: n.psi.as_ref(),
        memory_cgroups_live: n.memory_cgroups_live,
        dying_cgroups: n.dying_cgroups,
        cpus: n.cpus,
        oom_events: &m.oom_events,
        trend: n
            .trend
            .as_ref()
            .map(|t| sparks(t, NODE_TREND_KEYS))
            .unwrap_or_default(),
    }
}

fn section<'a>(m: &'a Model, i: usize, findings: Vec<&'a Finding>) -> Section<'a> {
    let c = &m.cgroups[i];
    let mut procs: Vec<&Process> = m
        .processes
        .iter()
        .filter(|p| in_subtree(m, p.cgroup_index, i))
        .collect();
    procs.sort_by_key(|p| (std::cmp::Reverse(p.rss.unwrap_or(0)), p.pid));
    let processes_more = procs.len().saturating_sub(MAX_PROCESSES);
    procs.truncate(MAX_PROCESSES);
    Section {
        anchor: format!("cg-{i}"),
        index: i,
        name: c.display_name(),
        cgroup: c,
        limit_bytes: limit_bytes(c.limit),
        effective_limit_bytes: limit_bytes(c.effective_limit),
        worst: findings.iter().map(|f| f.severity).max(),
        findings,
        steps: steps(c),
        cadvisor: cadvisor_rows(c),
        processes: procs,
        processes_more,
        trend: c
            .trend
            .as_ref()
            .map(|t| sparks(t, CGROUP_TREND_KEYS))
            .unwrap_or_default(),
    }
}

fn in_subtree(m: &Model, mut at: Option<usize>, root: usize) -> bool {
    while let Some(i) = at {
        if i == root {
            return true;
        }
        at = m.cgroups[i].parent;
    }
    false
}

/// The waterfall: usage, then each part taken off it (largest first), then what remains,
/// ending at anonymous memory. Parts under half a percent are merged.
fn steps(c: &Cgroup) -> Vec<Step> {
    let Some(b) = &c.bridge else {
        return Vec::new();
    };
    let usage = b.usage_bytes;
    let anon = b.part("anon");
    let sum: u64 = b.parts.iter().map(|p| p.bytes).sum();
    let scale = usage.max(sum).max(1);
    let th = |v: u64| v * 1000 / scale;
    let mut out = vec![Step {
        key: "usage",
        label: b.usage_source.to_string(),
        bytes: usage,
        kind: "usage",
        x: 0,
        w: th(usage),
    }];
    let mut cursor = usage.max(sum);
    let mut small = 0u64;
    let others: Vec<&Part> = b.parts.iter().filter(|p| p.key != "anon").collect();
    let mut take = |key: &'static str, label: String, bytes: u64, kind, out: &mut Vec<Step>| {
        let start = cursor.saturating_sub(bytes);
        out.push(Step {
            key,
            label,
            bytes,
            kind,
            x: th(start),
            w: th(bytes).max(1),
        });
        cursor = start;
    };
    for p in others {
        if (p.bytes as f64) < SMALL_PART * usage as f64 {
            small += p.bytes;
            continue;
        }
        take(p.key, p.label.to_string(), p.bytes, "part", &mut out);
    }
    if small > 0 {
        take(
            "small",
            "smaller parts, together".into(),
            small,
            "part",
            &mut out,
        );
    }
    if b.remainder_bytes > 0 {
        take(
            "remainder",
            "not attributed (kernel fuzz, in flight)".into(),
            b.remainder_bytes as u64,
            "remainder",
            &mut out,
        );
    }
    out.push(Step {
        key: "anon",
        label: crate::model::bridge::label("anon").to_string(),
        bytes: anon,
        kind: "anon",
        x: 0,
        w: th(anon),
    });
    out
}

fn cadvisor_rows(c: &Cgroup) -> Vec<Metric> {
    let v = &c.cadvisor;
    let v1 = c.version == 1;
    let pick = |a: &str, b: &str| if v1 { a.to_string() } else { b.to_string() };
    let mut rows = vec![
        Metric {
            name: "container_memory_usage_bytes",
            bytes: v.usage_bytes,
            source: pick("memory.usage_in_bytes", "memory.current"),
            term: "usage",
        },
        Metric {
            name: "container_memory_working_set_bytes",
            bytes: v.working_set_bytes,
            source: pick(
                "usage - total_inactive_file (memory.stat)",
                "usage - inactive_file (memory.stat)",
            ),
            term: "working_set",
        },
        Metric {
            name: "container_memory_rss",
            bytes: v.rss,
            source: pick("total_rss (memory.stat)", "anon (memory.stat)"),
            term: "rss",
        },
        Metric {
            name: "container_memory_cache",
            bytes: v.cache,
            source: pick("total_cache (memory.stat)", "file (memory.stat)"),
            term: "cache",
        },
        Metric {
            name: "container_memory_mapped_file",
            bytes: v.mapped_file,
            source: pick(
                "total_mapped_file (memory.stat)",
                "file_mapped (memory.stat)",
            ),
            term: "mapped_file",
        },
        Metric {
            name: "container_memory_swap",
            bytes: v.swap,
            source: pick("total_swap (memory.stat)", "memory.swap.current"),
            term: "swap",
        },
        Metric {
            name: "container_memory_max_usage_bytes",
            bytes: v.max_usage_bytes,
            source: pick("memory.max_usage_in_bytes", "memory.peak"),
            term: "usage",
        },
    ];
    if v1 {
        rows.push(Metric {
            name: "container_memory_kernel_usage",
            bytes: v.kernel_usage,
            source: "memory.kmem.usage_in_bytes".into(),
            term: "kernel",
        });
    }
    rows
}

fn files_view(a: &Analysis) -> FilesView<'_> {
    let s = &a.stored;
    FilesView {
        node: s.files.iter().take(500).collect(),
        cgroup_dirs: s.cgroup_dirs,
        process_dirs: s.process_dirs,
        entries: s.entries,
        bytes: s.bytes,
        missed: &a.model.bundle.missed,
        missed_not_listed: a.model.bundle.missed_not_listed,
    }
}
