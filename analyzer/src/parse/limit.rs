//! Single-value limit files: `memory.max` (`max` or bytes) and v1 `memory.limit_in_bytes`
//! (where unlimited is PAGE_COUNTER_MAX * PAGE_SIZE, `9223372036854771712` on 64-bit/4K).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "bytes")]
pub enum Limit {
    Max,
    Bytes(u64),
}

/// v1 prints unlimited as the page counter's maximum rounded to pages; anything at or above
/// this (for any page size up to 64 KiB) is no limit.
const V1_UNLIMITED_FLOOR: u64 = 0x7FFF_FFFF_FFFF_0000;

impl Limit {
    pub fn bytes(self) -> Option<u64> {
        match self {
            Limit::Max => None,
            Limit::Bytes(b) => Some(b),
        }
    }

    pub fn min(self, other: Limit) -> Limit {
        match (self, other) {
            (Limit::Max, x) | (x, Limit::Max) => x,
            (Limit::Bytes(a), Limit::Bytes(b)) => Limit::Bytes(a.min(b)),
        }
    }
}

/// Parses a limit file; `None` for anything that is not `max` or an unsigned integer.
pub fn parse(text: &str) -> Option<Limit> {
    let t = text.trim();
    if t == "max" {
        return Some(Limit::Max);
    }
    t.parse().ok().map(of_value)
}

fn of_value(v: u64) -> Limit {
    if v >= V1_UNLIMITED_FLOOR {
        Limit::Max
    } else {
        Limit::Bytes(v)
    }
}

/// Parses a single unsigned value (`memory.current`, `memory.usage_in_bytes`, ...).
pub fn value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// [`parse`] of a file's bytes.
pub fn parse_bytes(t: &[u8]) -> Option<Limit> {
    match number_line(t) {
        Some(v) => Some(of_value(v)),
        None => parse(&super::text(t)),
    }
}

/// [`value`] of a file's bytes.
pub fn value_bytes(t: &[u8]) -> Option<u64> {
    number_line(t).or_else(|| value(&super::text(t)))
}

/// The kernel's way of writing one number, `DIGITS\n`, read without decoding the text: 5,000
/// cgroups have ~40,000 such files. `None` for anything else (the callers then read it as
/// text, which also decides what it is).
fn number_line(t: &[u8]) -> Option<u64> {
    // A counter never touched (`memory.failcnt`, TCP buffers), read at a glance.
    if t == b"0\n" {
        return Some(0);
    }
    let digits = t.strip_suffix(b"\n").unwrap_or(t);
    match super::leading_decimal(digits)? {
        (n, len) if len > 0 && len == digits.len() => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_v1_unlimited_and_v2_max() {
        let v1 = include_str!(
            "../../../fixtures/realdata/localhost-v1/sys/fs/cgroup/memory/memory.limit_in_bytes"
        );
        assert_eq!(parse(v1), Some(Limit::Max));
        let amzn = include_str!("../../../fixtures/realdata/elastic_elastic-agent-system-metrics/metric/system/cgroup/testdata/amzn2.zip/amzn2/sys/fs/cgroup/memory/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a96c459_d529_44ae_9f99_90d3798d6426.slice/cri-containerd-1d3d308a7d48a27814a68bf33a44acf4441c9c02463ca0bc1cdfdc8c0b4a8496.scope/memory.limit_in_bytes");
        assert_eq!(parse(amzn), Some(Limit::Bytes(2 << 30)));
        assert_eq!(parse("max\n"), Some(Limit::Max));
        assert_eq!(Limit::Max.min(Limit::Bytes(5)), Limit::Bytes(5));
    }

    #[test]
    fn bytes_read_as_the_text_is() {
        for t in [
            "0\n",
            "0",
            "00\n",
            "0\n\n",
            "42",
            "42\n",
            "9223372036854771712\n",
            "18446744073709551615\n",
            "18446744073709551616\n",
            "99999999999999999999\n",
            "max\n",
            "+5\n",
            " 7 \n",
            "7\n\n",
            "",
            "\n",
            "-1\n",
            "12 kB\n",
            "\u{a0}9\n",
            "1e3\n",
            "0x10\n",
        ] {
            assert_eq!(parse_bytes(t.as_bytes()), parse(t), "{t:?}");
            assert_eq!(value_bytes(t.as_bytes()), value(t), "{t:?}");
        }
        assert_eq!(value_bytes(b"\xff1\n"), None);
    }

    #[test]
    fn malformed_and_empty() {
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("12 kB"), None);
        assert_eq!(parse("99999999999999999999999"), None);
        assert_eq!(parse(""), None);
        assert_eq!(value(""), None);
    }
}
