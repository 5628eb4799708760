//! Renderers of the model: JSON for machines, a short text summary for terminals.

use std::fmt::Write as _;

use crate::format::{bytes, signed_bytes};
use crate::model::{Cgroup, Model};

pub fn json(models: &[Model]) -> serde_json::Result<Vec<u8>> {
    if models.len() == 1 {
        serde_json::to_vec_pretty(&models[0])
    } else {
        serde_json::to_vec_pretty(models)
    }
}

/// Cgroups worth showing first: the largest gap between usage and anonymous memory, among the
/// cgroups that hold memory themselves (leaves, and parents whose own charges are a tenth of
/// their usage or more, like a pod holding an exited container's shmem). The root and the QoS
/// levels would otherwise top every list with their children's sum.
pub fn top_gaps(m: &Model, n: usize) -> Vec<&Cgroup> {
    let holds_own = |c: &Cgroup| match (c.children.is_empty(), c.own_usage_bytes, c.usage_bytes) {
        (true, _, _) => true,
        (false, Some(own), Some(u)) => own > 0 && own as u64 * 10 >= u,
        _ => false,
    };
    let mut v: Vec<&Cgroup> = m
        .cgroups
        .iter()
        .filter(|c| c.path != "/" && c.bridge.is_some() && c.gap_vs_anon_bytes.unwrap_or(0) > 0)
        .filter(|c| holds_own(c))
        .collect();
    v.sort_by(|a, b| {
        b.gap_vs_anon_bytes
            .cmp(&a.gap_vs_anon_bytes)
            .then_with(|| a.path.cmp(&b.path))
    });
    v.truncate(n);
    v
}

pub fn text(m: &Model, top: usize) -> String {
    let mut o = String::new();
    let b = &m.bundle;
    let _ = writeln!(
        o,
        "memgap: {} (kernel {}, cgroup {:?}, collected {})",
        b.hostname, b.kernel_release, b.cgroup_mode, b.collected_at
    );
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
    let mut notes = Vec::new();
    if let Some(d) = n.dying_cgroups.filter(|d| *d > 0) {
        notes.push(format!("{d} dying memory cgroups"));
    }
    if n.shm_orphaned_bytes > 0 {
        notes.push(format!(
            "{} in SysV segments with no process attached",
            bytes(n.shm_orphaned_bytes)
        ));
    }
    if let Some(neg) = n.negative_dentry_bytes.filter(|b| *b > 0) {
        notes.push(format!("{} of negative dentries", bytes(neg)));
    }
    if !m.oom_events.is_empty() {
        notes.push(format!(
            "{} OOM kill(s) in the kernel log",
            m.oom_events.len()
        ));
    }
    if !notes.is_empty() {
        let _ = writeln!(o, "      {}", notes.join("; "));
    }
    let gaps = top_gaps(m, top);
    if !gaps.is_empty() {
        let _ = writeln!(
            o,
            "\ncgroups with the largest gap between usage and anonymous memory:"
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
        let rss = if c.procs.count > 0 {
            format!(", processes' RSS {}", bytes(c.procs.rss))
        } else {
            ", no processes".into()
        };
        let _ = writeln!(
            o,
            "  {}\n    usage {} = anon {} + {}; remainder {}{}",
            c.display_name(),
            bytes(br.usage_bytes),
            bytes(br.part("anon")),
            main.join(" + "),
            signed_bytes(br.remainder_bytes),
            rss
        );
    }
    if !m.diagnostics.is_empty() {
        let _ = writeln!(
            o,
            "\n{} problem(s) reading the bundle:",
            m.diagnostics.len()
        );
        for d in m.diagnostics.iter().take(10) {
            let _ = writeln!(o, "  {d}");
        }
    }
    o
}
