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
pub fn each<'t>(text: &'t str, f: impl FnMut(&'t str, Value<'t>)) -> Vec<usize> {
    each_of(text, |_| true, f)
}

/// [`each`] for the keys `wanted` accepts: the lines of other keys are skipped unread (their
/// values are not checked), which is most of the cost of a `status` file.
pub fn each_of<'t>(
    text: &'t str,
    wanted: impl Fn(&str) -> bool,
    f: impl FnMut(&'t str, Value<'t>),
) -> Vec<usize> {
    each_recalled(text, wanted, &mut Recall::default(), f)
}

/// The keys of the files read before, by line, each with whether it is wanted. Files of one
/// kind (the `status` of every process) repeat them in the same order, so a line that starts
/// with the key recalled for it needs neither a search for its colon nor a look-up.
#[derive(Debug, Default)]
pub struct Recall(Vec<Option<(Box<[u8]>, bool)>>);

/// [`each_of`], recalling the keys of the files read before with the same `recall` (and the
/// same `wanted`).
pub fn each_recalled<'t>(
    text: &'t str,
    wanted: impl Fn(&str) -> bool,
    recall: &mut Recall,
    mut f: impl FnMut(&'t str, Value<'t>),
) -> Vec<usize> {
    let mut bad = Vec::new();
    let b = text.as_bytes();
    let mut start = 0;
    for i in 0.. {
        let recalled = recall.0.get(i).and_then(Option::as_ref).filter(|(k, _)| {
            b.get(start + k.len()) == Some(&b':') && super::same(&b[start..start + k.len()], k)
        });
        let (key_end, keep) = match recalled {
            Some((k, keep)) => (start + k.len(), *keep),
            None => {
                let key_end = key_end(b, start);
                let keyed = key_end > start && b.get(key_end) == Some(&b':');
                let keep = !keyed || wanted(&text[start..key_end]);
                let key = keyed.then(|| (b[start..key_end].into(), keep));
                if i >= recall.0.len() {
                    recall.0.resize(i + 1, None);
                }
                recall.0[i] = key;
                (key_end, keep)
            }
        };
        let end = if keep {
            match quick(b, start, key_end) {
                Some((n, end)) => {
                    f(&text[start..key_end], Value::Number(n));
                    end
                }
                None => careful(text, start, i, &wanted, &mut f, &mut bad),
            }
        } else {
            line_end(b, key_end)
        };
        if end >= b.len() {
            break;
        }
        start = end + 1;
    }
    bad
}

/// Where the line that `from` is in ends: its newline, or the end of the text. Eight bytes at
/// a time: these lines are ~25 bytes, where a call to `memchr` cost more than the search.
fn line_end(b: &[u8], from: usize) -> usize {
    use super::ONES;
    let mut at = from;
    while let Some(word) = b.get(at..at + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default()) ^ (ONES * u64::from(b'\n'));
        // The lowest flagged byte is exact: a borrow only runs upwards from a zero byte.
        let zero = x.wrapping_sub(ONES) & !x & (ONES * 0x80);
        if zero != 0 {
            return at + zero.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |n| at + n)
}

/// Where the key that starts at `start` ends: at a colon, a blank or the end of the line.
fn key_end(b: &[u8], start: usize) -> usize {
    let mut at = start;
    while at < b.len()
        && !matches!(
            b[at],
            b':' | b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c'
        )
    {
        at += 1;
    }
    at
}

/// The usual line, `Key:<blanks>DIGITS\n` or `Key:<blanks>DIGITS kB\n`, read in one pass from
/// the end of its key: (the value in bytes, end of the line). `None` for anything else, which
/// [`careful`] reads. Nearly every line of `status` and `smaps_rollup` is one of these, and
/// reading them this way costs a fraction of trimming and splitting each line.
fn quick(b: &[u8], start: usize, key_end: usize) -> Option<(u64, usize)> {
    if key_end == start || b.get(key_end) != Some(&b':') {
        return None;
    }
    let mut at = key_end + 1;
    // Values are padded to a column (`Pss:                 848 kB`): eight spaces at a time.
    while b.get(at..at + 8) == Some(b"        ") {
        at += 8;
    }
    while at < b.len() && matches!(b[at], b' ' | b'\t') {
        at += 1;
    }
    let (n, digits) = super::leading_decimal(&b[at..])?;
    if digits == 0 {
        return None;
    }
    at += digits;
    match b.get(at) {
        None | Some(b'\n') => Some((n, at)),
        Some(b' ') => {
            while b.get(at) == Some(&b' ') {
                at += 1;
            }
            let unit_end = at + 2;
            if b.get(at..unit_end) != Some(b"kB") || !matches!(b.get(unit_end), None | Some(b'\n'))
            {
                return None;
            }
            Some((n.checked_mul(1024)?, unit_end))
        }
        _ => None,
    }
}

/// Any line, trimmed and split; returns the end of the line.
fn careful<'t>(
    text: &'t str,
    start: usize,
    i: usize,
    wanted: &impl Fn(&str) -> bool,
    f: &mut impl FnMut(&'t str, Value<'t>),
    bad: &mut Vec<usize>,
) -> usize {
    let b = text.as_bytes();
    // The line's end a word at a time; its colon, near the start, a byte at a time.
    let end = line_end(b, start);
    let colon = b[start..end]
        .iter()
        .position(|&c| c == b':')
        .map(|c| start + c);
    let raw = &text[start..end];
    let line = raw.trim_ascii();
    // smaps_rollup starts with the `start-end perms ... [rollup]` mapping line.
    if line.is_empty() || (i == 0 && line.ends_with("[rollup]")) {
        return end;
    }
    match colon {
        None => bad.push(i + 1),
        Some(c) => {
            let lead = raw.len() - raw.trim_ascii_start().len();
            if !one(line, c - start - lead, wanted, f) {
                bad.push(i + 1);
            }
        }
    }
    end
}

