//! memgap's collector, and the bundle format it writes.
//!
//! # Bundle layout (format version 1)
//!
//! A bundle is a gzip-compressed ustar archive with one top folder,
//! `memgap-<host>-<UTC time>/`, compressed as gzip members of ~1 MiB of tar that name their
//! own length ([`bundle::members`]: one gzip stream to any gzip reader, inflated in parallel by
//! `memgap`), holding:
//!
//! | path below the top folder | content |
//! |---|---|
//! | `proc/meminfo`, `proc/vmstat`, ... | node files, verbatim, one entry each, under their host path |
//! | `proc/sys/vm/<tunable>`, `sys/kernel/mm/transparent_hugepage/...` | tunables, verbatim |
//! | `sys/fs/cgroup/<hierarchy>/<cgroup path>/memgap.files` | the cgroup's files, packed (below) |
//! | `proc/<pid>/memgap.files` | the process's `status`, `cgroup`, ... `smaps_rollup`, packed |
//! | `memgap/tmpfs.json` | `statvfs` of every tmpfs/ramfs mount ([`bundle::TmpfsUsage`]) |
//! | `memgap/pods.txt` | `/var/log/pods` directory names, when the node has them |
//! | `memgap/containers.txt` | `/var/log/containers` file names (container ID to name), when present |
//! | `memgap/kmsg-oom.txt` | OOM-killer reports from the kernel ring buffer, records verbatim |
//! | `manifest.json` | [`bundle::Manifest`]: versions, host, times, options, counts, missed files; last entry |
//!
//! A bundle of `N > 1` samples holds each snapshot's files under `snapshots/<i>/` instead
//! (the OOM reports and the manifest stay at the top).
//!
//! A *pack* (`memgap.files`) keeps each file verbatim behind a `==> NAME LENGTH <==` line; see
//! [`bundle::pack`]. One entry per directory instead of per file made bundles about 8x smaller
//! and reading them 14-18x faster on a 7,500-cgroup node, while `tar -xOf b.tar.gz --wildcards
//! '*/kubepods/*memgap.files' | grep -A3 '==> memory.stat'` still works by hand.

pub mod bundle;
pub mod bytes;
pub mod collect;
pub mod discover;
pub mod kmsg;
pub mod mounts;
pub mod output;
pub mod read;
pub mod redact;
pub mod sources;
pub mod synth;

pub use collect::{collect, Config};
