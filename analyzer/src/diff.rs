//! `memgap diff OLD NEW`: two analyses of the same node compared: what grew or shrank in each
//! part of the node's breakdown and of each cgroup's bridge (cgroups matched by path), at what
//! rate per hour, which cgroups appeared or vanished, and which findings appeared or resolved.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::{Cgroup, Model};
use crate::rules::{Finding, Severity};
use crate::Analysis;

/// Changes smaller than this are not listed per cgroup.
pub const MIN_CHANGE: u64 = 1 << 20;
/// Cgroups listed, largest change first.
pub const MAX_CGROUPS: usize = 200;

#[derive(Debug, Serialize)]
pub struct Diff {
    pub memgap_version: &'static str,
    pub old: Side,
    pub new: Side,
    /// Hours between the collections, when both times are known and increase.
    pub hours: Option<f64>,
    pub same_host: bool,
    pub node: Vec<Delta>,
    pub cgroups: Vec<CgroupDelta>,
    pub cgroups_more: usize,
    pub appeared: Vec<Named>,
    pub vanished: Vec<Named>,
    pub findings_new: Vec<FindingRef>,
    pub findings_resolved: Vec<FindingRef>,
}

#[derive(Debug, Serialize)]
pub struct Side {
    pub source: String,
    pub host: String,
    pub collected_at: String,
    pub kernel: String,
    /// Every entry of the bundle was read: when not, the cgroups its lost entries held look
    /// vanished (or appeared) and their findings resolved (or new).
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    pub key: String,
    pub label: String,
    pub old: u64,
    pub new: u64,
    pub change: i64,
    pub per_hour: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct CgroupDelta {
    pub path: String,
    pub name: String,
    pub usage: Delta,
    /// Parts that changed by at least [`MIN_CHANGE`], largest change first.
    pub parts: Vec<Delta>,
}

#[derive(Debug, Serialize)]
pub struct Named {
    pub path: String,
    pub name: String,
    pub usage_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct FindingRef {
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub subject: String,
    pub bytes: Option<u64>,
    pub summary: String,
}

fn side(a: &Analysis) -> Side {
    let b = &a.model.bundle;
    Side {
        source: b.source.clone(),
        host: b.hostname.clone(),
        collected_at: b.collected_at.clone(),
        kernel: b.kernel_release.clone(),
        complete: b.complete,
    }
}

fn hours_between(old: &str, new: &str) -> Option<f64> {
    let o = humantime::parse_rfc3339_weak(old).ok()?;
    let n = humantime::parse_rfc3339_weak(new).ok()?;
    let d = n.duration_since(o).ok()?.as_secs_f64() / 3600.0;
    (d > 0.0).then_some(d)
}

fn delta(key: &str, label: &str, old: u64, new: u64, hours: Option<f64>) -> Delta {
    let change = new as i64 - old as i64;
    Delta {
        key: key.to_string(),
        label: label.to_string(),
        old,
        new,
        change,
        per_hour: hours.map(|h| change as f64 / h),
    }
}

fn parts(c: &Cgroup) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    if let Some(b) = &c.bridge {
        for p in b.parts.iter().chain(&b.overlaps).chain(&b.beside) {
            m.entry(p.key).or_insert(p.bytes);
        }
    }
    m
}

/// Cgroups of the memory hierarchy by path.
fn by_path(m: &Model) -> BTreeMap<&str, &Cgroup> {
    let mode = m.bundle.cgroup_mode;
    m.cgroups
        .iter()
        .filter(|c| c.hierarchy_is_memory(mode))
        .map(|c| (&*c.path, c))
        .collect()
}

fn finding_key(f: &Finding) -> (String, String) {
    (
        f.rule.to_string(),
        f.cgroup_path.as_deref().unwrap_or_default().to_string(),
    )
}

fn finding_ref(f: &Finding) -> FindingRef {
    FindingRef {
        rule: f.rule.to_string(),
        title: f.title.to_string(),
        severity: f.severity,
        subject: f.subject.to_string(),
        bytes: f.bytes,
        summary: f.summary.to_string(),
    }
}

pub fn diff(old: &Analysis, new: &Analysis) -> Diff {
    let (o, n) = (&old.model, &new.model);
    let hours = hours_between(&o.bundle.collected_at, &n.bundle.collected_at);
    // The node: every breakdown key of either side.
    let ob: BTreeMap<&str, (u64, &str)> = o
        .node
        .breakdown
        .iter()
        .map(|p| (p.key, (p.bytes, p.label)))
        .collect();
    let nb: BTreeMap<&str, (u64, &str)> = n
        .node
        .breakdown
        .iter()
        .map(|p| (p.key, (p.bytes, p.label)))
        .collect();
    let keys: BTreeSet<&str> = ob.keys().chain(nb.keys()).copied().collect();
    let mut node: Vec<Delta> = keys
        .into_iter()
        .map(|k| {
            let (ov, ol) = ob.get(k).copied().unwrap_or((0, ""));
            let (nv, nl) = nb.get(k).copied().unwrap_or((0, ""));
            delta(k, if nl.is_empty() { ol } else { nl }, ov, nv, hours)
        })
        .collect();
    node.sort_by_key(|d| std::cmp::Reverse(d.change.unsigned_abs()));

    let (oc, nc) = (by_path(o), by_path(n));
    let mut cgroups = Vec::new();
    for (path, c) in &nc {
        let Some(prev) = oc.get(path) else { continue };
        let usage = delta(
            "usage",
            "usage",
            prev.usage_bytes.unwrap_or(0),
            c.usage_bytes.unwrap_or(0),
            hours,
        );
        let (op, np) = (parts(prev), parts(c));
        let keys: BTreeSet<&str> = op.keys().chain(np.keys()).copied().collect();
        let mut changed: Vec<Delta> = keys
            .into_iter()
            .map(|k| {
                delta(
                    k,
                    crate::model::bridge::label(k),
                    op.get(k).copied().unwrap_or(0),
                    np.get(k).copied().unwrap_or(0),
                    hours,
                )
            })
            .filter(|d| d.change.unsigned_abs() >= MIN_CHANGE)
            .collect();
        changed.sort_by_key(|d| std::cmp::Reverse(d.change.unsigned_abs()));
        if usage.change.unsigned_abs() >= MIN_CHANGE || !changed.is_empty() {
            cgroups.push(CgroupDelta {
                path: path.to_string(),
                name: c.display_name(),
                usage,
                parts: changed,
            });
        }
    }
    // Leaves and own charges first would hide a pod's growth behind its container's; the
    // largest change first, whatever the level, reads best.
    cgroups.sort_by(|a, b| {
        b.usage
            .change
            .unsigned_abs()
            .cmp(&a.usage.change.unsigned_abs())
            .then(a.path.cmp(&b.path))
    });
    let cgroups_more = cgroups.len().saturating_sub(MAX_CGROUPS);
    cgroups.truncate(MAX_CGROUPS);
    let named = |c: &Cgroup| Named {
        path: c.path.to_string(),
        name: c.display_name(),
        usage_bytes: c.usage_bytes.unwrap_or(0),
    };
    let appeared = nc
        .iter()
        .filter(|(p, _)| !oc.contains_key(*p))
        .map(|(_, c)| named(c))
        .collect();
    let vanished = oc
        .iter()
        .filter(|(p, _)| !nc.contains_key(*p))
        .map(|(_, c)| named(c))
        .collect();
    let ok: BTreeSet<(String, String)> = old.findings.iter().map(finding_key).collect();
    let nk: BTreeSet<(String, String)> = new.findings.iter().map(finding_key).collect();
    Diff {
        memgap_version: env!("CARGO_PKG_VERSION"),
        old: side(old),
        new: side(new),
        hours,
        same_host: o.bundle.hostname == n.bundle.hostname,
        node,
        cgroups,
        cgroups_more,
        appeared,
        vanished,
        findings_new: new
            .findings
            .iter()
            .filter(|f| !ok.contains(&finding_key(f)))
            .map(finding_ref)
            .collect(),
        findings_resolved: old
            .findings
            .iter()
            .filter(|f| !nk.contains(&finding_key(f)))
            .map(finding_ref)
            .collect(),
    }
}

/// The width of a column of labels: the longest one's (some are long: "other kernel (drivers,
/// vmalloc, not itemized)").
fn label_width<'a>(rows: impl Iterator<Item = &'a Delta>) -> usize {
    rows.map(|x| x.label.chars().count()).max().unwrap_or(0)
}

