//! `Key:   VALUE kB` files: `/proc/meminfo`, `/proc/PID/status`, `/proc/PID/smaps_rollup`.
//! Values with a `kB` unit are converted to bytes; unit-less numbers (`HugePages_Total`,
//! `Threads`) are kept as they are; other values (`Name`, `State`) are kept as text.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KvKb {
    /// Numeric values; `kB` ones in bytes.
    pub values: BTreeMap<String, u64>,
    /// Non-numeric values, trimmed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub text: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bad_lines: Vec<usize>,
}

impl KvKb {
    pub fn get(&self, key: &str) -> Option<u64> {
        self.values.get(key).copied()
    }
}

pub fn parse(text: &str) -> KvKb {
    let mut out = KvKb::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // smaps_rollup starts with the `start-end perms ... [rollup]` mapping line.
        if i == 0 && line.ends_with("[rollup]") {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            out.bad_lines.push(i + 1);
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || k.contains(char::is_whitespace) {
            out.bad_lines.push(i + 1);
            continue;
        }
        let mut parts = v.split_ascii_whitespace();
        let number = parts.next().and_then(|n| n.parse::<u64>().ok());
        match (number, parts.next(), parts.next()) {
            (Some(n), Some("kB"), None) => match n.checked_mul(1024) {
                Some(b) => {
                    out.values.insert(k.to_string(), b);
                }
                None => out.bad_lines.push(i + 1),
            },
            (Some(n), None, None) => {
                out.values.insert(k.to_string(), n);
            }
            _ => {
                out.text.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_meminfo_status_and_smaps_rollup() {
        let m = parse(include_str!(
            "../../../fixtures/realdata/localhost-v1/proc/meminfo"
        ));
        assert!(m.bad_lines.is_empty());
        assert!(m.get("MemTotal").unwrap() > 1 << 30);
        assert!(m.values.contains_key("HugePages_Total"));
        let s = parse(include_str!(
            "../../../fixtures/realdata/localhost-v1/scratch-demo/alive/proc/self/status"
        ));
        assert_eq!(s.get("VmRSS"), Some(79532 * 1024));
        assert_eq!(
            s.get("VmRSS"),
            Some(
                s.get("RssAnon").unwrap() + s.get("RssFile").unwrap() + s.get("RssShmem").unwrap()
            )
        );
        assert_eq!(s.text["Name"], "python3");
        let r = parse(include_str!(
            "../../../fixtures/realdata/localhost-v1/scratch-demo/alive/proc/self/smaps_rollup"
        ));
        assert!(r.bad_lines.is_empty());
        assert_eq!(r.get("Pss_Shmem"), Some(16384 * 1024));
        // pre-5.3 layout: no Pss_Anon/File/Shmem.
        let old = parse(include_str!("../../../fixtures/realdata/prometheus_procfs/testdata/fixtures/proc/26231/smaps_rollup"));
        assert!(old.get("Pss").is_some() && old.get("Pss_Anon").is_none());
    }

    #[test]
    fn malformed_lines() {
        let m = parse(
            "MemTotal: 10 kB\nno colon here\nHuge: 18446744073709551615 kB\n: 5\nName:\tbash\n",
        );
        assert_eq!(m.get("MemTotal"), Some(10240));
        assert_eq!(m.bad_lines, vec![2, 3, 4]);
        assert_eq!(m.text["Name"], "bash");
    }

    #[test]
    fn empty() {
        assert_eq!(parse(""), KvKb::default());
    }
}