/// One `KEY: VALUE` line whose colon is at `colon`; false if it cannot be read.
fn one<'t>(
    line: &'t str,
    colon: usize,
    wanted: &impl Fn(&str) -> bool,
    f: &mut impl FnMut(&'t str, Value<'t>),
) -> bool {
    let (k, v) = (
        line[..colon].trim_ascii_end(),
        line[colon + 1..].trim_ascii(),
    );
    if k.is_empty() || k.bytes().any(|b| b.is_ascii_whitespace()) {
        return false;
    }
    if !wanted(k) {
        return true;
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
    let (n, digits) = super::leading_decimal(b)?;
    if digits == 0 || !matches!(b.get(digits), None | Some(b' ' | b'\t')) {
        return None;
    }
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

    /// The plain reading `each_of` is an optimized form of.
    fn reference(text: &str, wanted: fn(&str) -> bool) -> (Vec<(String, String)>, Vec<usize>) {
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.trim_ascii();
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
            // The line of a key not wanted is not read further.
            if !wanted(k) {
                continue;
            }
            // A number (with blanks and `kB` after it: bytes), else text.
            let digits = v.len() - v.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let (num, rest) = v.split_at(digits);
            let value = match (num.parse::<u64>(), rest.trim_ascii_start()) {
                (Ok(n), "") => format!("{n}"),
                (Ok(n), "kB") if rest.starts_with([' ', '\t']) => match n.checked_mul(1024) {
                    Some(b) => format!("{b}"),
                    None => {
                        bad.push(i + 1);
                        continue;
                    }
                },
                _ => format!("text {v}"),
            };
            out.push((k.to_string(), value));
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
            "VmRSS:\t  816 kB\nThreads:\t19\nUid:\t0\t0\nx: 5 kB \ny: 5  kB\nz: 5\tkB\nw: 5 MB",
            "big: 18446744073709551615\nbigger: 18446744073709551616\nkb: 18014398509481984 kB",
            "k: 7kB\nk: 7 kB\r\nk:7\nk:\n k: 1\nk\t: 1\nk: 01 kB\nk: 1 kBx\nk: 1 k",
            "State:\tS (sleeping)\nName:\tpostgres\nSigQ:\t0/96365\nk: 1\n",
        ] {
            for wanted in [all as fn(&str) -> bool, some] {
                let (seen, bad) = read(text, wanted);
                assert_eq!((seen, bad), reference(text, wanted), "{text:?}");
            }
        }
    }

    #[test]
    fn line_ends_where_the_plain_search_finds_them() {
        let plain = |b: &[u8], from: usize| {
            b[from..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| from + n)
        };
        // Every byte value at every position of 20 bytes, from every start, with and without a
        // newline after it.
        for at in 0..20 {
            for c in 0..=255u8 {
                let mut b = vec![b'x'; 20];
                b[at] = c;
                for from in 0..=b.len() {
                    assert_eq!(line_end(&b, from), plain(&b, from), "{b:?} {from}");
                }
                b[(at + 7) % 20] = b'\n';
                for from in 0..=b.len() {
                    assert_eq!(line_end(&b, from), plain(&b, from), "{b:?} {from}");
                }
            }
        }
    }

    fn all(_: &str) -> bool {
        true
    }

    fn some(k: &str) -> bool {
        k.len() % 2 == 1 || k.starts_with('S')
    }

    /// What `each_recalled` calls back with, values as text.
    fn read(text: &str, wanted: fn(&str) -> bool) -> (Vec<(String, String)>, Vec<usize>) {
        read_recalled(text, wanted, &mut Recall::default())
    }

    fn read_recalled(
        text: &str,
        wanted: fn(&str) -> bool,
        recall: &mut Recall,
    ) -> (Vec<(String, String)>, Vec<usize>) {
        let mut seen = Vec::new();
        let bad = each_recalled(text, wanted, recall, |k, v| {
            let v = match v {
                Value::Number(n) => format!("{n}"),
                Value::Text(t) => format!("text {t}"),
            };
            seen.push((k.to_string(), v))
        });
        (seen, bad)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// The one-pass reading of usual lines agrees with the plain reading on any line
        /// built from the characters that matter to either.
        #[test]
        fn quick_lines_read_as_the_plain_reading_reads_them(
            text in "(([a-zA-Z_]{0,4}|[ \t]):?[ \t]{0,3}[0-9]{0,21}( {0,2}|\t)(kB|k|B|x|kBx|kB0)?[ \t\r]?\n?){0,6}"
        ) {
            for wanted in [all as fn(&str) -> bool, some] {
                proptest::prop_assert_eq!(read(&text, wanted), reference(&text, wanted));
            }
        }

        /// Files read one after another with the keys of the ones before recalled read as
        /// each one alone: keys from a small alphabet, so that recalled keys often are, or
        /// begin, the line's key.
        #[test]
        fn recalled_keys_read_as_the_plain_reading_reads_them(
            texts in proptest::collection::vec(
                "(([ab]{0,3}|[ \t]):?[ \t]{0,2}[0-9]{0,3}( kB)?[ \r]?\n?){0,5}",
                1..5,
            )
        ) {
            for wanted in [all as fn(&str) -> bool, some] {
                let mut recall = Recall::default();
                for t in &texts {
                    proptest::prop_assert_eq!(
                        read_recalled(t, wanted, &mut recall),
                        reference(t, wanted)
                    );
                }
            }
        }
    }
}
