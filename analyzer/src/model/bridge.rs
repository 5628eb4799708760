//! Derived values of one cgroup, computed once: cAdvisor's metrics exactly as cAdvisor computes
//! them, and the usage-to-RSS bridge, a partition of usage into causes.
//!
//! The bridge (see `docs/model.md`) uses the kernel's own identities
//! (`fixtures/realdata/PROVENANCE.md` and memgap's accounting notes):
//! - v2: `memory.current ~= anon + file + kernel + sock`, with the anon LRU tighter than the
//!   type-based `anon` (charged pages not mapped by anyone: swap cache, partly unmapped THPs);
//! - v1 non-root: `usage_in_bytes ~= total_cache + total_rss + kmem.usage_in_bytes`
//!   (+ `total_swapcached` on 6.12+), TCP buffers being a separate counter;
//! - v1 root: `usage_in_bytes` is computed from global counters and excludes kernel memory.
//!
//! Each part is a slice of usage; whatever is left is an explicit remainder, compared with the
//! kernel's documented fuzz (per-CPU charge stock of 64 pages per CPU, stat flush lag).

use serde::Serialize;

use crate::parse::Flat;

const PAGE: u64 = 4096;
/// MEMCG_CHARGE_BATCH: pages each CPU may hold pre-charged, and the stat flush threshold.
const CHARGE_BATCH_PAGES: u64 = 64;

/// cAdvisor's `container_memory_*` metrics for this cgroup (cAdvisor v0.57 `setMemoryStats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cadvisor {
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    pub rss: u64,
    pub cache: u64,
    pub mapped_file: u64,
    pub swap: u64,
    pub failcnt: u64,
    pub kernel_usage: u64,
    pub max_usage_bytes: u64,
}

/// One slice of usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    pub key: &'static str,
    pub label: &'static str,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bridge {
    pub usage_bytes: u64,
    /// Which file usage comes from.
    pub usage_source: &'static str,
    /// A partition of usage, largest causes first after anon.
    pub parts: Vec<Part>,
    /// usage - sum(parts); positive: charged but not attributed; negative: parts exceed usage.
    pub remainder_bytes: i64,
    /// The kernel's documented fuzz for this usage: max(64 pages x CPUs, 0.5 %).
    pub fuzz_bytes: u64,
    pub within_fuzz: bool,
    /// Sub-parts that overlap the parts above (e.g. dirty is part of file cache).
    pub overlaps: Vec<Part>,
    /// Outside usage but worth showing next to it (v1 TCP buffers, swap).
    pub beside: Vec<Part>,
}

impl Bridge {
    pub fn part(&self, key: &str) -> u64 {
        self.parts
            .iter()
            .chain(&self.overlaps)
            .chain(&self.beside)
            .find(|p| p.key == key)
            .map_or(0, |p| p.bytes)
    }
}

/// What each part is, in words: one place for both cgroup versions and every output.
pub fn label(key: &str) -> &'static str {
    match key {
        "active_file" => "page cache, active",
        "anon" => "anonymous (mapped by processes)",
        "anon_thp" => "anonymous THP",
        "anon_unmapped" => "anonymous, not mapped (swap cache, partly unmapped THP)",
        "file_dirty" => "dirty page cache",
        "file_mapped" => "page cache mapped by processes",
        "file_unevictable" => "page cache, unevictable (mlocked)",
        "file_writeback" => "page cache under writeback",
        "inactive_file" => "page cache, inactive (reclaimable)",
        "kernel" => "kernel memory (slab, stacks, page tables, ...)",
        "kernel_other" => "kernel: other",
        "kernel_stack" => "kernel: stacks",
        "pagetables" => "kernel: page tables",
        "percpu" => "kernel: per-CPU",
        "sec_pagetables" => "kernel: secondary page tables",
        "shmem" => "shmem / tmpfs",
        "slab_reclaimable" => "kernel: slab, reclaimable (dentries, inodes)",
        "slab_unreclaimable" => "kernel: slab, unreclaimable",
        "sock" => "socket buffers",
        "swap" => "swapped out (not resident)",
        "swapcached" => "swap cache",
        "unevictable" => "unevictable (mlock, ramfs, SHM_LOCK)",
        "vmalloc" => "kernel: vmalloc",
        "zswap" => "kernel: zswap pool",
        _ => "other",
    }
}

