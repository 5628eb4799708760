//! What runs inside a scenario's cgroup: a child process of the runner, moved into the cgroup
//! before it does anything. It waits for `go` on standard input, does one thing, prints
//! `ready N` (N: bytes it created, when it knows better than the runner), and then holds its
//! memory until standard input closes (or exits at once, for the scenarios about exits).

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

const PAGE: usize = 4096;
const HUGE: usize = 2 << 20;

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("worker: argument {i} missing or bad in {args:?}"))
}

/// Anonymous memory, touched page by page, never freed (the process exits instead).
fn anon(bytes: usize, flags: i32, advice: Option<i32>) -> *mut u8 {
    // SAFETY: a fresh private anonymous mapping, checked for failure.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes + HUGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        );
        assert!(p != libc::MAP_FAILED, "mmap failed");
        // Align to 2 MiB so huge pages can back it.
        let p = ((p as usize + HUGE - 1) & !(HUGE - 1)) as *mut u8;
        if let Some(a) = advice {
            libc::madvise(p.cast(), bytes, a);
        }
        for off in (0..bytes).step_by(PAGE) {
            p.add(off).write_volatile(1);
        }
        p
    }
}

fn read_all(path: &str) -> u64 {
    let mut f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let k = f.read(&mut buf).expect("read");
        if k == 0 {
            return n;
        }
        n += k as u64;
    }
}

pub fn main(args: &[String]) {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let go = lines.next().and_then(Result::ok).unwrap_or_default();
    if go.trim() != "go" {
        return;
    }
    let mut created: u64 = 0;
    let mut hold = true;
    match args[0].as_str() {
        "read" => created = read_all(&args[1]),
        "read-twice" => {
            read_all(&args[1]);
            created = read_all(&args[1]);
        }
        "write-file" => {
            // Written through the page cache and never synced: dirty, or tmpfs when on /dev/shm.
            let bytes: usize = arg(args, 2);
            let mut f = std::fs::File::create(&args[1]).expect("create");
            let buf = vec![0x5au8; 1 << 20];
            for _ in 0..bytes / buf.len() {
                f.write_all(&buf).expect("write");
            }
            created = bytes as u64;
        }
        "sysv" => {
            let bytes: usize = arg(args, 1);
            // SAFETY: a new private segment, attached, touched, detached; left for the runner
            // to remove (the scenario is about a segment outliving its process).
            unsafe {
                let id = libc::shmget(libc::IPC_PRIVATE, bytes, libc::IPC_CREAT | 0o600);
                assert!(id >= 0, "shmget failed");
                let p = libc::shmat(id, std::ptr::null(), 0) as *mut u8;
                assert!(p as isize != -1, "shmat failed");
                for off in (0..bytes).step_by(PAGE) {
                    p.add(off).write_volatile(1);
                }
                libc::shmdt(p.cast());
                created = id as u64;
            }
            hold = false;
        }
        "map-shared" => {
            let f = std::fs::File::open(&args[1]).expect("open");
            let len = f.metadata().expect("stat").len() as usize;
            // SAFETY: a read-only shared mapping of a file we opened, read page by page.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    0,
                );
                assert!(p != libc::MAP_FAILED, "mmap failed");
                let p = p as *const u8;
                let mut sum = 0u64;
                for off in (0..len).step_by(PAGE) {
                    sum += u64::from(p.add(off).read_volatile());
                }
                std::hint::black_box(sum);
            }
            created = len as u64;
        }
        "negative-dentries" => {
            let n: usize = arg(args, 2);
            for i in 0..n {
                let _ = std::fs::symlink_metadata(format!("{}/missing-file-{i:08}", args[1]));
            }
            created = n as u64;
        }
        "mlock" => {
            let bytes: usize = arg(args, 1);
            let p = anon(bytes, 0, None);
            // SAFETY: locking a mapping this process owns.
            assert_eq!(unsafe { libc::mlock(p.cast(), bytes) }, 0, "mlock failed");
            created = bytes as u64;
        }
        "anon" => {
            let bytes: usize = arg(args, 1);
            anon(bytes, 0, Some(libc::MADV_NOHUGEPAGE));
            created = bytes as u64;
        }
        "thp" => {
            let bytes: usize = arg(args, 1);
            anon(bytes, 0, Some(libc::MADV_HUGEPAGE));
            created = bytes as u64;
        }
        "read-chunks" => {
            // The runner moves this process from cgroup to cgroup; each `N` line reads page N
            // of the file, charging it to the cgroup the process is in at that moment.
            let f = std::fs::File::open(&args[1]).expect("open");
            // SAFETY: advice on our own descriptor: no readahead, one page per read.
            unsafe {
                libc::posix_fadvise(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    0,
                    0,
                    libc::POSIX_FADV_RANDOM,
                );
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ready 0");
            let _ = out.flush();
            let mut buf = [0u8; PAGE];
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                let Ok(n) = line.trim().parse::<u64>() else {
                    break;
                };
                let _ = std::os::unix::fs::FileExt::read_at(&f, &mut buf, n * PAGE as u64);
                let _ = writeln!(out, "ok");
                let _ = out.flush();
            }
            return;
        }
        "sockets" => {
            let conns: usize = arg(args, 1);
            let per: usize = arg(args, 2);
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
            let addr = l.local_addr().expect("addr");
            let mut keep = Vec::new();
            for _ in 0..conns {
                let c = std::net::TcpStream::connect(addr).expect("connect");
                let (s, _) = l.accept().expect("accept");
                c.set_nonblocking(true).expect("nonblocking");
                let mut c = c;
                let buf = vec![0x42u8; 64 << 10];
                let mut sent = 0;
                // The reader never reads: everything written waits in socket buffers.
                while sent < per {
                    match c.write(&buf[..buf.len().min(per - sent)]) {
                        Ok(k) => sent += k,
                        Err(_) => {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            match c.write(&buf[..1]) {
                                Ok(k) => sent += k,
                                Err(_) => break,
                            }
                        }
                    }
                }
                created += sent as u64;
                keep.push((c, s));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            println!("ready {created}");
            let _ = std::io::stdout().flush();
            for _ in lines {}
            drop(keep);
            return;
        }
        "oom" => {
            let bytes: usize = arg(args, 1);
            anon(bytes, 0, Some(libc::MADV_NOHUGEPAGE));
            created = bytes as u64;
        }
        other => panic!("worker: unknown action {other}"),
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {created}");
    let _ = out.flush();
    drop(out);
    if hold {
        for _ in lines {}
    }
}

/// Writes a file of `bytes` without leaving it in the page cache (O_DIRECT), so that whoever
/// reads it first is charged for its cache.
pub fn uncached_file(path: &std::path::Path, bytes: usize) -> std::io::Result<()> {
    let layout = std::alloc::Layout::from_size_align(1 << 20, PAGE).expect("layout");
    // SAFETY: an aligned buffer, freed below; O_DIRECT needs the alignment.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    let slice = unsafe { std::slice::from_raw_parts_mut(buf, 1 << 20) };
    slice.fill(0x61);
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        for _ in 0..bytes / (1 << 20) {
            f.write_all(slice)?;
        }
        f.sync_all()
    })();
    unsafe { std::alloc::dealloc(buf, layout) };
    res
}
