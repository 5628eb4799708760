//! `manifest.json`: what was collected, how, and what could not be.

use serde::{Deserialize, Serialize};

/// Version of the bundle layout and manifest schema. Bumped on any change a reader must know of;
/// an analyzer refuses bundles with a newer major version than its own.
pub const FORMAT_VERSION: u32 = 1;

/// Most `missed` records kept in the manifest; the rest are only counted, so a node where every
/// file is unreadable still yields a small manifest.
pub const MAX_MISSED_RECORDS: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub collector_version: String,
    /// Node name, or its stable hash when `redacted`.
    pub hostname: String,
    pub kernel_release: String,
    /// UTC, RFC 3339.
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub cgroup_mode: CgroupMode,
    /// Cgroup hierarchies walked, as host paths.
    pub cgroup_mounts: Vec<CgroupMount>,
    /// The directory the host's `/proc` and `/sys` were read under (`/` on the node itself).
    pub root: String,
    pub options: Options,
    pub redacted: bool,
    /// One per snapshot; a single-sample bundle has one with an empty prefix.
    pub samples: Vec<Sample>,
    /// Totals over all samples.
    pub counts: Counts,
    /// Files that exist but could not be collected, and expected node files that are absent.
    pub missed: Vec<Missed>,
    /// Missed records beyond [`MAX_MISSED_RECORDS`], counted only.
    #[serde(default)]
    pub missed_not_listed: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Memory controller on a cgroup v1 hierarchy, no cgroup2 mount.
    V1,
    /// Memory controller on the unified (v2) hierarchy.
    V2,
    /// Memory controller on v1, with a cgroup2 mount beside it (systemd's hybrid layout).
    Hybrid,
    /// No memory cgroup hierarchy was found.
    None,
}

impl CgroupMode {
    /// The name used in the manifest (`v1`, `v2`, `hybrid`, `none`).
    pub fn name(self) -> &'static str {
        match self {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::None => "none",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CgroupMount {
    /// Host path of the mount point, e.g. `/sys/fs/cgroup/memory`.
    pub path: String,
    /// 1 or 2.
    pub version: u8,
    /// Whether the memory controller is on this hierarchy.
    pub memory: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Options {
    pub jobs: usize,
    pub samples: u32,
    pub interval_ms: u64,
    pub read_timeout_ms: u64,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub kmem_slabinfo: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub index: u32,
    /// Path prefix of this sample's files below the bundle's top folder: `""` or `snapshots/N/`.
    pub prefix: String,
    pub started_at: String,
    pub finished_at: String,
    pub counts: Counts,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub node_files: u64,
    pub cgroups: u64,
    pub processes: u64,
    /// Kernel files stored (packed or not).
    pub files: u64,
    /// Bytes of kernel file content stored.
    pub bytes: u64,
    /// Processes that exited during the walk (skipped, not errors).
    pub vanished_processes: u64,
    /// Cgroups removed during the walk (skipped, not errors).
    pub vanished_cgroups: u64,
    pub missed: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.node_files += o.node_files;
        self.cgroups += o.cgroups;
        self.processes += o.processes;
        self.files += o.files;
        self.bytes += o.bytes;
        self.vanished_processes += o.vanished_processes;
        self.vanished_cgroups += o.vanished_cgroups;
        self.missed += o.missed;
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Missed {
    /// Host path of the file.
    pub path: String,
    pub reason: MissReason,
    /// The OS error or other detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default)]
    pub sample: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    /// EACCES / EPERM.
    Permission,
    /// The read did not return within the read timeout and was abandoned.
    Timeout,
    /// Larger than the per-file cap; nothing stored.
    TooLarge,
    /// The bundle's total size cap was reached.
    TotalCap,
    /// An expected node file does not exist on this kernel (e.g. PSI disabled).
    Absent,
    /// Any other I/O error (EIO, ENODEV, EOPNOTSUPP, ...).
    Io,
}

impl std::fmt::Display for MissReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            MissReason::Permission => "permission denied",
            MissReason::Timeout => "timed out",
            MissReason::TooLarge => "too large",
            MissReason::TotalCap => "bundle size cap reached",
            MissReason::Absent => "absent",
            MissReason::Io => "I/O error",
        };
        f.write_str(s)
    }
}
