//! Small fixed-format files: `dentry-state` and `/proc/cgroups`.

use serde::Serialize;

/// `/proc/sys/fs/dentry-state`: `nr_dentry nr_unused age_limit want_pages nr_negative dummy`.
/// `nr_negative` exists since Linux 5.0; before, the 5th field is always 0, so it is `None`
/// when the kernel is older (decided by the caller, who knows the kernel release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DentryState {
    pub nr_dentry: u64,
    pub nr_unused: u64,
    pub age_limit: u64,
    pub want_pages: u64,
    pub nr_negative: u64,
}

pub fn dentry_state(text: &str) -> Option<DentryState> {
    let v: Vec<u64> = text
        .split_ascii_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if v.len() < 4 {
        return None;
    }
    Some(DentryState {
        nr_dentry: v[0],
        nr_unused: v[1],
        age_limit: v[2],
        want_pages: v[3],
        nr_negative: v.get(4).copied().unwrap_or(0),
    })
}

/// One controller line of `/proc/cgroups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Controller {
    pub name: String,
    pub hierarchy: u64,
    /// Live and dying cgroups of this controller.
    pub num_cgroups: u64,
    pub enabled: bool,
}

pub fn proc_cgroups(text: &str) -> (Vec<Controller>, Vec<usize>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in super::lines(text).enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        match (
            f.first(),
            f.get(1).and_then(|s| s.parse().ok()),
            f.get(2).and_then(|s| s.parse().ok()),
            f.get(3),
        ) {
            (Some(n), Some(h), Some(c), Some(e)) if f.len() == 4 => out.push(Controller {
                name: n.to_string(),
                hierarchy: h,
                num_cgroups: c,
                enabled: *e == "1",
            }),
            _ => bad.push(i + 1),
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_files() {
        let d = dentry_state(include_str!(
            "../../../fixtures/realdata/localhost-v1/proc/sys/fs/dentry-state"
        ))
        .unwrap();
        assert!(d.nr_dentry >= d.nr_unused);
        assert_eq!(d.age_limit, 45);
        let (c, bad) = proc_cgroups(include_str!(
            "../../../fixtures/realdata/prometheus_node_exporter/collector/fixtures/proc/cgroups"
        ));
        assert!(bad.is_empty());
        let mem = c.iter().find(|c| c.name == "memory").unwrap();
        assert_eq!(
            (mem.hierarchy, mem.num_cgroups, mem.enabled),
            (7, 234, true)
        );
    }

    #[test]
    fn malformed_and_empty() {
        assert!(dentry_state("1 2 x 4 5 6").is_none());
        assert!(dentry_state("").is_none());
        assert_eq!(dentry_state("1 2 45 0").unwrap().nr_negative, 0);
        let (c, bad) = proc_cgroups("#h\nmemory 7 x 1\ncpu 1 2 1\n");
        assert_eq!((c.len(), bad), (1, vec![2]));
        assert_eq!(proc_cgroups(""), (vec![], vec![]));
    }
}
