//! Nested-keyed files: `KEY sub=value sub=value ...` (`memory.pressure`,
//! `/proc/pressure/memory`, v2 `memory.numa_stat`) and v1 `memory.numa_stat`
//! (`total=24592 N0=24592`, in pages).

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Nested {
    pub rows: BTreeMap<String, BTreeMap<String, f64>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bad_lines: Vec<usize>,
}

pub fn parse(text: &str) -> Nested {
    let mut out = Nested::default();
    for (i, line) in super::lines(text).enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let first = fields.next().unwrap_or_default();
        // v1 numa_stat puts the row's own value on the key: `total=24592 N0=24592`.
        let (key, own) = match first.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (first, None),
        };
        let mut row = BTreeMap::new();
        let mut ok = !key.is_empty();
        if let Some(v) = own {
            match v.parse::<f64>() {
                Ok(v) => {
                    row.insert("value".to_string(), v);
                }
                Err(_) => ok = false,
            }
        }
        for f in fields {
            match f.split_once('=').map(|(k, v)| (k, v.parse::<f64>())) {
                Some((k, Ok(v))) if v.is_finite() && v >= 0.0 => {
                    row.insert(k.to_string(), v);
                }
                _ => ok = false,
            }
        }
        if ok && !row.is_empty() {
            out.rows.insert(key.to_string(), row);
        } else {
            out.bad_lines.push(i + 1);
        }
    }
    out
}

/// Pressure stall information: share of time (percent) tasks stalled on memory, and total
/// stall time in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Psi {
    pub some_avg10: f64,
    pub some_avg60: f64,
    pub some_avg300: f64,
    pub some_total_us: u64,
    pub full_avg10: f64,
    pub full_avg60: f64,
    pub full_avg300: f64,
    pub full_total_us: u64,
}

/// `/proc/pressure/memory` or `memory.pressure`; `None` without a `some` line.
pub fn psi(text: &str) -> Option<Psi> {
    let n = parse(text);
    let some = n.rows.get("some")?;
    let g = |r: Option<&BTreeMap<String, f64>>, k: &str| {
        r.and_then(|r| r.get(k)).copied().unwrap_or(0.0)
    };
    let full = n.rows.get("full");
    Some(Psi {
        some_avg10: g(Some(some), "avg10"),
        some_avg60: g(Some(some), "avg60"),
        some_avg300: g(Some(some), "avg300"),
        some_total_us: g(Some(some), "total") as u64,
        full_avg10: g(full, "avg10"),
        full_avg60: g(full, "avg60"),
        full_avg300: g(full, "avg300"),
        full_total_us: g(full, "total") as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_pressure_and_numa_stat() {
        let p = psi(include_str!(
            "../../../fixtures/realdata/localhost-v1/proc/pressure/memory"
        ))
        .unwrap();
        assert!(p.some_avg10 >= 0.0);
        let v1 = parse(include_str!("../../../fixtures/realdata/localhost-v1/scratch-demo/alive/sys/fs/cgroup/memory/research_scratch/memory.numa_stat"));
        assert!(v1.bad_lines.is_empty());
        assert_eq!(v1.rows["anon"]["value"], 24579.0);
        assert_eq!(v1.rows["hierarchical_total"]["N0"], 24592.0);
        let v2 = parse(include_str!("../../../fixtures/realdata/facebookincubator_below/below/cgroupfs/src/test.rs.L824.memory.numa_stat"));
        assert!(v2.bad_lines.is_empty(), "{:?}", v2.bad_lines);
        assert!(v2.rows["anon"].contains_key("N3"));
    }

    #[test]
    fn malformed_and_empty() {
        let n = parse("some avg10=x avg60=1\nfull avg10=1.5 total=9\nN0\n");
        assert_eq!(n.bad_lines, vec![1, 3]);
        assert_eq!(n.rows["full"]["total"], 9.0);
        assert!(psi("").is_none());
        assert_eq!(parse(""), Nested::default());
    }
}
