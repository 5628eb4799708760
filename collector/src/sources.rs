//! What the collector reads: every path here is a read-only kernel file. Write-only or
//! side-effecting files (`memory.force_empty`, `memory.reclaim`, `cgroup.event_control`,
//! `memory.pressure_level`, `vm/drop_caches`, `vm/compact_memory`, `/proc/PID/environ`) are never
//! named, so they are never opened.

/// Node files, as host paths without the leading `/`.
pub const NODE_FILES: &[&str] = &[
    "proc/meminfo",
    "proc/vmstat",
    "proc/slabinfo",
    "proc/zoneinfo",
    "proc/buddyinfo",
    "proc/swaps",
    "proc/cgroups",
    "proc/mounts",
    "proc/self/mountinfo",
    "proc/version",
    "proc/cmdline",
    "proc/uptime",
    "proc/loadavg",
    "proc/pressure/memory",
    "proc/sys/fs/dentry-state",
    "proc/sys/fs/inode-state",
    "proc/sys/fs/file-nr",
    "proc/sysvipc/shm",
    "proc/sysvipc/msg",
    "proc/sysvipc/sem",
    "proc/sys/kernel/hostname",
    "proc/sys/kernel/osrelease",
    "proc/sys/kernel/pid_max",
];

/// Memory-related `/proc/sys/vm` tunables (read-only use; `drop_caches` and `compact_memory`
/// are write-only triggers and are deliberately absent).
pub const VM_TUNABLES: &[&str] = &[
    "admin_reserve_kbytes",
    "compact_unevictable_allowed",
    "dirty_background_bytes",
    "dirty_background_ratio",
    "dirty_bytes",
    "dirty_expire_centisecs",
    "dirty_ratio",
    "dirty_writeback_centisecs",
    "dirtytime_expire_seconds",
    "extfrag_threshold",
    "lowmem_reserve_ratio",
    "max_map_count",
    "min_free_kbytes",
    "min_slab_ratio",
    "min_unmapped_ratio",
    "nr_hugepages",
    "nr_overcommit_hugepages",
    "oom_dump_tasks",
    "oom_kill_allocating_task",
    "overcommit_kbytes",
    "overcommit_memory",
    "overcommit_ratio",
    "page-cluster",
    "panic_on_oom",
    "percpu_pagelist_high_fraction",
    "stat_interval",
    "swappiness",
    "user_reserve_kbytes",
    "vfs_cache_pressure",
    "watermark_boost_factor",
    "watermark_scale_factor",
    "zone_reclaim_mode",
];

/// Transparent huge page settings under `/sys/kernel/mm/transparent_hugepage/`.
pub const THP_FILES: &[&str] = &[
    "enabled",
    "defrag",
    "shmem_enabled",
    "use_zero_page",
    "hpage_pmd_size",
    "khugepaged/defrag",
    "khugepaged/max_ptes_none",
    "khugepaged/pages_to_scan",
    "khugepaged/scan_sleep_millisecs",
    "khugepaged/pages_collapsed",
    "khugepaged/full_scans",
];

/// Files of a cgroup v1 memory-controller directory. `memory.kmem.slabinfo` is added only on
/// request: reading it stalled kernel workers on hosts with many containers.
pub const V1_CGROUP_FILES: &[&str] = &[
    "cgroup.procs",
    "memory.stat",
    "memory.usage_in_bytes",
    "memory.limit_in_bytes",
    "memory.max_usage_in_bytes",
    "memory.failcnt",
    "memory.soft_limit_in_bytes",
    "memory.memsw.usage_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.memsw.max_usage_in_bytes",
    "memory.memsw.failcnt",
    "memory.kmem.usage_in_bytes",
    "memory.kmem.limit_in_bytes",
    "memory.kmem.max_usage_in_bytes",
    "memory.kmem.failcnt",
    "memory.kmem.tcp.usage_in_bytes",
    "memory.kmem.tcp.limit_in_bytes",
    "memory.kmem.tcp.max_usage_in_bytes",
    "memory.kmem.tcp.failcnt",
    "memory.oom_control",
    "memory.numa_stat",
    "memory.swappiness",
    "memory.use_hierarchy",
    "memory.move_charge_at_immigrate",
];

pub const V1_KMEM_SLABINFO: &str = "memory.kmem.slabinfo";

/// Files of a cgroup v2 directory.
pub const V2_CGROUP_FILES: &[&str] = &[
    "cgroup.procs",
    "cgroup.stat",
    "cgroup.controllers",
    "cgroup.subtree_control",
    "cgroup.type",
    "memory.current",
    "memory.peak",
    "memory.min",
    "memory.low",
    "memory.high",
    "memory.max",
    "memory.stat",
    "memory.events",
    "memory.events.local",
    "memory.numa_stat",
    "memory.pressure",
    "memory.swap.current",
    "memory.swap.high",
    "memory.swap.max",
    "memory.swap.peak",
    "memory.swap.events",
    "memory.zswap.current",
    "memory.zswap.max",
    "memory.zswap.writeback",
    "memory.oom.group",
];

/// Files of each `/proc/PID`. Never `environ`: it holds secrets and memgap does not need it.
/// `smaps_rollup` comes last: it takes the mmap lock and is the read that can hang, and a
/// timed-out read keeps the files read before it.
pub const PROCESS_FILES: &[&str] = &[
    "status",
    "cgroup",
    "oom_score",
    "oom_score_adj",
    "comm",
    "cmdline",
    "stat",
    "smaps_rollup",
];
