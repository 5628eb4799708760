//! OOM-killer reports from the kernel ring buffer.
//!
//! `/dev/kmsg` is read with `O_NONBLOCK`: each `read` returns one record
//! (`prio,seq,usec,flags;message` plus ` KEY=value` continuation lines) until `EAGAIN`. Only OOM
//! reports are kept, whole: from `... invoked oom-killer:` through the memory state, the task
//! list, the `oom-kill:` summary, `Killed process ...` and any `oom_reaper:` line after it.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Most bytes of OOM reports kept; the oldest reports are kept first.
pub const MAX_OOM_BYTES: usize = 4 << 20;
/// Most bytes read from the ring buffer (the largest `log_buf_len` in common use is far below).
const MAX_KMSG_BYTES: usize = 64 << 20;

/// Reads the ring buffer at `path` without blocking and returns its OOM reports.
pub fn read_oom_reports(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let mut ex = OomExtractor::default();
    let mut chunk = vec![0u8; 16 << 10];
    let mut pending = Vec::new();
    let mut total = 0usize;
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                pending.extend_from_slice(&chunk[..n]);
                // Feed complete lines; a record is always newline-terminated.
                if let Some(last_nl) = pending.iter().rposition(|&b| b == b'\n') {
                    let rest = pending.split_off(last_nl + 1);
                    ex.feed(&pending);
                    pending = rest;
                }
                if total > MAX_KMSG_BYTES {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // EPIPE: the record we were about to read was overwritten; the next read goes on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    ex.feed(&pending);
    Ok(ex.finish())
}

#[derive(Default)]
struct OomExtractor {
    out: Vec<u8>,
    in_report: bool,
    after_kill: bool,
}

impl OomExtractor {
    fn feed(&mut self, text: &[u8]) {
        for line in text.split_inclusive(|&b| b == b'\n') {
            self.line(line);
        }
    }

    fn line(&mut self, line: &[u8]) {
        // kmsg continuation lines (` SUBSYSTEM=...`) belong to the record before them.
        let continuation = line.first() == Some(&b' ');
        let msg = message(line);
        let starts = contains(msg, b"invoked oom-killer:");
        let kill = contains(msg, b"Killed process ") || contains(msg, b"oom-kill:");
        let reaper = contains(msg, b"oom_reaper:");
        let keep = if starts {
            self.in_report = true;
            self.after_kill = false;
            true
        } else if self.in_report {
            if contains(msg, b"Killed process ") {
                self.in_report = false;
                self.after_kill = true;
            }
            true
        } else if self.after_kill && (reaper || continuation) {
            true
        } else {
            // A kill whose report header was already overwritten is still worth keeping.
            self.after_kill = kill;
            kill || reaper
        };
        if keep && self.out.len() + line.len() <= MAX_OOM_BYTES {
            self.out.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                self.out.push(b'\n');
            }
        }
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// The message part of a kmsg record (`prio,seq,usec,flags;message`), or the line itself.
fn message(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == b';') {
        Some(i)
            if line[..i].iter().all(|b| {
                b.is_ascii_digit() || *b == b',' || *b == b'-' || b.is_ascii_alphabetic()
            }) =>
        {
            &line[i + 1..]
        }
        _ => line,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "6,100,5000,-;eth0: link up\n\
4,101,6000,-;stress invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n\
4,102,6001,-;memory: usage 65536kB, limit 65536kB, failcnt 12\n\
6,103,6002,-;[   4242]     0  4242    30000    16000   180224        0             0 stress\n\
6,104,6003,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/t,task_memcg=/t,task=stress,pid=4242,uid=0\n\
3,105,6004,-;Memory cgroup out of memory: Killed process 4242 (stress) total-vm:120000kB, anon-rss:64000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:176kB oom_score_adj:0\n\
6,106,6100,-;oom_reaper: reaped process 4242 (stress), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB\n\
6,107,7000,-;eth0: link down\n";

    #[test]
    fn keeps_whole_reports_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kmsg");
        std::fs::write(&p, LOG).unwrap();
        let out = String::from_utf8(read_oom_reports(&p).unwrap()).unwrap();
        assert!(out.starts_with("4,101,"));
        assert!(out.contains("Killed process 4242"));
        assert!(out.contains("oom_reaper: reaped"));
        assert!(!out.contains("eth0"));
        assert_eq!(out.lines().count(), 6);
    }

    #[test]
    fn empty_buffer_gives_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kmsg");
        std::fs::write(&p, "").unwrap();
        assert!(read_oom_reports(&p).unwrap().is_empty());
    }
}