/// The terminal summary of a diff.
pub fn text(d: &Diff) -> String {
    use crate::format::{bytes, signed_bytes};
    use std::fmt::Write as _;
    let mut o = String::new();
    let rate = |x: &Delta| {
        x.per_hour
            .map(|r| format!(" ({}/h)", signed_bytes(r as i64)))
            .unwrap_or_default()
    };
    let _ = writeln!(
        o,
        "memgap diff: {} ({}) -> {} ({}){}",
        d.old.host,
        d.old.collected_at,
        d.new.host,
        d.new.collected_at,
        d.hours
            .map(|h| format!(", {h:.2} h apart"))
            .unwrap_or_default()
    );
    if !d.same_host {
        let _ = writeln!(o, "warning: the bundles come from different hosts");
    }
    let sides = [
        ("old", &d.old, "appeared", "new"),
        ("new", &d.new, "vanished", "resolved"),
    ];
    for (which, side, cgroups, findings) in sides {
        if !side.complete {
            let _ = writeln!(
                o,
                "warning: the {which} bundle was read in part: cgroups it lost show as \
                 {cgroups}, their findings as {findings}"
            );
        }
    }
    let _ = writeln!(o, "node:");
    let node: Vec<&Delta> = d.node.iter().filter(|x| x.change != 0).take(8).collect();
    let w = label_width(node.iter().copied());
    for x in node {
        let _ = writeln!(
            o,
            "  {:<w$} {} -> {}: {}{}",
            x.label,
            bytes(x.old),
            bytes(x.new),
            signed_bytes(x.change),
            rate(x)
        );
    }
    if !d.cgroups.is_empty() {
        let _ = writeln!(o, "cgroups, largest change first:");
    }
    let cgroups = &d.cgroups[..d.cgroups.len().min(15)];
    let w = label_width(cgroups.iter().flat_map(|c| c.parts.iter().take(4)));
    for c in cgroups {
        let _ = writeln!(
            o,
            "  {}: usage {}{}",
            c.name,
            signed_bytes(c.usage.change),
            rate(&c.usage)
        );
        for p in c.parts.iter().take(4) {
            let _ = writeln!(
                o,
                "    {:<w$} {}{}",
                p.label,
                signed_bytes(p.change),
                rate(p)
            );
        }
    }
    let _ = writeln!(
        o,
        "{} cgroup(s) appeared, {} vanished; {} finding(s) new, {} resolved",
        d.appeared.len(),
        d.vanished.len(),
        d.findings_new.len(),
        d.findings_resolved.len()
    );
    for f in &d.findings_new {
        let _ = writeln!(
            o,
            "  new {:<8} {}: {}",
            f.severity.name(),
            f.subject,
            f.summary
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_aligns_labels_of_any_length() {
        let side = || Side {
            source: "b".into(),
            host: "h".into(),
            collected_at: String::new(),
            kernel: String::new(),
            complete: true,
        };
        let long = crate::model::bridge::label("kernel");
        let node = vec![
            delta("free", "free", 2 << 30, 1 << 30, Some(1.0)),
            delta("kernel", long, 1 << 20, 3 << 20, Some(1.0)),
        ];
        let parts = node.clone();
        let d = Diff {
            memgap_version: "",
            old: side(),
            new: side(),
            hours: Some(1.0),
            same_host: true,
            cgroups: vec![CgroupDelta {
                path: "/a".into(),
                name: "/a".into(),
                usage: delta("usage", "usage", 0, 1 << 20, Some(1.0)),
                parts,
            }],
            node,
            cgroups_more: 0,
            appeared: Vec::new(),
            vanished: Vec::new(),
            findings_new: Vec::new(),
            findings_resolved: Vec::new(),
        };
        assert!(long.len() > 40, "a label longer than the old fixed column");
        let t = text(&d);
        let node_rows = t.lines().skip(1).filter(|l| l.contains(" -> "));
        let part_rows = t.lines().filter(|l| l.starts_with("    "));
        for (indent, rows) in [(2, node_rows.collect::<Vec<_>>()), (4, part_rows.collect())] {
            assert_eq!(rows.len(), 2, "{t}");
            // Every row's value starts one space after the longest label.
            let at = indent + long.len();
            for r in rows {
                assert_eq!(
                    (&r[at..at + 1], &r[at + 1..at + 2] != " "),
                    (" ", true),
                    "{t}"
                );
            }
        }
    }
}