/// The parts of v2 kernel memory that `memory.stat` itemizes (`kernel`, 5.18+, covers them and
/// more; `zswap` is counted apart).
pub const V2_KERNEL_PARTS: [&str; 7] = [
    "slab_reclaimable",
    "slab_unreclaimable",
    "kernel_stack",
    "pagetables",
    "sec_pagetables",
    "percpu",
    "vmalloc",
];
const V2_KERNEL_KEYS: [K; 7] = [
    K::slab_reclaimable,
    K::slab_unreclaimable,
    K::kernel_stack,
    K::pagetables,
    K::sec_pagetables,
    K::percpu,
    K::vmalloc,
];

/// Inputs for one cgroup.
pub struct Inputs<'a> {
    pub version: u8,
    pub is_root: bool,
    pub stat: &'a Flat,
    pub usage: Option<u64>,
    pub peak: Option<u64>,
    pub failcnt: Option<u64>,
    pub kmem: Option<u64>,
    pub tcp: Option<u64>,
    pub swap_current: Option<u64>,
}

/// The `memory.stat` keys read here, each a variant of [`K`] named as the key.
macro_rules! stat_keys {
    ($($key:ident),* $(,)?) => {
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy)]
        pub enum K { $($key),* }
        static KEYS: &[&str] = &[$(stringify!($key)),*];
    };
}

stat_keys!(
    // v2
    anon,
    shmem,
    file,
    active_anon,
    inactive_anon,
    active_file,
    inactive_file,
    slab_reclaimable,
    slab_unreclaimable,
    kernel_stack,
    pagetables,
    sec_pagetables,
    percpu,
    vmalloc,
    zswap,
    kernel,
    sock,
    file_dirty,
    file_writeback,
    file_mapped,
    unevictable,
    anon_thp,
    swapcached,
    // v1, each with its hierarchical `total_` form
    rss,
    total_rss,
    total_shmem,
    cache,
    total_cache,
    total_swapcached,
    total_active_anon,
    total_inactive_anon,
    total_active_file,
    total_inactive_file,
    dirty,
    total_dirty,
    writeback,
    total_writeback,
    mapped_file,
    total_mapped_file,
    total_unevictable,
    rss_huge,
    total_rss_huge,
    swap,
    total_swap,
);

/// A cgroup's `memory.stat`, read by key: the keys are found once per file layout (5,000
/// cgroups have one or two), not hashed ~50 times per cgroup.
pub struct Stat<'a> {
    flat: &'a Flat,
    at: std::borrow::Cow<'a, [Option<u32>]>,
}

