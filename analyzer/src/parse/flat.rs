//! Flat-keyed files: `KEY VALUE` per line (`memory.stat` v1 and v2, `vmstat`, `memory.events`,
//! `cgroup.stat`, `memory.oom_control`, `memory.swap.events`).

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flat {
    pub values: BTreeMap<String, u64>,
    /// 1-based numbers of lines that were not `KEY UNSIGNED-INTEGER`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bad_lines: Vec<usize>,
}

impl Flat {
    pub fn get(&self, key: &str) -> Option<u64> {
        self.values.get(key).copied()
    }

    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }
}

pub fn parse(text: &str) -> Flat {
    let mut f = Flat::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_ascii_whitespace();
        match (it.next(), it.next().map(str::parse::<u64>), it.next()) {
            (Some(k), Some(Ok(v)), None) => {
                f.values.insert(k.to_string(), v);
            }
            _ => f.bad_lines.push(i + 1),
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_v1_and_v2_memory_stat() {
        let v1 = parse(include_str!(
            "../../../fixtures/realdata/localhost-v1/sys/fs/cgroup/memory/memory.stat"
        ));
        assert!(v1.bad_lines.is_empty());
        assert_eq!(
            v1.get("hierarchical_memory_limit"),
            Some(9223372036854771712)
        );
        assert!(v1.has("total_inactive_file"));
        let v2 = parse(include_str!("../../../fixtures/realdata/elastic_elastic-agent-system-metrics/metric/system/cgroup/testdata/docker2.zip/docker2/sys/fs/cgroup/user.slice/user-1000.slice/session-520.scope/memory.stat"));
        assert!(v2.bad_lines.is_empty());
        assert!(v2.get("anon").unwrap() > 0 && v2.has("sec_pagetables"));
        let cs = parse(include_str!(
            "../../../fixtures/realdata/localhost-v1/sys/fs/cgroup/unified/cgroup.stat"
        ));
        assert!(cs.has("nr_dying_descendants") && cs.has("nr_subsys_hugetlb"));
    }

    #[test]
    fn malformed_lines_are_reported_and_the_rest_kept() {
        let f =
            parse("cache 1\nrss -5\nbroken\nshmem 18446744073709551616\nnew_key 7 extra\nanon 3\n");
        assert_eq!(f.get("cache"), Some(1));
        assert_eq!(f.get("anon"), Some(3));
        assert_eq!(f.bad_lines, vec![2, 3, 4, 5]);
    }

    #[test]
    fn empty() {
        assert_eq!(parse(""), Flat::default());
    }
}
