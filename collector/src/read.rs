//! Reading one kernel file: read-only, to EOF (pseudo-files report size 0), with a size cap.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::bundle::MissReason;

/// Why a file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// ENOENT / ESRCH: the file, its process or its cgroup is gone. Not an error for the walk.
    Vanished,
    Missed(MissReason, String),
}

/// Reads `path` into `buf` (cleared first), refusing files larger than `cap` bytes.
pub fn read_capped(path: &Path, buf: &mut Vec<u8>, cap: u64) -> Result<(), ReadError> {
    // `File::open` is O_RDONLY | O_CLOEXEC: nothing is ever opened for writing.
    read_file(File::open(path).map_err(classify)?, buf, cap)
}

fn read_file(file: File, buf: &mut Vec<u8>, cap: u64) -> Result<(), ReadError> {
    buf.clear();
    let n = file
        .take(cap.saturating_add(1))
        .read_to_end(buf)
        .map_err(classify)?;
    if n as u64 > cap {
        buf.clear();
        return Err(ReadError::Missed(
            MissReason::TooLarge,
            format!("larger than the {cap}-byte per-file cap"),
        ));
    }
    Ok(())
}

/// An open directory (a cgroup or `/proc/PID`) whose files are opened relative to it: no path
/// walk per file, and all files of a process come from the same process even if its PID is
/// reused meanwhile.
pub struct Dir(OwnedFd);

impl Dir {
    pub fn open(path: &Path) -> Result<Dir, ReadError> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| ReadError::Missed(MissReason::Io, "path contains NUL".into()))?;
        // SAFETY: `c` is NUL-terminated; a non-negative result is a new descriptor we own.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(classify(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Reads file `name` of this directory into `buf`, refusing more than `cap` bytes.
    pub fn read(&self, name: &str, buf: &mut Vec<u8>, cap: u64) -> Result<(), ReadError> {
        buf.clear();
        let c = CString::new(name)
            .map_err(|_| ReadError::Missed(MissReason::Io, "name contains NUL".into()))?;
        // SAFETY: valid directory descriptor and NUL-terminated name; read-only open.
        let fd = unsafe {
            libc::openat(
                self.0.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(classify(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor owned by nobody else.
        read_file(unsafe { File::from_raw_fd(fd) }, buf, cap)
    }
}

impl ReadError {
    /// How a file that could not be read is recorded in the manifest. A vanished expected
    /// file is `absent`.
    pub fn into_reason(self) -> (MissReason, String) {
        match self {
            ReadError::Vanished => (MissReason::Absent, String::new()),
            ReadError::Missed(r, d) => (r, d),
        }
    }
}

pub fn classify(e: io::Error) -> ReadError {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => ReadError::Vanished,
        Some(libc::EACCES) | Some(libc::EPERM) => {
            ReadError::Missed(MissReason::Permission, e.to_string())
        }
        _ if e.kind() == io::ErrorKind::NotFound => ReadError::Vanished,
        _ => ReadError::Missed(MissReason::Io, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_classifies() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let mut buf = Vec::new();
        read_capped(&p, &mut buf, 10).unwrap();
        assert_eq!(buf, b"0123456789");
        assert!(matches!(
            read_capped(&p, &mut buf, 9),
            Err(ReadError::Missed(MissReason::TooLarge, _))
        ));
        assert!(matches!(
            read_capped(&dir.path().join("nope"), &mut buf, 9),
            Err(ReadError::Vanished)
        ));
        let d = Dir::open(dir.path()).unwrap();
        d.read("f", &mut buf, 100).unwrap();
        assert_eq!(buf, b"0123456789");
        assert!(matches!(
            d.read("nope", &mut buf, 9),
            Err(ReadError::Vanished)
        ));
        assert!(matches!(
            Dir::open(&p),
            Err(ReadError::Missed(MissReason::Io, _))
        ));
    }
}