impl<'a> Stat<'a> {
    pub fn new(flat: &'a Flat) -> Stat<'a> {
        Stat {
            flat,
            at: flat.positions(KEYS),
        }
    }

    pub fn get(&self, k: K) -> Option<u64> {
        self.flat.at(self.at[k as usize])
    }

    fn g(&self, k: K) -> u64 {
        self.get(k).unwrap_or(0)
    }

    /// A v1 value, hierarchical (`total_`) when present.
    pub fn v1(&self, total: K, own: K) -> Option<u64> {
        self.get(total).or_else(|| self.get(own))
    }

    fn h(&self, total: K, own: K) -> u64 {
        self.v1(total, own).unwrap_or(0)
    }
}

pub fn cadvisor(i: &Inputs) -> Cadvisor {
    let s = &Stat::new(i.stat);
    let g = |k: K| s.g(k);
    if i.version == 2 {
        // v2 root has no memory.current: cAdvisor (via runc) uses anon + file.
        let usage = if i.is_root {
            g(K::anon) + g(K::file)
        } else {
            i.usage.unwrap_or(0)
        };
        Cadvisor {
            usage_bytes: usage,
            working_set_bytes: usage.saturating_sub(g(K::inactive_file)),
            rss: g(K::anon),
            cache: g(K::file),
            mapped_file: g(K::file_mapped),
            swap: i.swap_current.unwrap_or(0),
            failcnt: 0,      // not populated on v2
            kernel_usage: 0, // not populated on v2
            max_usage_bytes: i.peak.unwrap_or(0),
        }
    } else {
        let usage = i.usage.unwrap_or(0);
        Cadvisor {
            usage_bytes: usage,
            working_set_bytes: usage.saturating_sub(s.h(K::total_inactive_file, K::inactive_file)),
            rss: s.h(K::total_rss, K::rss),
            cache: s.h(K::total_cache, K::cache),
            mapped_file: s.h(K::total_mapped_file, K::mapped_file),
            swap: s.h(K::total_swap, K::swap),
            failcnt: i.failcnt.unwrap_or(0),
            kernel_usage: i.kmem.unwrap_or(0),
            max_usage_bytes: i.peak.unwrap_or(0),
        }
    }
}

pub fn bridge(i: &Inputs) -> Option<Bridge> {
    if i.stat.is_empty() {
        return None;
    }
    // Room for every part and overlap the version has (one allocation each, not three);
    // parts beside usage are rare.
    let (most_parts, most_overlaps) = if i.version == 2 {
        (9 + V2_KERNEL_PARTS.len(), 6)
    } else {
        (8, 5)
    };
    let mut parts: Vec<Part> = Vec::with_capacity(most_parts);
    let mut overlaps: Vec<Part> = Vec::with_capacity(most_overlaps);
    let mut beside: Vec<Part> = Vec::new();
    let push = |v: &mut Vec<Part>, key: &'static str, bytes: u64| {
        if bytes > 0 {
            v.push(Part {
                key,
                label: label(key),
                bytes,
            });
        }
    };
    let s = &Stat::new(i.stat);
    let (usage, usage_source) = if i.version == 2 {
        let g = |k: K| s.g(k);
        let anon = g(K::anon);
        let shmem = g(K::shmem);
        let file = g(K::file);
        let lru_anon = g(K::active_anon) + g(K::inactive_anon);
        let (act, inact) = (g(K::active_file), g(K::inactive_file));
        parts.push(Part {
            key: "anon",
            label: "anonymous (mapped by processes)",
            bytes: anon,
        });
        // Charged anon pages on the LRU that `anon` does not count (it counts mapped pages).
        push(
            &mut parts,
            "anon_unmapped",
            lru_anon.saturating_sub(anon + shmem),
        );
        push(&mut parts, "shmem", shmem);
        push(&mut parts, "active_file", act);
        push(&mut parts, "inactive_file", inact);
        push(
            &mut parts,
            "file_unevictable",
            file.saturating_sub(shmem + act + inact),
        );
        let mut kparts = 0;
        for (key, k) in V2_KERNEL_PARTS.into_iter().zip(V2_KERNEL_KEYS) {
            let b = g(k);
            kparts += b;
            push(&mut parts, key, b);
        }
        push(&mut parts, "zswap", g(K::zswap));
        kparts += g(K::zswap);
        // `kernel` (5.18+) covers all kmem; older kernels only list the components.
        if let Some(k) = s.get(K::kernel) {
            push(&mut parts, "kernel_other", k.saturating_sub(kparts));
        }
        push(&mut parts, "sock", g(K::sock));
        push(&mut overlaps, "file_dirty", g(K::file_dirty));
        push(&mut overlaps, "file_writeback", g(K::file_writeback));
        push(&mut overlaps, "file_mapped", g(K::file_mapped));
        push(&mut overlaps, "unevictable", g(K::unevictable));
        push(&mut overlaps, "anon_thp", g(K::anon_thp));
        push(&mut overlaps, "swapcached", g(K::swapcached));
        push(&mut beside, "swap", i.swap_current.unwrap_or(0));
        if i.is_root {
            (
                g(K::anon) + file + s.get(K::kernel).unwrap_or(kparts) + g(K::sock),
                "root memory.stat: anon + file + kernel + sock",
            )
        } else {
            (i.usage?, "memory.current")
        }
    } else {
        let rss = s.h(K::total_rss, K::rss);
        let shmem = s.h(K::total_shmem, K::shmem);
        let cache = s.h(K::total_cache, K::cache);
        let swapcached = s.h(K::total_swapcached, K::swapcached);
        let lru_anon = s.h(K::total_active_anon, K::active_anon)
            + s.h(K::total_inactive_anon, K::inactive_anon);
        let (act, inact) = (
            s.h(K::total_active_file, K::active_file),
            s.h(K::total_inactive_file, K::inactive_file),
        );
        parts.push(Part {
            key: "anon",
            label: "anonymous (mapped by processes)",
            bytes: rss,
        });
        push(
            &mut parts,
            "anon_unmapped",
            lru_anon.saturating_sub(rss + shmem + swapcached),
        );
        push(&mut parts, "swapcached", swapcached);
        push(&mut parts, "shmem", shmem);
        push(&mut parts, "active_file", act);
        push(&mut parts, "inactive_file", inact);
        push(
            &mut parts,
            "file_unevictable",
            cache.saturating_sub(shmem + act + inact),
        );
        // Root usage is computed from global counters and excludes kernel memory.
        if i.is_root {
            push(&mut beside, "kernel", i.kmem.unwrap_or(0));
        } else {
            push(&mut parts, "kernel", i.kmem.unwrap_or(0));
        }
        for (key, total, own) in [
            ("file_dirty", K::total_dirty, K::dirty),
            ("file_writeback", K::total_writeback, K::writeback),
            ("file_mapped", K::total_mapped_file, K::mapped_file),
            ("unevictable", K::total_unevictable, K::unevictable),
            ("anon_thp", K::total_rss_huge, K::rss_huge),
        ] {
            push(&mut overlaps, key, s.h(total, own));
        }
        push(&mut beside, "sock", i.tcp.unwrap_or(0));
        push(&mut beside, "swap", s.h(K::total_swap, K::swap));
        (i.usage?, "memory.usage_in_bytes")
    };
    let sum: u64 = parts.iter().map(|p| p.bytes).sum();
    // Largest causes first; anon (always present) stays first as the baseline the gap is
    // measured from.
    parts[1..].sort_by_key(|p| std::cmp::Reverse(p.bytes));
    let mut b = Bridge {
        usage_bytes: usage,
        usage_source,
        parts,
        remainder_bytes: usage as i64 - sum as i64,
        fuzz_bytes: 0,
        within_fuzz: false,
        overlaps,
        beside,
    };
    b.settle(1);
    Some(b)
}

