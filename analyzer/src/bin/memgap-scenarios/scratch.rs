//! Everything a scenario creates, removed when it is dropped, in reverse order, whether the
//! scenario succeeded or not: worker processes, SysV segments, files, cgroups.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A worker process and its pipes.
pub struct Worker {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the worker's action; returns what it reports when ready (`None` if it died
    /// first, as an OOM-killed worker does).
    pub fn go(&mut self) -> Option<u64> {
        self.send("go");
        self.read_line()
            .and_then(|l| l.strip_prefix("ready ").and_then(|n| n.trim().parse().ok()))
    }

    pub fn send(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    pub fn read_line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.stdout.read_line(&mut l) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(l),
        }
    }

    /// Waits for the worker to exit by itself.
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.stdin = None;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

#[derive(Default)]
pub struct Scratch {
    cgroups: Vec<PathBuf>,
    workers: Vec<Worker>,
    segments: Vec<i32>,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Scratch {
    /// Creates a cgroup (remembered for removal).
    pub fn cgroup(&mut self, path: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir(path)?;
        self.cgroups.push(path.to_path_buf());
        Ok(path.to_path_buf())
    }

    /// Starts a worker and moves it into `cgroup` before it does anything.
    pub fn worker(&mut self, cgroup: &Path, action: &[&str]) -> std::io::Result<&mut Worker> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("worker")
            .args(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let pid = child.id();
        self.workers.push(Worker {
            child,
            stdin,
            stdout,
        });
        move_to(cgroup, pid)?;
        Ok(self.workers.last_mut().expect("just pushed"))
    }

    pub fn last_worker(&mut self) -> &mut Worker {
        self.workers.last_mut().expect("a worker was started")
    }

    pub fn segment(&mut self, id: i32) {
        self.segments.push(id);
    }

    pub fn file(&mut self, p: &Path) -> PathBuf {
        self.files.push(p.to_path_buf());
        p.to_path_buf()
    }

    pub fn dir(&mut self, p: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(p)?;
        self.dirs.push(p.to_path_buf());
        Ok(p.to_path_buf())
    }

    /// Removes a cgroup now (the dying-cgroup scenario removes them before collecting).
    pub fn remove_cgroup(&mut self, path: &Path) -> std::io::Result<()> {
        rmdir_retry(path)?;
        self.cgroups.retain(|c| c != path);
        Ok(())
    }
}

pub fn move_to(cgroup: &Path, pid: u32) -> std::io::Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), format!("{pid}\n"))
}

fn rmdir_retry(p: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..100 {
        match std::fs::remove_dir(p) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Err(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    last
}

/// Drops a file's pages from the page cache, so that cgroups charged for them can be freed.
pub fn evict(p: &Path) {
    if let Ok(f) = std::fs::File::open(p) {
        // SAFETY: advice on a file descriptor we own.
        unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        for id in self.segments.drain(..) {
            // SAFETY: removing a segment our worker created.
            unsafe {
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
        for f in self.files.drain(..).rev() {
            evict(&f);
            let _ = std::fs::remove_file(&f);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir_all(&d);
        }
        for c in self.cgroups.drain(..).rev() {
            if let Err(e) = rmdir_retry(&c) {
                eprintln!("memgap-scenarios: could not remove {}: {e}", c.display());
            }
        }
    }
}
