//! `/proc/slabinfo` version 2.1.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlabCache {
    pub name: String,
    pub active_objs: u64,
    pub num_objs: u64,
    pub objsize: u64,
    pub objperslab: u64,
    pub pagesperslab: u64,
    pub num_slabs: u64,
    /// Memory the cache holds: slabs x pages per slab x 4 KiB.
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Slabinfo {
    pub version: String,
    pub caches: Vec<SlabCache>,
    pub bad_lines: Vec<usize>,
}

const PAGE: u64 = 4096;

pub fn parse(text: &str) -> Slabinfo {
    let mut out = Slabinfo::default();
    for (i, line) in super::lines(text).enumerate() {
        if let Some(v) = line.strip_prefix("slabinfo - version:") {
            out.version = v.trim().to_string();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        // name active num objsize objperslab pagesperslab : tunables l b s : slabdata active num avail
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let n = |k: usize| f.get(k).and_then(|s| s.parse::<u64>().ok());
        let parsed = (|| {
            if f.len() < 16 || f[6] != ":" || f[11] != ":" || f[12] != "slabdata" {
                return None;
            }
            let (pages, slabs) = (n(5)?, n(14)?);
            Some(SlabCache {
                name: f[0].to_string(),
                active_objs: n(1)?,
                num_objs: n(2)?,
                objsize: n(3)?,
                objperslab: n(4)?,
                pagesperslab: pages,
                num_slabs: slabs,
                bytes: slabs.checked_mul(pages)?.checked_mul(PAGE)?,
            })
        })();
        match parsed {
            Some(c) => out.caches.push(c),
            None => out.bad_lines.push(i + 1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_slabinfo() {
        let s = parse(include_str!(
            "../../../fixtures/realdata/localhost-v1/proc/slabinfo"
        ));
        assert_eq!(s.version, "2.1");
        assert!(s.bad_lines.is_empty(), "{:?}", s.bad_lines);
        let d = s.caches.iter().find(|c| c.name == "dentry").unwrap();
        assert_eq!(d.objsize, 192);
        assert!(d.bytes > 0);
        let old = parse(include_str!(
            "../../../fixtures/realdata/prometheus_procfs/testdata/fixtures/proc/slabinfo"
        ));
        assert!(old.caches.len() > 100);
    }

    #[test]
    fn malformed_and_empty() {
        let s = parse("slabinfo - version: 2.1\ndentry 1 2 3\nkmalloc-8 10 10 8 512 1 : tunables 0 0 0 : slabdata 1 1 0\n");
        assert_eq!(s.bad_lines, vec![2]);
        assert_eq!(s.caches[0].bytes, 4096);
        assert_eq!(parse(""), Slabinfo::default());
    }
}
