//! Finding what to walk: cgroup hierarchies and tmpfs mounts, from the mount table.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::bundle::{CgroupMode, CgroupMount, TmpfsUsage};
use crate::mounts::{self, Mount};

/// Cgroup hierarchies and tmpfs mounts of the host, as host paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub mode: CgroupMode,
    pub cgroups: Vec<CgroupMount>,
    pub tmpfs: Vec<Mount>,
}

/// Host path (`/sys/fs/cgroup/memory`) to a path below `root`.
pub fn under_root(root: &Path, host_path: &str) -> std::path::PathBuf {
    root.join(host_path.trim_start_matches('/'))
}

/// Reads the mount table of the host's init (`proc/1/mounts`), falling back to `proc/mounts`,
/// and finds the cgroup hierarchies; without a usable mount table, probes the usual paths.
pub fn discover(root: &Path) -> Discovery {
    let text = ["proc/1/mounts", "proc/mounts"]
        .iter()
        .find_map(|p| std::fs::read_to_string(root.join(p)).ok())
        .unwrap_or_default();
    let (all, _) = mounts::parse(&text);
    let mut cgroups: Vec<CgroupMount> = Vec::new();
    let mut tmpfs: Vec<Mount> = Vec::new();
    for m in all {
        let seen = |v: &[CgroupMount]| v.iter().any(|c| c.path == m.target);
        match m.fstype.as_str() {
            // The same hierarchy may be mounted twice; one walk is enough.
            "cgroup"
                if m.has_option("memory")
                    && !seen(&cgroups)
                    && !cgroups.iter().any(|c| c.version == 1 && c.memory) =>
            {
                cgroups.push(CgroupMount {
                    path: m.target.clone(),
                    version: 1,
                    memory: true,
                });
            }
            "cgroup2" if !seen(&cgroups) && !cgroups.iter().any(|c| c.version == 2) => {
                let controllers =
                    std::fs::read_to_string(under_root(root, &m.target).join("cgroup.controllers"))
                        .unwrap_or_default();
                let memory = controllers.split_whitespace().any(|c| c == "memory");
                cgroups.push(CgroupMount {
                    path: m.target.clone(),
                    version: 2,
                    memory,
                });
            }
            "tmpfs" | "ramfs" if !tmpfs.iter().any(|t| t.target == m.target) => tmpfs.push(m),
            _ => {}
        }
    }
    if cgroups.is_empty() {
        cgroups = probe(root);
    }
    let v1 = cgroups.iter().any(|c| c.version == 1);
    let v2 = cgroups.iter().find(|c| c.version == 2);
    let mode = match (v1, v2) {
        (true, Some(_)) => CgroupMode::Hybrid,
        (true, None) => CgroupMode::V1,
        (false, Some(c)) if c.memory => CgroupMode::V2,
        _ => CgroupMode::None,
    };
    Discovery {
        mode,
        cgroups,
        tmpfs,
    }
}

fn probe(root: &Path) -> Vec<CgroupMount> {
    let mut found = Vec::new();
    if root.join("sys/fs/cgroup/memory/memory.stat").exists() {
        found.push(CgroupMount {
            path: "/sys/fs/cgroup/memory".into(),
            version: 1,
            memory: true,
        });
    }
    for p in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let controllers = under_root(root, p).join("cgroup.controllers");
        if let Ok(c) = std::fs::read_to_string(&controllers) {
            let memory = c.split_whitespace().any(|c| c == "memory");
            found.push(CgroupMount {
                path: p.into(),
                version: 2,
                memory,
            });
            break;
        }
    }
    found
}

/// `statvfs` of each tmpfs/ramfs mount (under `root`).
// statvfs field types are 32-bit on some targets; the casts are no-ops only on 64-bit ones.
#[allow(clippy::unnecessary_cast)]
pub fn tmpfs_usage(root: &Path, mounts: &[Mount]) -> Vec<TmpfsUsage> {
    mounts
        .iter()
        .map(|m| {
            let mut u = TmpfsUsage {
                mount_point: m.target.clone(),
                fstype: m.fstype.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
                size_bytes: None,
                used_bytes: None,
                inodes: None,
                inodes_used: None,
                error: None,
            };
            match statvfs(&under_root(root, &m.target)) {
                Ok(s) => {
                    let frsize = s.f_frsize as u64;
                    u.size_bytes = Some(s.f_blocks as u64 * frsize);
                    u.used_bytes =
                        Some((s.f_blocks as u64).saturating_sub(s.f_bfree as u64) * frsize);
                    u.inodes = Some(s.f_files as u64);
                    u.inodes_used = Some((s.f_files as u64).saturating_sub(s.f_ffree as u64));
                }
                Err(e) => u.error = Some(e.to_string()),
            }
            u
        })
        .collect()
}

fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs; the kernel fills
    // it completely when the call returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc == 0 {
        // SAFETY: initialised by the successful call above.
        Ok(unsafe { s.assume_init() })
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_mounts(text: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::write(d.path().join("proc/mounts"), text).unwrap();
        d
    }

    #[test]
    fn detects_modes() {
        let v1 = "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        assert_eq!(discover(root_with_mounts(v1).path()).mode, CgroupMode::V1);
        let hybrid = format!("{v1}cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n");
        let d = discover(root_with_mounts(&hybrid).path());
        assert_eq!(d.mode, CgroupMode::Hybrid);
        assert_eq!(d.cgroups.len(), 2);
        let r = root_with_mounts(
            "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n",
        );
        std::fs::create_dir_all(r.path().join("sys/fs/cgroup")).unwrap();
        std::fs::write(
            r.path().join("sys/fs/cgroup/cgroup.controllers"),
            "cpu io memory pids\n",
        )
        .unwrap();
        let d = discover(r.path());
        assert_eq!(d.mode, CgroupMode::V2);
        assert_eq!(d.tmpfs.len(), 1);
        assert_eq!(discover(root_with_mounts("").path()).mode, CgroupMode::None);
    }

    #[test]
    fn statvfs_of_a_real_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dev/shm")).unwrap();
        let m = Mount {
            source: "tmpfs".into(),
            target: "/dev/shm".into(),
            fstype: "tmpfs".into(),
            options: "rw".into(),
        };
        let u = tmpfs_usage(d.path(), std::slice::from_ref(&m));
        assert!(u[0].size_bytes.is_some(), "{u:?}");
        let u = tmpfs_usage(&d.path().join("missing"), &[m]);
        assert!(u[0].error.is_some());
    }
}
