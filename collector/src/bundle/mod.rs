//! The bundle format: the contract between `memgap-collect` and `memgap`.
//!
//! See the crate documentation (and `docs/bundle-format.md`) for the layout.

pub mod manifest;
pub mod members;
pub mod pack;

pub use manifest::*;

use serde::{Deserialize, Serialize};

/// File name of the manifest, directly under the bundle's top folder.
pub const MANIFEST: &str = "manifest.json";
/// Collector-written files live under this folder (per sample), apart from the kernel's own.
pub const COLLECTOR_DIR: &str = "memgap";
/// `statvfs` of every tmpfs/ramfs mount: a JSON array of [`TmpfsUsage`].
pub const TMPFS_FILE: &str = "memgap/tmpfs.json";
/// The OOM-killer reports found in the kernel ring buffer, records verbatim.
pub const OOM_FILE: &str = "memgap/kmsg-oom.txt";
/// `/var/log/pods` directory names (`<namespace>_<pod>_<uid>/<container>`), one per line.
pub const PODS_FILE: &str = "memgap/pods.txt";
/// `/var/log/containers` file names (`<pod>_<namespace>_<container>-<container id>.log`), one
/// per line: the only place on a node that maps container IDs to container names.
pub const CONTAINERS_FILE: &str = "memgap/containers.txt";

/// Path prefix of sample `index` when a bundle holds `samples` snapshots.
pub fn sample_prefix(index: u32, samples: u32) -> String {
    if samples <= 1 {
        String::new()
    } else {
        format!("snapshots/{index}/")
    }
}

/// Usage of one tmpfs or ramfs mount, from `statvfs(2)`; no kernel file holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TmpfsUsage {
    /// Host path of the mount point.
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    pub options: String,
    /// `None` when `statvfs` failed (see `error`).
    pub size_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub inodes: Option<u64>,
    pub inodes_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