impl Bridge {
    /// Sets the fuzz for a node of `cpus` CPUs (the per-CPU charge batches); a bridge is built
    /// for one CPU, as the cgroups are read before the processes tell how many there are.
    pub fn settle(&mut self, cpus: u64) {
        self.fuzz_bytes = (CHARGE_BATCH_PAGES * PAGE * cpus.max(1)).max(self.usage_bytes / 200);
        self.within_fuzz = self.remainder_bytes.unsigned_abs() <= self.fuzz_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::flat;

    #[test]
    fn kernel_part_keys_name_the_kernel_parts() {
        for (name, k) in V2_KERNEL_PARTS.into_iter().zip(V2_KERNEL_KEYS) {
            assert_eq!(KEYS[k as usize], name);
        }
        assert_eq!(KEYS[K::total_swap as usize], "total_swap");
    }

    fn inputs<'a>(version: u8, stat: &'a Flat, usage: u64, kmem: Option<u64>) -> Inputs<'a> {
        Inputs {
            version,
            is_root: false,
            stat,
            usage: Some(usage),
            peak: None,
            failcnt: None,
            kmem,
            tcp: None,
            swap_current: None,
        }
    }

    /// The bridge of a cgroup on a 2-CPU node.
    fn bridge(i: &Inputs) -> Option<Bridge> {
        let mut b = super::bridge(i)?;
        b.settle(2);
        Some(b)
    }

    const AMZN2: &str = "../fixtures/realdata/elastic_elastic-agent-system-metrics/metric/system/cgroup/testdata/amzn2.zip/amzn2/sys/fs/cgroup/memory/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a96c459_d529_44ae_9f99_90d3798d6426.slice/cri-containerd-1d3d308a7d48a27814a68bf33a44acf4441c9c02463ca0bc1cdfdc8c0b4a8496.scope";
    const DOCKER2: &str = "../fixtures/realdata/elastic_elastic-agent-system-metrics/metric/system/cgroup/testdata/docker2.zip/docker2/sys/fs/cgroup/user.slice/user-1000.slice/session-520.scope";

    fn read(dir: &str, f: &str) -> String {
        std::fs::read_to_string(format!("{}/{dir}/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn real_v1_container_identity_holds_within_fuzz() {
        let stat = flat::parse(&read(AMZN2, "memory.stat"));
        let usage = read(AMZN2, "memory.usage_in_bytes").trim().parse().unwrap();
        let kmem = read(AMZN2, "memory.kmem.usage_in_bytes")
            .trim()
            .parse()
            .unwrap();
        let b = bridge(&inputs(1, &stat, usage, Some(kmem))).unwrap();
        assert!(
            b.within_fuzz,
            "remainder {} vs fuzz {}",
            b.remainder_bytes, b.fuzz_bytes
        );
        let c = cadvisor(&inputs(1, &stat, usage, Some(kmem)));
        assert_eq!(
            c.working_set_bytes,
            usage - stat.get("total_inactive_file").unwrap()
        );
        assert_eq!(c.rss, stat.get("total_rss").unwrap());
    }

    #[test]
    fn real_v2_lru_identity_holds_within_fuzz() {
        let stat = flat::parse(&read(DOCKER2, "memory.stat"));
        let usage = read(DOCKER2, "memory.current").trim().parse().unwrap();
        let b = bridge(&inputs(2, &stat, usage, None)).unwrap();
        assert!(
            b.within_fuzz,
            "remainder {} vs fuzz {}",
            b.remainder_bytes, b.fuzz_bytes
        );
        // The type-based anon leaves ~270 MB that the LRU shows as charged, unmapped anon.
        assert!(b.part("anon_unmapped") > 200 << 20);
        let c = cadvisor(&inputs(2, &stat, usage, None));
        assert_eq!(
            (c.rss, c.cache, c.kernel_usage, c.failcnt),
            (stat.get("anon").unwrap(), stat.get("file").unwrap(), 0, 0)
        );
    }

    #[test]
    fn real_scratch_cgroup_after_exit_is_all_shmem() {
        let dir = "../fixtures/realdata/localhost-v1/scratch-demo/after-exit/sys/fs/cgroup/memory/research_scratch";
        let stat = flat::parse(&read(dir, "memory.stat"));
        let usage = read(dir, "memory.usage_in_bytes").trim().parse().unwrap();
        let kmem = read(dir, "memory.kmem.usage_in_bytes")
            .trim()
            .parse()
            .unwrap();
        let b = bridge(&inputs(1, &stat, usage, Some(kmem))).unwrap();
        assert!(b.within_fuzz, "remainder {}", b.remainder_bytes);
        assert_eq!(b.parts[1].key, "shmem");
        assert_eq!(b.part("shmem"), 48 << 20);
    }

    #[test]
    fn root_v1_excludes_kernel_memory() {
        let dir = "../fixtures/realdata/localhost-v1/sys/fs/cgroup/memory";
        let stat = flat::parse(&read(dir, "memory.stat"));
        let usage = read(dir, "memory.usage_in_bytes").trim().parse().unwrap();
        let kmem = read(dir, "memory.kmem.usage_in_bytes")
            .trim()
            .parse()
            .unwrap();
        let mut i = inputs(1, &stat, usage, Some(kmem));
        i.is_root = true;
        let b = bridge(&i).unwrap();
        assert!(
            b.within_fuzz,
            "root remainder {} vs fuzz {}",
            b.remainder_bytes, b.fuzz_bytes
        );
        assert_eq!(
            b.beside.iter().find(|p| p.key == "kernel").unwrap().bytes,
            kmem
        );
    }

    #[test]
    fn empty_stat_gives_no_bridge() {
        let stat = Flat::default();
        assert!(bridge(&inputs(2, &stat, 5, None)).is_none());
    }
}
