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

/// One line's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'t> {
    /// A number; `kB` ones in bytes.
    Number(u64),
    Text(&'t str),
}

/// Calls `f(key, value)` for every readable line, in order; returns the 1-based numbers of the
/// lines it could not read. For callers that want a few keys of many files (`status` of
/// every process) without building a map per file.
pub fn each<'t>(text: &'t str, mut f: impl FnMut(&'t str, Value<'t>)) -> Vec<usize> {
    let mut bad = Vec::new();
    let b = text.as_bytes();
    let mut start = 0;
    // Lines of ~25 bytes, each scanned once for its end and its first colon: searching them
    // with `split`/`memchr` cost more in set-up than in search (2,000 processes' `status`).
    for i in 0.. {
        let (mut end, mut colon) = (start, None);
        while end < b.len() && b[end] != b'\n' {
            if b[end] == b':' && colon.is_none() {
                colon = Some(end);
            }
            end += 1;
        }
        let raw = &text[start..end];
        let line = raw.trim_ascii();
        let next = end + 1;
        // smaps_rollup starts with the `start-end perms ... [rollup]` mapping line.
        let skip = line.is_empty() || (i == 0 && line.ends_with("[rollup]"));
        if !skip {
            match colon {
                None => bad.push(i + 1),
                Some(c) => {
                    let lead = raw.len() - raw.trim_ascii_start().len();
                    let c = c - start - lead;
                    if !one(line, c, &mut f) {
                        bad.push(i + 1);
                    }
                }
            }
        }
        if next > b.len() {
            break;
        }
        start = next;
    }
    bad
}

/// One `KEY: VALUE` line whose colon is at `colon`; false if it cannot be read.
fn one<'t>(line: &'t str, colon: usize, f: &mut impl FnMut(&'t str, Value<'t>)) -> bool {
    let (k, v) = (
        line[..colon].trim_ascii_end(),
        line[colon + 1..].trim_ascii(),
    );
    if k.is_empty() || k.bytes().any(|b| b.is_ascii_whitespace()) {
        return false;
    }
    match number(v) {
        Some((n, "kB")) => match n.checked_mul(1024) {
            Some(b) => f(k, Value::Number(b)),
            None => return false,
        },
        Some((n, "")) => f(k, Value::Number(n)),
        _ => f(k, Value::Text(v)),
    }
    true
}

/// A leading unsigned integer and what follows it after blanks: `4 kB` -> (4, "kB").
fn number(v: &str) -> Option<(u64, &str)> {
    let b = v.as_bytes();
    let digits = b
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(b.len());
    if digits == 0 {
        return None;
    }
    if !matches!(b.get(digits), None | Some(b' ' | b'\t')) {
        return None;
    }
    let n = super::decimal(&b[..digits])?;
    Some((n, v[digits..].trim_ascii_start()))
}

pub fn parse(text: &str) -> KvKb {
    let (mut values, mut texts) = (BTreeMap::new(), BTreeMap::new());
    let bad_lines = each(text, |k, v| match v {
        Value::Number(n) => {
            values.insert(k.to_string(), n);
        }
        Value::Text(t) => {
            texts.insert(k.to_string(), t.to_string());
        }
    });
    KvKb {
        values,
        text: texts,
        bad_lines,
    }
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

    /// The plain reading `each` is an optimized form of.
    fn reference(text: &str) -> (Vec<(String, String)>, Vec<usize>) {
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        for (i, line) in text.split('\n').enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() || (i == 0 && line.ends_with("[rollup]")) {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                bad.push(i + 1);
                continue;
            };
            let (k, v) = (k.trim_ascii_end(), v.trim_ascii());
            if k.is_empty() || k.contains(|c: char| c.is_ascii_whitespace()) {
                bad.push(i + 1);
                continue;
            }
            out.push((k.to_string(), v.to_string()));
        }
        (out, bad)
    }

    #[test]
    fn lines_are_split_as_the_plain_reading_splits_them() {
        for text in [
            "a: 1\n\n  b:2 kB  \r\nc d: 3\n:4\nno colon\ne:f:g\n\t\n",
            "7f00-7f01 r--p 0 00:00 0 [rollup]\nRss: 4 kB",
            "x: 1",
            "\n\n",
            "  lead: 5\ntrail :6",
        ] {
            let mut seen = Vec::new();
            let bad = each(text, |k, _| seen.push(k.to_string()));
            let (want, want_bad) = reference(text);
            let keys: Vec<String> = want.into_iter().map(|(k, _)| k).collect();
            assert_eq!((seen, bad), (keys, want_bad), "{text:?}");
        }
    }
}
