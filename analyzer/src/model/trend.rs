//! Growth over the snapshots of a multi-sample bundle (`memgap-collect --samples N`): for the
//! node and each cgroup, a series per bridge part, its least-squares slope in bytes per hour,
//! and whether it grew steadily (never fell, ended higher).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{build_sample, Model};
use crate::reader::Bundle;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Trend {
    /// Seconds since the first snapshot, one per snapshot.
    pub at_s: Vec<f64>,
    /// Values by key (`usage` and the bridge's part keys for a cgroup; the breakdown's keys
    /// for the node), one per snapshot; `None` where the snapshot lacks it.
    pub series: BTreeMap<String, Vec<Option<u64>>>,
    /// Least-squares slope, bytes per hour.
    pub per_hour: BTreeMap<String, f64>,
    /// Never decreased between snapshots and ended higher than it started.
    pub steady: BTreeMap<String, bool>,
}

/// Values of one snapshot of a cgroup, by key.
fn cgroup_values(c: &super::Cgroup) -> BTreeMap<String, u64> {
    let mut v = BTreeMap::new();
    if let Some(u) = c.usage_bytes {
        v.insert("usage".to_string(), u);
    }
    if let Some(b) = &c.bridge {
        for p in b.parts.iter().chain(&b.overlaps).chain(&b.beside) {
            v.entry(p.key.to_string()).or_insert(p.bytes);
        }
    }
    v.insert("kernel_total".into(), crate::rules::facts::kernel_bytes(c));
    v
}

fn node_values(m: &Model) -> BTreeMap<String, u64> {
    let mut v: BTreeMap<String, u64> = m
        .node
        .breakdown
        .iter()
        .map(|p| (p.key.to_string(), p.bytes))
        .collect();
    v.insert("slab_total".into(), m.node.slab_total_bytes);
    if let Some(n) = m.node.negative_dentry_bytes {
        v.insert("negative_dentries".into(), n);
    }
    v
}

/// Seconds of each snapshot since the first, from the manifest's times (or its interval).
fn times(b: &Bundle) -> Vec<f64> {
    let n = b.samples.len();
    let m = b.manifest.as_ref();
    let parsed: Option<Vec<f64>> = m.and_then(|m| {
        let ts: Option<Vec<std::time::SystemTime>> = m
            .samples
            .iter()
            .map(|s| humantime::parse_rfc3339_weak(&s.started_at).ok())
            .collect();
        let ts = ts.filter(|t| t.len() == n)?;
        let t0 = ts[0];
        Some(
            ts.iter()
                .map(|t| t.duration_since(t0).map_or(0.0, |d| d.as_secs_f64()))
                .collect(),
        )
    });
    // Timestamps have one-second resolution: fall back to the interval if they do not move.
    match parsed {
        Some(t) if t.last().copied().unwrap_or(0.0) > 0.0 => t,
        _ => {
            let step = m.map_or(0, |m| m.options.interval_ms) as f64 / 1000.0;
            (0..n).map(|i| i as f64 * step).collect()
        }
    }
}

fn finish(at: &[f64], series: BTreeMap<String, Vec<Option<u64>>>) -> Trend {
    let mut t = Trend {
        at_s: at.to_vec(),
        ..Default::default()
    };
    for (k, s) in &series {
        let pts: Vec<(f64, f64)> = at
            .iter()
            .zip(s)
            .filter_map(|(x, y)| y.map(|y| (*x, y as f64)))
            .collect();
        if pts.len() >= 2 {
            if let Some(slope) = slope(&pts) {
                t.per_hour.insert(k.clone(), slope * 3600.0);
            }
            let never_fell = pts.windows(2).all(|w| w[1].1 >= w[0].1);
            t.steady
                .insert(k.clone(), never_fell && pts.last().unwrap().1 > pts[0].1);
        }
    }
    t.series = series;
    t
}

/// Least-squares slope of y over x; none when x does not vary.
fn slope(p: &[(f64, f64)]) -> Option<f64> {
    let n = p.len() as f64;
    let mx = p.iter().map(|q| q.0).sum::<f64>() / n;
    let my = p.iter().map(|q| q.1).sum::<f64>() / n;
    let sxx: f64 = p.iter().map(|q| (q.0 - mx).powi(2)).sum();
    let sxy: f64 = p.iter().map(|q| (q.0 - mx) * (q.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Attaches trends to the latest snapshot's model, when the bundle has several.
pub fn attach(b: &Bundle, latest: &mut Model) {
    let n = b.samples.len();
    if n < 2 {
        return;
    }
    let at = times(b);
    let mut node_series: BTreeMap<String, Vec<Option<u64>>> = BTreeMap::new();
    let mut cg_series: Vec<BTreeMap<String, Vec<Option<u64>>>> =
        vec![BTreeMap::new(); latest.cgroups.len()];
    // Per snapshot, the cgroups that existed: there, a part a cgroup did not report is 0.
    let mut present: Vec<Vec<bool>> = Vec::with_capacity(n);
    let index: HashMap<(&str, &str), usize> = latest
        .cgroups
        .iter()
        .enumerate()
        .map(|(i, c)| ((&*c.hierarchy, &*c.path), i))
        .collect();
    for s in 0..n {
        let owned;
        let m: &Model = if s == n - 1 {
            latest
        } else {
            owned = build_sample(b, s);
            &owned
        };
        for (k, v) in node_values(m) {
            node_series.entry(k).or_insert_with(|| vec![None; n])[s] = Some(v);
        }
        let mut here = vec![false; latest.cgroups.len()];
        for c in &m.cgroups {
            if let Some(&i) = index.get(&(&*c.hierarchy, &*c.path)) {
                here[i] = true;
                for (k, v) in cgroup_values(c) {
                    cg_series[i].entry(k).or_insert_with(|| vec![None; n])[s] = Some(v);
                }
            }
        }
        present.push(here);
    }
    latest.node.trend = Some(finish(&at, node_series));
    for (i, series) in cg_series.iter_mut().enumerate() {
        for values in series.values_mut() {
            for (v, here) in values.iter_mut().zip(&present) {
                if here[i] && v.is_none() {
                    *v = Some(0);
                }
            }
        }
    }
    for (c, series) in latest.cgroups.iter_mut().zip(cg_series) {
        c.trend = Some(Box::new(finish(&at, series)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_and_steadiness() {
        let at = [0.0, 1800.0, 3600.0];
        let mut s = BTreeMap::new();
        s.insert(
            "shmem".to_string(),
            vec![Some(0), Some(50 << 20), Some(100 << 20)],
        );
        s.insert("anon".to_string(), vec![Some(10), Some(5), Some(10)]);
        s.insert("gone".to_string(), vec![Some(10), None, None]);
        let t = finish(&at, s);
        assert!((t.per_hour["shmem"] - (100u64 << 20) as f64).abs() < 1.0);
        assert!(t.steady["shmem"]);
        assert!(!t.steady["anon"]);
        assert!(!t.per_hour.contains_key("gone"));
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }
}
