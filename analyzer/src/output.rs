//! Renderers of the model: JSON for machines, a short text summary for terminals.

use std::fmt::Write as _;

use crate::format::{bytes, signed_bytes};
use crate::model::{Cgroup, Model};
use crate::reader::Level;
use crate::rules::{engine::at_least, Finding, Severity};
use crate::Analysis;

pub fn json(analyses: &[Analysis], min: Severity) -> serde_json::Result<Vec<u8>> {
    let docs: Vec<_> = analyses.iter().map(|a| a.json(min)).collect();
    if docs.len() == 1 {
        serde_json::to_vec_pretty(&docs[0])
    } else {
        serde_json::to_vec_pretty(&docs)
    }
}

/// Cgroups worth showing first when nothing fired: the largest gap between usage and
/// anonymous memory, among the cgroups that hold memory themselves.
pub fn top_gaps(m: &Model, n: usize) -> Vec<&Cgroup> {
    let mut v: Vec<&Cgroup> = m
        .cgroups
        .iter()
        .filter(|c| c.holds_own() && c.bridge.is_some() && c.gap_vs_anon_bytes.unwrap_or(0) > 0)
        .collect();
    v.sort_by(|a, b| {
        b.gap_vs_anon_bytes
            .cmp(&a.gap_vs_anon_bytes)
            .then_with(|| a.path.cmp(&b.path))
    });
    v.truncate(n);
    v
}

/// The terminal summary: the node, its findings, and per cgroup the headline cause.
pub fn text(a: &Analysis, top: usize, min: Severity) -> String {
    let m = &a.model;
    let mut o = String::new();
    let b = &m.bundle;
    // A bundle without its manifest (truncated) may not say when or where it was taken.
    fn known(s: &str) -> &str {
        if s.is_empty() {
            "?"
        } else {
            s
        }
    }
    let _ = writeln!(
        o,
        "memgap: {} (kernel {}, cgroup {}, collected {})",
        known(&b.hostname),
        known(&b.kernel_release),
        b.cgroup_mode.name(),
        known(&b.collected_at)
    );
    // Damage changes what every line below means: said first, detailed at the end.
    let errors = a
        .diagnostics
        .iter()
        .filter(|d| d.level == Level::Error)
        .count();
    if errors > 0 {
        let _ = writeln!(
            o,
            "  {errors} error(s) reading this bundle or applying rules, listed at the end: \
             what follows may be incomplete"
        );
    }
    if !b.complete {
        let _ = writeln!(
            o,
            "  read in part: cgroups and processes of the lost entries are missing; dying \
             cgroups and own usage unknown"
        );
    }
    let n = &m.node;
    let parts: Vec<String> = n
        .breakdown
        .iter()
        .map(|p| format!("{} {}", p.key, bytes(p.bytes)))
        .collect();
    let _ = writeln!(
        o,
        "node: {} total; {}",
        bytes(n.mem_total_bytes),
        parts.join(", ")
    );
    let shown: Vec<&Finding> = at_least(&a.findings, min).collect();
    for f in shown.iter().filter(|f| f.cgroup_index.is_none()) {
        let _ = writeln!(o, "  {:<8} {}", f.severity.name(), f.summary);
    }
    let cgroups = ranked_cgroups(&shown);
    if !cgroups.is_empty() {
        let _ = writeln!(
            o,
            "\nper cgroup, the cause that explains the most bytes first:"
        );
    }
    for (idx, fs) in cgroups.iter().take(top) {
        let c = &m.cgroups[*idx];
        let usage = c.usage_bytes.map(bytes).unwrap_or_else(|| "?".into());
        let rss = if c.procs.count > 0 {
            format!("processes' RSS {}", bytes(c.procs.rss))
        } else {
            "no processes".into()
        };
        let _ = writeln!(
            o,
            "  {}\n    usage {usage}, anon {}, {rss}",
            c.display_name(),
            bytes(c.cadvisor.rss)
        );
        for f in fs {
            let _ = writeln!(o, "    {:<8} {}", f.severity.name(), f.summary);
        }
    }
    if cgroups.len() > top {
        let _ = writeln!(
            o,
            "  ... and {} more cgroup(s) with findings (--top, or --format json)",
            cgroups.len() - top
        );
    }
    if shown.is_empty() {
        let gaps = top_gaps(m, top);
        if !gaps.is_empty() {
            let _ = writeln!(
                o,
                "\nno findings; largest gaps between usage and anonymous memory:"
            );
        }
        for c in gaps {
            let br = c.bridge.as_ref().expect("filtered on bridge");
            let main: Vec<String> = br
                .parts
                .iter()
                .skip(1)
                .take(4)
                .map(|p| format!("{} {}", p.key, bytes(p.bytes)))
                .collect();
            let _ = writeln!(
                o,
                "  {}\n    usage {} = anon {} + {}; remainder {}",
                c.display_name(),
                bytes(br.usage_bytes),
                bytes(br.part("anon")),
                main.join(" + "),
                signed_bytes(br.remainder_bytes),
            );
        }
    }
    if !a.diagnostics.is_empty() {
        let _ = writeln!(
            o,
            "\n{} problem(s) reading the bundle or applying rules:",
            a.diagnostics.len()
        );
        for d in a.diagnostics.iter().take(10) {
            let _ = writeln!(o, "  {d}");
        }
    }
    terminal_safe(&o)
}

/// Text for a terminal: control characters from a bundle (escape sequences in a cgroup name or
/// a command line could rewrite the screen) are shown as `\u{..}` escapes.
pub fn terminal_safe(s: &str) -> String {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Cgroups with findings, most severe first, then by the bytes of their headline cause;
/// each with its findings in rank order.
pub fn ranked_cgroups<'a>(findings: &[&'a Finding]) -> Vec<(usize, Vec<&'a Finding>)> {
    let mut by: std::collections::BTreeMap<usize, Vec<&Finding>> = Default::default();
    for f in findings {
        if let Some(i) = f.cgroup_index {
            by.entry(i).or_default().push(f);
        }
    }
    let mut v: Vec<(usize, Vec<&Finding>)> = by.into_iter().collect();
    let key = |fs: &Vec<&Finding>| {
        (
            fs.iter().map(|f| f.severity).max(),
            fs.iter().filter_map(|f| f.bytes).max().unwrap_or(0),
        )
    };
    v.sort_by(|a, b| key(&b.1).cmp(&key(&a.1)).then(a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_do_not_reach_the_terminal() {
        let s = terminal_safe("pod \u{1b}[2J\u{1b}]0;owned\u{7}\nnext\tline");
        assert!(!s.contains('\u{1b}') && !s.contains('\u{7}'));
        assert!(s.contains("\\u{1b}[2J") && s.contains("\nnext\tline"));
    }
}
