//! Parsers: pure functions from a kernel file's text to typed values, units normalized to bytes.
//!
//! Every parser is lenient in the same way: unknown keys are kept (new kernels add fields in
//! the middle of files), and lines it cannot read are reported by number in `bad_lines`
//! instead of failing the whole file.

pub mod flat;
pub mod kv_kb;
pub mod limit;
pub mod misc;
pub mod nested;
pub mod oom;
pub mod pid_cgroup;
pub mod slabinfo;
pub mod sysvipc;

pub use flat::Flat;
pub use limit::Limit;

/// The run of ASCII digits at the start of `b`: (its value, its length, 0 if there is none);
/// `None` if the value does not fit a `u64`. Read eight bytes at a time: a 5,000-cgroup node's
/// files hold ~500,000 numbers.
pub(crate) fn leading_decimal(b: &[u8]) -> Option<(u64, usize)> {
    const POW10: [u64; 9] = [
        1,
        10,
        100,
        1_000,
        10_000,
        100_000,
        1_000_000,
        10_000_000,
        100_000_000,
    ];
    let (mut n, mut i) = (0u64, 0);
    while let Some(word) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let k = digit_run(x);
        if k == 0 {
            return Some((n, i));
        }
        // The k digits moved to the top bytes, zeros (not '0's: those are subtracted first)
        // before them; what borrows from the bytes after them is shifted out.
        let v = eight_digits(x.wrapping_sub(ONES * u64::from(b'0')) << (8 * (8 - k)));
        n = n.checked_mul(POW10[k])?.checked_add(v)?;
        i += k;
        if k < 8 {
            return Some((n, i));
        }
    }
    while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        i += 1;
    }
    Some((n, i))
}

/// A one in every byte of a word, for the eight-bytes-at-a-time scans.
pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;

/// How many of the eight bytes of `x` (first byte lowest) are ASCII digits before the first
/// one that is not. A byte is a digit if its high nibble is 3 and adding 6 leaves it so; no
/// carry crosses a digit, so the lowest flagged byte is exact.
fn digit_run(x: u64) -> usize {
    let high = ONES * 0xF0;
    let flags = ((x & high) ^ (ONES * 0x30)) | ((x.wrapping_add(ONES * 6) & high) ^ (ONES * 0x30));
    flags.trailing_zeros() as usize / 8
}

/// The value of eight decimal digits (0..=9 per byte, the first byte most significant), by
/// the well-known multiply-and-shift reduction of pairs, then quads, then the whole.
fn eight_digits(d: u64) -> u64 {
    let d = d.wrapping_mul(10).wrapping_add(d >> 8);
    let lanes = 0x0000_00FF_0000_00FF;
    let mul1 = 100 + (1_000_000 << 32);
    let mul2 = 1 + (10_000 << 32);
    (d & lanes)
        .wrapping_mul(mul1)
        .wrapping_add(((d >> 16) & lanes).wrapping_mul(mul2))
        >> 32
}

/// The lines of `text`, exactly as [`str::lines`] splits them (`\n` or `\r\n` ends a line; a
/// last line needs no ending), found with the `memchr` crate: the standard library's search
/// for `\n` cost more than the parsing on files of long lines (`/proc/PID/cgroup`).
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text).filter(|t| !t.is_empty());
    std::iter::from_fn(move || {
        let t = rest?;
        match memchr::memchr(b'\n', t.as_bytes()) {
            Some(n) => {
                let next = &t[n + 1..];
                rest = Some(next).filter(|r| !r.is_empty());
                let line = &t[..n];
                Some(line.strip_suffix('\r').unwrap_or(line))
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// Word-at-a-time equality, shared with the pack reader.
pub(crate) use memgap_collector::bytes::same;

/// Kernel text files are ASCII; anything else is decoded lossily rather than refused.
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    // The strict check (SIMD) is many times faster than the lossy decoder on valid input.
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain reading `leading_decimal` is an optimized form of.
    fn reference(b: &[u8]) -> Option<(u64, usize)> {
        let len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let n = b[..len].iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        Some((n, len))
    }

    #[test]
    fn leading_decimals_at_every_length_and_bound() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for len in 0..=24 {
            for tail in ["", "\n", " kB", "/", ":", "\u{7f}", "\u{ff}"] {
                let digits: String = (0..len)
                    .map(|i| char::from(b'0' + (i * 7 + 3) % 10))
                    .collect();
                cases.push(format!("{digits}{tail}").into_bytes());
                cases.push(format!("{}{tail}", "9".repeat(len as usize)).into_bytes());
            }
        }
        for s in [
            "18446744073709551615",
            "18446744073709551616",
            "00000000000000000000042",
        ] {
            cases.push(s.as_bytes().to_vec());
            cases.push(format!("{s} ").into_bytes());
        }
        // Every byte value right after 0 to 8 digits, in and beyond the first word.
        for len in 0..=9 {
            for c in 0..=255u8 {
                let mut b = b"12345678"[..len.min(8)].to_vec();
                b.extend(std::iter::repeat_n(b'5', len.saturating_sub(8)));
                b.push(c);
                b.extend_from_slice(b"77777777");
                cases.push(b);
            }
        }
        for b in cases {
            assert_eq!(
                leading_decimal(&b),
                reference(&b),
                "{:?}",
                String::from_utf8_lossy(&b)
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        #[test]
        fn lines_are_the_standard_librarys(s in "[a\r\n]{0,12}") {
            proptest::prop_assert_eq!(lines(&s).collect::<Vec<_>>(), s.lines().collect::<Vec<_>>());
        }

        #[test]
        fn leading_decimals_read_as_the_plain_reading_reads_them(
            s in "[0-9]{0,30}[^0-9]?[0-9]{0,4}"
        ) {
            let b = s.as_bytes();
            proptest::prop_assert_eq!(leading_decimal(b), reference(b));
        }
    }
}
