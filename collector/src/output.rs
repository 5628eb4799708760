//! Where the bundle goes: a temporary file beside the final name, mode 0600, renamed only once
//! complete; removed on any failure and on SIGINT/SIGTERM. Never a truncated bundle under the
//! final name.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The temporary file of the write in progress, for the signal handler thread to remove.
static PENDING: Mutex<Option<PathBuf>> = Mutex::new(None);

/// A bundle being written to a temporary file; dropped without [`Pending::commit`], it removes
/// the file.
pub struct Pending {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl Pending {
    /// Creates `.<name>.<pid>.tmp` beside `dest` with mode 0600.
    pub fn create(dest: &Path) -> io::Result<(Self, File)> {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name")
        })?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = Some(tmp.clone());
        Ok((
            Pending {
                tmp,
                dest: dest.to_path_buf(),
                done: false,
            },
            file,
        ))
    }

    /// Makes the written file durable and gives it its final name.
    pub fn commit(mut self, file: File) -> io::Result<PathBuf> {
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest)?;
        self.done = true;
        *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(self.dest.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
            *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// Whether `path` exists and is not a regular file (a device such as `/dev/null`, a FIFO): such
/// an output is written in place, since renaming a temporary file over it would replace it.
pub fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// On SIGINT, SIGTERM or SIGHUP: remove the partial bundle and exit with 128 + signal.
pub fn install_signal_cleanup() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("memgap-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                if let Some(tmp) = PENDING.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = std::fs::remove_file(&tmp);
                }
                eprintln!("memgap-collect: interrupted by signal {sig}; no bundle written");
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn commit_renames_and_drop_removes() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("b.tar.gz");
        let (p, mut f) = Pending::create(&dest).unwrap();
        f.write_all(b"x").unwrap();
        p.commit(f).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"x");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let dest2 = d.path().join("c.tar.gz");
        let (p, _f) = Pending::create(&dest2).unwrap();
        drop(p);
        assert!(!dest2.exists());
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
    }
}
