//! Reading one kernel file: read-only, to EOF (pseudo-files report size 0), with a size cap.

use std::fs::File;
use std::io::{self, Read};
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
    buf.clear();
    // `File::open` is O_RDONLY | O_CLOEXEC: nothing is ever opened for writing.
    let file = File::open(path).map_err(classify)?;
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
    }
}
