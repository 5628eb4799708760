//! `/proc/sysvipc/shm`: SysV shared memory segments of the reader's IPC namespace. Columns are
//! found by the header's names; `size`, `rss` and `swap` are bytes, `perms` octal.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShmSegment {
    pub key: i64,
    pub shmid: u64,
    pub size: u64,
    pub cpid: u64,
    pub lpid: u64,
    pub nattch: u64,
    pub uid: u64,
    /// Resident bytes (kernels since 4.x print it); `None` on older kernels.
    pub rss: Option<u64>,
    pub swap: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Shm {
    pub segments: Vec<ShmSegment>,
    pub bad_lines: Vec<usize>,
}

pub fn parse(text: &str) -> Shm {
    let mut out = Shm::default();
    let mut lines = super::lines(text).enumerate();
    let Some((_, header)) = lines.next() else {
        return out;
    };
    let cols: Vec<&str> = header.split_ascii_whitespace().collect();
    let idx = |name: &str| cols.iter().position(|c| *c == name);
    let (key, shmid, size, cpid, lpid, nattch, uid) = match (
        idx("key"),
        idx("shmid"),
        idx("size"),
        idx("cpid"),
        idx("lpid"),
        idx("nattch"),
        idx("uid"),
    ) {
        (Some(a), Some(b), Some(c), Some(d), Some(e), Some(f), Some(g)) => (a, b, c, d, e, f, g),
        _ => {
            out.bad_lines.push(1);
            return out;
        }
    };
    let (rss, swap) = (idx("rss"), idx("swap"));
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let n = |k: usize| f.get(k).and_then(|s| s.parse::<u64>().ok());
        let seg = (|| {
            Some(ShmSegment {
                key: f.get(key)?.parse().ok()?,
                shmid: n(shmid)?,
                size: n(size)?,
                cpid: n(cpid)?,
                lpid: n(lpid)?,
                nattch: n(nattch)?,
                uid: n(uid)?,
                rss: rss.and_then(n),
                swap: swap.and_then(n),
            })
        })();
        match seg {
            Some(s) => out.segments.push(s),
            None => out.bad_lines.push(i + 1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_orphaned_segment() {
        let s = parse(include_str!(
            "../../../fixtures/realdata/localhost-v1/scratch-demo/after-exit/proc/sysvipc/shm"
        ));
        assert!(s.bad_lines.is_empty());
        assert_eq!(s.segments.len(), 1);
        assert_eq!(s.segments[0].nattch, 0);
        assert_eq!(s.segments[0].size, 16 << 20);
        assert_eq!(s.segments[0].rss, Some(16 << 20));
    }

    #[test]
    fn malformed_and_empty() {
        let h = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n";
        let s = parse(&format!(
            "{h}0 1 600 x 1 1 0 0 0 0 0 0 0 0 0 0\n0 2 600 4096 1 1 1 0 0 0 0 0 0 0 4096 0\n"
        ));
        assert_eq!(s.bad_lines, vec![2]);
        assert_eq!(s.segments.len(), 1);
        assert_eq!(parse(""), Shm::default());
        assert_eq!(parse("garbage header\n1 2 3\n").bad_lines, vec![1]);
    }
}
