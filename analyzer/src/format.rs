//! Human formatting of numbers, shared by the text output and the HTML filters.

/// Bytes in binary units with three significant digits: `512 B`, `1.50 KiB`, `300 MiB`.
///
/// Computed in integers, as exactly what `format!("{:.2}")` prints for the `f64` value
/// (`b as f64` divided by 1024 per unit; ties to even): a report formats thousands of these,
/// and float formatting was a fifth of the rules' time.
pub fn bytes(b: u64) -> String {
    let mut out = String::with_capacity(12);
    push_bytes(&mut out, b);
    out
}

/// Signed bytes: `-1.50 MiB`.
pub fn signed_bytes(b: i64) -> String {
    let mut out = String::with_capacity(13);
    if b < 0 {
        out.push('-');
    }
    push_bytes(&mut out, b.unsigned_abs());
    out
}

fn push_bytes(out: &mut String, b: u64) {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        push_int(out, b);
        out.push_str(" B");
        return;
    }
    // The f64 the value was always shown from (u64 -> f64 rounds above 2^53), as an integer:
    // dividing it by 1024 is exact, so every comparison below is too.
    let x = b as f64 as u128;
    let mut u = 0;
    while u < UNITS.len() - 1 && x >= 1u128 << (10 * (u + 1)) {
        u += 1;
    }
    let shift = 10 * u as u32;
    let decimals = if x >= 100 << shift {
        0
    } else if x >= 10 << shift {
        1
    } else {
        2
    };
    let scale = 10u128.pow(decimals);
    let scaled = x * scale;
    let (mut q, r, half) = (
        scaled >> shift,
        scaled & ((1 << shift) - 1),
        1u128 << (shift - 1),
    );
    if r > half || (r == half && q % 2 == 1) {
        q += 1;
    }
    // q <= 2^64 * 100 / 1024: the integer part fits a u64.
    push_int(out, (q / scale) as u64);
    if decimals > 0 {
        out.push('.');
        let frac = (q % scale) as u64;
        if decimals == 2 && frac < 10 {
            out.push('0');
        }
        push_int(out, frac);
    }
    out.push(' ');
    out.push_str(UNITS[u]);
}

/// Appends the decimal digits of `n`.
fn push_int(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// A ratio as a percentage: `0.5` -> `50.0%`.
pub fn pct(r: f64) -> String {
    if r.is_finite() {
        format!("{:.1}%", r * 100.0)
    } else {
        "-".into()
    }
}

/// A span of seconds for people: `45 s`, `12 min`, `3.5 h`, `4 days`.
pub fn duration(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{:.1} h", s as f64 / 3600.0),
        _ => format!("{} days", s / 86_400),
    }
}

/// An integer with thousands separators: `12,345`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How `bytes` used to compute it, in floating point.
    fn bytes_by_float(b: u64) -> String {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut v = b as f64;
        let mut u = 0;
        while v >= 1024.0 && u < UNITS.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        if u == 0 {
            format!("{b} B")
        } else if v >= 100.0 {
            format!("{v:.0} {}", UNITS[u])
        } else if v >= 10.0 {
            format!("{v:.1} {}", UNITS[u])
        } else {
            format!("{v:.2} {}", UNITS[u])
        }
    }

    #[test]
    fn integer_formatting_is_the_float_formatting() {
        let check = |b: u64| {
            assert_eq!(bytes(b), bytes_by_float(b), "{b}");
            if let Ok(s @ 1..) = i64::try_from(b) {
                assert_eq!(signed_bytes(-s), format!("-{}", bytes_by_float(b)), "-{b}");
            }
        };
        // Every unit boundary, the decimals' boundaries and the ties just around them.
        for u in 0..7u32 {
            let unit = 1u128 << (10 * u);
            for m in [1u128, 10, 100, 1000, 1024] {
                for t in [unit * m, unit * m * 5 / 1000, unit * m * 995 / 1000] {
                    for d in 0..70u128 {
                        for v in [t.saturating_sub(d), t + d] {
                            check(u64::try_from(v).unwrap_or(u64::MAX));
                        }
                    }
                }
            }
        }
        // Exact ties: k + 1/2 of the last printed digit, for each unit and precision.
        for u in 1..6u32 {
            for k in 0..2000u128 {
                for scale in [1u128, 10, 100] {
                    let tie = ((2 * k + 1) << (10 * u)) / (2 * scale);
                    check(u64::try_from(tie).unwrap_or(u64::MAX));
                }
            }
        }
        // And a spread of everything else, above 2^53 too.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(x >> (x % 64));
        }
        check(u64::MAX);
    }

    #[test]
    fn units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(300 << 20), "300 MiB");
        assert_eq!(
            bytes(u64::MAX),
            "16.0 EiB".replace("EiB", "PiB").replace("16.0", "16384")
        );
        assert_eq!(signed_bytes(-2048), "-2.00 KiB");
        assert_eq!(pct(0.5), "50.0%");
        assert_eq!(thousands(-1234567), "-1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(duration(90), "90 s");
        assert_eq!(duration(600), "10 min");
        assert_eq!(duration(9000), "2.5 h");
        assert_eq!(duration(900_000), "10 days");
    }
}
