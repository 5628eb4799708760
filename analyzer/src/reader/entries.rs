//! The tar's entries: scanned from one stream, or from gzip members inflated and scanned in
//! parallel, then taken in order.

use std::io::Read;

use memgap_collector::bundle::{members, pack};

use super::stream::{inflate, inflate_member, Shared, Stream};
use super::ustar;
use super::{
    index_pack, safe_path, BundleError, FileRef, Level, Limits, Loc, Reading, Scratch, MAX_PATH,
};

/// A pack's files, indexed where the pack was read, and the damage that stopped the indexing.
pub(super) type Indexed = (Vec<FileRef>, Option<pack::PackError>);

/// One tar entry as a scan found it; what it means for the bundle is decided in order, by
/// [`Reading::apply`].
pub(super) enum Event {
    /// A regular file at `at`; a pack's files indexed already when its name says it is one.
    File {
        path: String,
        at: Loc,
        pack: Option<Indexed>,
    },
    Refused {
        level: Level,
        path: String,
        message: String,
    },
    Dir,
}

/// How a scan of a tar stream ended.
pub(super) enum Ending {
    /// The stream ended right after a whole entry (a member's end, or a tar without its end
    /// blocks).
    AtEnd,
    /// The stream ended inside the last entry's padding.
    Short,
    /// At the end-of-archive block.
    Marker,
    /// Told to stop.
    Stopped,
    /// A damaged header, or the stream ended inside an entry (named when known).
    Broken {
        entry: Option<String>,
        error: String,
    },
}

/// Scans the tar in `stream`, giving each entry to `on` (false: stop). The tar crate reads the
/// headers (seeking over the contents); each entry's content stays in the piece that holds it.
fn scan(
    stream: &std::cell::RefCell<Stream>,
    limits: &Limits,
    mut on: impl FnMut(Event, &[Vec<u8>]) -> bool,
) -> Ending {
    // A damaged compressed stream explains a damaged tar better than the tar's own error.
    let gz_err = |e: String| stream.borrow_mut().err.take().map_or(e, |g| g.to_string());
    let mut ar = tar::Archive::new(Shared(stream));
    let entries = match ar.entries_with_seek() {
        Ok(entries) => entries,
        Err(e) => {
            return Ending::Broken {
                entry: None,
                error: e.to_string(),
            }
        }
    };
    let mut scratch = Scratch::default();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                return Ending::Broken {
                    entry: None,
                    error: gz_err(e.to_string()),
                }
            }
        };
        let raw_path = entry.path_bytes();
        let ev = if raw_path.len() > MAX_PATH {
            let shown = String::from_utf8_lossy(&raw_path[..200]).into_owned();
            let message = format!(
                "refused: a {}-byte path (longer than any kernel path)",
                raw_path.len()
            );
            Event::Refused {
                level: Level::Warning,
                path: shown,
                message,
            }
        } else {
            let path = crate::parse::text(&raw_path).into_owned();
            drop(raw_path);
            let (kind, size) = (entry.header().entry_type(), entry.size());
            let start = entry.raw_file_position();
            match entry_event(path, kind, size, start, stream, limits, &mut scratch) {
                Ok(ev) => ev,
                Err(broken) => return broken,
            }
        };
        if !on(ev, &stream.borrow().blobs) {
            return Ending::Stopped;
        }
    }
    let s = stream.borrow();
    match s.ended_at {
        Some(at) if at == s.received => Ending::AtEnd,
        Some(_) => Ending::Short,
        None => Ending::Marker,
    }
}

/// What an entry (its path as text, type, size and where its content starts in `stream`)
/// is for the bundle; `Err`, the scan's end, when its content is not all in the stream.
fn entry_event(
    path: String,
    kind: tar::EntryType,
    size: u64,
    start: u64,
    stream: &std::cell::RefCell<Stream>,
    limits: &Limits,
    scratch: &mut Scratch,
) -> Result<Event, Ending> {
    let refused = |path, message| Event::Refused {
        level: Level::Warning,
        path,
        message,
    };
    if kind.is_dir() {
        return Ok(Event::Dir);
    }
    if !(kind.is_file() || kind == tar::EntryType::Continuous) {
        let msg = format!("refused: a {kind:?} entry (only regular files belong in a bundle)");
        return Ok(refused(path, msg));
    }
    let clean = match safe_path(path) {
        Ok(clean) => clean,
        Err(path) => {
            let msg = "refused: absolute path or `..` component".into();
            return Ok(refused(path, msg));
        }
    };
    if size > limits.max_entry_bytes {
        let msg = format!(
            "refused: {size} bytes is over the {}-byte entry limit",
            limits.max_entry_bytes
        );
        return Ok(refused(clean, msg));
    }
    let located = stream
        .borrow_mut()
        .locate(start, start.saturating_add(size));
    let Some(at) = located else {
        // A damaged compressed stream explains a damaged tar better than the tar's own error.
        let gz = stream.borrow_mut().err.take();
        return Err(Ending::Broken {
            entry: Some(clean),
            error: gz.map_or("unexpected end of data".into(), |g| g.to_string()),
        });
    };
    // Indexed here, while its bytes are in the cache (and, for a member, on the thread that
    // inflated it).
    let pack =
        is_pack(&clean).then(|| index_pack(&stream.borrow().blobs[at.blob as usize], at, scratch));
    Ok(Event::File {
        path: clean,
        at,
        pack,
    })
}

/// Whether a path names a pack (see [`Reading::push`] for where it is taken as one).
fn is_pack(path: &str) -> bool {
    path.strip_suffix(pack::PACK_NAME)
        .is_some_and(|d| d.ends_with('/'))
}

/// How much of the stream past the tar's end-of-archive block is inflated to reach the gzip
/// trailer: `tar` pads an archive to 10 KiB records, so 1 MiB is far past any honest tail.
const AFTER_END_MAX: u64 = 1 << 20;

/// Reads the tar inflated from `r` (a whole bundle, or the rest of one from a gzip member on)
/// into `raw`: inflating on another thread, overlapped with reading the tar.
fn read_serially(
    r: impl Read + Send,
    mut raw: Reading,
    limits: &Limits,
    left: u64,
) -> Result<Reading, BundleError> {
    let (tx, rx) = crossbeam_channel::bounded(64);
    std::thread::scope(|s| {
        s.spawn(move || inflate(r, left, &tx));
        let stream = std::cell::RefCell::new(Stream::new(rx));
        let off = raw.blobs.len() as u32;
        let ending = scan(&stream, limits, |ev, blobs| raw.apply(ev, blobs, off));
        let mut stream = stream.into_inner();
        let marker = matches!(ending, Ending::Marker);
        // A tar is padded a few KiB past its end-of-archive block; the gzip trailer follows.
        let unchecked = marker && stream.err.is_none() && !stream.drain(AFTER_END_MAX);
        let (ending, err) = match (ending, stream.err.take()) {
            // The tar ended cleanly where the stream broke, before its end-of-archive block
            // (a cut on an entry's end): what followed is lost.
            (Ending::AtEnd | Ending::Short, Some(e)) => {
                let error = e.to_string();
                (Ending::Broken { entry: None, error }, None)
            }
            other => other,
        };
        // Returning (and so dropping the receiver) before the scope ends lets the inflater
        // stop if the archive is abandoned early.
        raw.end(ending)?;
        raw.blobs.append(&mut stream.blobs);
        if let Some(e) = err {
            let msg = if marker {
                // The trailer's CRC covers every entry: they were all read, but are not
                // proven intact.
                format!(
                    "gzip stream is corrupt after the archive's end ({}): {e}; every entry was \
                     read, but their bytes may be damaged",
                    raw.after()
                )
            } else {
                format!("archive is truncated or corrupt after {}: {e}", raw.after())
            };
            raw.note(Level::Error, None, msg);
        }
        if unchecked {
            let msg = format!(
                "more than {} MiB follow the archive's end: not read, so the gzip checksum \
                 was not checked",
                AFTER_END_MAX >> 20
            );
            raw.note(Level::Warning, None, msg);
        }
        Ok(raw)
    })
}

/// What a worker made of one gzip member: its bytes, and its tar entries scanned as if the
/// member began with an entry (every member the collector writes does).
struct Scanned {
    blobs: Vec<Vec<u8>>,
    events: Vec<Event>,
    ending: Ending,
}

/// Inflates and scans a stream of gzip members (`ms`, found in `gz` from their headers) on
/// `threads` threads, and takes their entries in order. A member that does not inflate to
/// exactly what its header and trailer say, or whose tar does not end with it (damage, or a
/// stream that only looks like ours), ends the fast path: the rest of the stream, from that
/// member on, is read as one stream would be ([`read_serially`]).
fn read_members(
    gz: &[u8],
    ms: &[members::Member],
    mut raw: Reading,
    limits: &Limits,
    threads: usize,
) -> Result<Reading, BundleError> {
    let claimed: u64 = ms.iter().map(|m| m.isize as u64).sum();
    if claimed > limits.max_total_bytes {
        return read_serially(gz, raw, limits, limits.max_total_bytes);
    }
    let one = |m: &members::Member| -> Option<Scanned> {
        let (data, crc) = m.deflate(gz);
        Some(scan_member(inflate_member(data, m.isize, crc)?, limits))
    };
    // From member `i` on, as one stream.
    let rest = |raw, i: usize| {
        let inflated: u64 = ms[..i].iter().map(|m| m.isize as u64).sum();
        let left = limits.max_total_bytes - inflated;
        read_serially(&gz[ms[i].range.start..], raw, limits, left)
    };
    if threads <= 1 {
        // Each member scanned right after it is inflated, while its bytes are in the cache.
        for (i, m) in ms.iter().enumerate() {
            match take(&mut raw, one(m)) {
                Flow::Next => {}
                Flow::Done => return Ok(raw),
                Flow::OneStream => return rest(raw, i),
            }
        }
        return Ok(raw);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    std::thread::scope(|s| {
        for _ in 0..threads.min(ms.len()) {
            let done_tx = done_tx.clone();
            let (next, stop, one) = (&next, &stop, &one);
            s.spawn(move || {
                use std::sync::atomic::Ordering::Relaxed;
                while !stop.load(Relaxed) {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(m) = ms.get(i) else { break };
                    if done_tx.send((i, one(m))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        // Members finish out of order; they are taken in order.
        let mut waiting: Vec<Option<Option<Scanned>>> = (0..ms.len()).map(|_| None).collect();
        let mut i = 0;
        let flow = 'members: {
            for (k, scanned) in done_rx.iter() {
                waiting[k] = Some(scanned);
                while let Some(scanned) = waiting.get_mut(i).and_then(Option::take) {
                    match take(&mut raw, scanned) {
                        Flow::Next => i += 1,
                        flow => break 'members flow,
                    }
                }
            }
            Flow::Done
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match flow {
            Flow::OneStream => rest(raw, i),
            _ => Ok(raw),
        }
    })
}

/// An inflated member's entries, scanned as if it began the tar: its headers read by hand when
/// they are all plain ([`ustar::walk`]), by the tar crate otherwise.
fn scan_member(member: Vec<u8>, limits: &Limits) -> Scanned {
    let plain = ustar::walk(&member);
    let stream = std::cell::RefCell::new(Stream::filled(member));
    let mut events = Vec::with_capacity(plain.as_ref().map_or(0, |(e, _)| e.len()));
    let ending = match plain {
        Some((entries, end)) => {
            let mut scratch = Scratch::default();
            let mut ending = match end {
                ustar::End::AtEnd => Ending::AtEnd,
                ustar::End::Marker => Ending::Marker,
            };
            // A plain path is at most 256 bytes: never over `MAX_PATH`.
            for ustar::Plain {
                path,
                kind,
                size,
                start,
            } in entries
            {
                match entry_event(path, kind, size, start, &stream, limits, &mut scratch) {
                    Ok(ev) => events.push(ev),
                    Err(broken) => {
                        ending = broken;
                        break;
                    }
                }
            }
            ending
        }
        None => scan(&stream, limits, |ev, _| {
            events.push(ev);
            true
        }),
    };
    Scanned {
        blobs: stream.into_inner().blobs,
        events,
        ending,
    }
}

/// What taking a member means for the ones after it.
enum Flow {
    Next,
    /// The tar ended (or the entry cap was reached).
    Done,
    /// Read the rest as one stream, from this member on.
    OneStream,
}

/// Takes a member's entries, in order (`None`: it did not inflate as its header and trailer
/// say).
fn take(raw: &mut Reading, scanned: Option<Scanned>) -> Flow {
    let Some(m) = scanned.filter(|m| matches!(m.ending, Ending::AtEnd | Ending::Marker)) else {
        return Flow::OneStream;
    };
    let mut flow = match m.ending {
        Ending::Marker => Flow::Done,
        _ => Flow::Next,
    };
    let off = raw.blobs.len() as u32;
    for ev in m.events {
        if !raw.apply(ev, &m.blobs, off) {
            flow = Flow::Done;
            break;
        }
    }
    raw.blobs.extend(m.blobs);
    flow
}

/// Reads the whole compressed stream when it starts like a stream of members (so they can be
/// found and inflated in parallel), into room for `size` bytes (the file's, when known: grown
/// by doubling, a 2 MiB bundle was copied ~16 times); `Err` gives back a reader of the stream
/// from its start.
fn members_in_memory<R: Read>(
    mut r: R,
    size: u64,
    limits: &Limits,
) -> Result<Vec<u8>, std::io::Chain<std::io::Cursor<Vec<u8>>, R>> {
    let mut head = Vec::with_capacity(members::HEADER_LEN);
    let peeked = (&mut r)
        .take(members::HEADER_LEN as u64)
        .read_to_end(&mut head);
    if peeked.is_err() || !members::starts_members(&head) {
        return Err(std::io::Cursor::new(head).chain(r));
    }
    // Compressed bytes beyond the uncompressed cap cannot be a bundle we would read whole.
    let cap = limits.max_total_bytes.saturating_add(1 << 20);
    let mut gz = head;
    // One byte more than the file, so that reading its end needs no growth.
    gz.reserve_exact(
        size.min(cap)
            .saturating_add(1)
            .saturating_sub(gz.len() as u64) as usize,
    );
    match (&mut r).take(cap).read_to_end(&mut gz) {
        Ok(_) if (gz.len() as u64) < cap => Ok(gz),
        _ => Err(std::io::Cursor::new(gz).chain(r)),
    }
}

/// `size`: the compressed size when known (a file's), else 0.
pub(super) fn read_targz(
    r: impl Read + Send,
    size: u64,
    source: &str,
    limits: &Limits,
) -> Result<Reading, BundleError> {
    let limits = &Limits {
        max_entry_bytes: limits.max_entry_bytes.min(1 << 31),
        ..*limits
    };
    let threads = match limits.inflate_threads {
        0 => rayon::current_num_threads(),
        n => n,
    };
    let raw = Reading::new(source, limits);
    let all = limits.max_total_bytes;
    match members_in_memory(r, size, limits) {
        Ok(gz) => match members::members(&gz) {
            Some(ms) => read_members(&gz, &ms, raw, limits, threads),
            _ => read_serially(&gz[..], raw, limits, all),
        },
        Err(r) => read_serially(r, raw, limits, all),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{read_from, Bundle};
    use super::*;

    /// Whether a diagnostic of `level` says `text`.
    fn says(b: &Bundle, level: Level, text: &str) -> bool {
        b.diagnostics
            .iter()
            .any(|d| d.level == level && d.message.contains(text))
    }

    /// Diagnostics about the archive itself, not one of its files.
    fn archive_notes(b: &Bundle) -> usize {
        b.diagnostics.iter().filter(|d| d.file.is_none()).count()
    }

    /// Everything a read gave: entries, diagnostics, and every file's bytes.
    fn everything(b: &Result<Bundle, BundleError>) -> String {
        let b = match b {
            Ok(b) => b,
            Err(e) => return format!("error: {e}"),
        };
        let mut out = format!("{:?}\n{:?}\n", b.stored, b.diagnostics);
        for f in b.samples.iter().chain([&b.shared]) {
            for (dir, list) in &f.dirs {
                for r in list {
                    let name = String::from_utf8_lossy(f.name(r));
                    let mut crc = flate2::Crc::new();
                    crc.update(f.content(r));
                    out += &format!("{dir}/{name}: {} {:x}\n", crc.amount(), crc.sum());
                }
            }
        }
        out
    }

    /// Reads `gz` as one gzip stream from its start, on one thread: what the members' fast
    /// path must give.
    fn read_as_one_stream(gz: &[u8], limits: &Limits) -> Result<Bundle, BundleError> {
        let raw = Reading::new("t.tar.gz", limits);
        read_serially(gz, raw, limits, limits.max_total_bytes)?.finish()
    }

    /// A bundle-like tar of `files` (a name ending in `@` is stored as a symbolic link), and
    /// where each entry ends in it.
    fn tar_of(files: &[(String, Vec<u8>)]) -> (Vec<u8>, Vec<usize>) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut ends = Vec::new();
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            match name.strip_suffix('@') {
                Some(link) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    tar.append_link(&mut h, link, "/etc/passwd").unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Regular);
                    tar.append_data(&mut h, name, &data[..]).unwrap();
                }
            }
            ends.push(tar.get_ref().len());
        }
        (tar.into_inner().unwrap(), ends)
    }

    /// `tar` compressed as gzip members ending after the tar bytes in `cuts` (anywhere: inside
    /// headers and contents too).
    fn gzip_members(tar: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut m = members::Members::new(Vec::new(), flate2::Compression::fast());
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (tar.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts {
            std::io::Write::write_all(&mut m, &tar[at..c]).unwrap();
            m.end_member().unwrap();
            at = c;
        }
        std::io::Write::write_all(&mut m, &tar[at..]).unwrap();
        m.finish().unwrap()
    }

    fn members_of(files: &[(String, Vec<u8>)], cuts: &[usize]) -> Vec<u8> {
        gzip_members(&tar_of(files).0, cuts)
    }

    fn node_files(n: usize) -> Vec<(String, Vec<u8>)> {
        let mut files = vec![("b/proc/meminfo".to_string(), b"MemTotal: 1 kB\n".to_vec())];
        for i in 0..n {
            let data: Vec<u8> = (0..(i * 7919) % 70_000).map(|k| (k % 251) as u8).collect();
            files.push((format!("b/sys/fs/cgroup/memory/c{i}/memory.stat"), data));
        }
        files.push(("b/manifest.json".to_string(), b"{".to_vec()));
        files
    }

    #[test]
    fn members_read_in_parallel_as_one_stream() {
        let files = node_files(60);
        let gz = members_of(&files, &[1000, 300_000, 300_001, 900_000, 1_500_000]);
        assert_eq!(members::members(&gz).map(|m| m.len()), Some(6));
        let want = everything(&read_as_one_stream(&gz, &Limits::default()));
        assert!(want.contains("c59/memory.stat"), "{want:.300}");
        for threads in [1, 2, 3, 8] {
            let limits = Limits {
                inflate_threads: threads,
                ..Limits::default()
            };
            let got = everything(&read_from(&gz[..], "t.tar.gz", &limits));
            if got != want {
                let (g, w): (Vec<&str>, Vec<&str>) =
                    (got.lines().collect(), want.lines().collect());
                for (a, b) in g.iter().zip(&w) {
                    if a != b {
                        panic!("{threads} threads:\n{:.3000}\n{:.3000}", a, b);
                    }
                }
                panic!("{threads} threads: {} lines vs {}", g.len(), w.len());
            }
        }
    }

    #[test]
    fn a_stream_cut_between_two_entries_is_read_in_part() {
        // One gzip stream, as other tools write it, flushed after the first entry and cut
        // there: the tar ends cleanly where the stream breaks, without its end blocks.
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("b/proc/meminfo", &b"MemTotal: 1 kB\n"[..]),
            ("b/proc/vmstat", b"nr_free_pages 1\n"),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, name, data).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let first = 1024; // the first entry: its header and one block of content
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar[..first]).unwrap();
        std::io::Write::flush(&mut gz).unwrap();
        let cut = gz.get_ref().len();
        std::io::Write::write_all(&mut gz, &tar[first..]).unwrap();
        let whole = gz.finish().unwrap();

        let b = read_from(&whole[..cut], "t.tar.gz", &Limits::default()).unwrap();
        let file = |b: &Bundle, f: &str| b.samples.iter().any(|s| s.get(f).is_some());
        assert!(file(&b, "proc/meminfo"), "{:?}", b.diagnostics);
        assert!(!file(&b, "proc/vmstat"));
        assert!(!b.complete, "{:?}", b.diagnostics);
        assert!(
            says(&b, Level::Error, "truncated or corrupt after"),
            "{:?}",
            b.diagnostics
        );
        let b = read_from(&whole[..], "t.tar.gz", &Limits::default()).unwrap();
        assert!(b.complete && file(&b, "proc/vmstat"));
        // Nothing about the archive itself (its files lack a manifest: that is all).
        assert_eq!(archive_notes(&b), 0, "{:?}", b.diagnostics);
        // A CRC that does not match loses nothing (the tar was read to its end), but says the
        // bytes read are not proven.
        let mut trailer = whole.clone();
        let n = trailer.len();
        trailer[n - 8] ^= 1; // the CRC
        let b = read_from(&trailer[..], "t.tar.gz", &Limits::default()).unwrap();
        assert!(b.complete && file(&b, "proc/vmstat"), "{:?}", b.diagnostics);
        assert!(
            says(&b, Level::Error, "after the archive's end")
                && says(&b, Level::Error, "may be damaged"),
            "{:?}",
            b.diagnostics
        );
    }

    #[test]
    fn a_long_tail_after_the_archives_end_is_not_inflated() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        tar.append_data(&mut h, "proc/meminfo", &b"x 1\n"[..])
            .unwrap();
        let mut tar = tar.into_inner().unwrap();
        let gz = |tar: &[u8]| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, tar).unwrap();
            gz.finish().unwrap()
        };
        // A tail within the bound is read to the trailer; a longer one is left, and said.
        tar.resize(tar.len() + (64 << 10), 0);
        let b = read_from(&gz(&tar)[..], "t.tar.gz", &Limits::default()).unwrap();
        assert!(b.complete && archive_notes(&b) == 0, "{:?}", b.diagnostics);
        tar.resize(tar.len() + (3 << 20), 0);
        let b = read_from(&gz(&tar)[..], "t.tar.gz", &Limits::default()).unwrap();
        assert!(b.complete && b.latest().get("proc/meminfo").is_some());
        assert!(says(&b, Level::Warning, "not read"), "{:?}", b.diagnostics);
    }

    #[test]
    fn members_over_the_size_cap_are_refused_as_in_one_stream() {
        let gz = members_of(&node_files(40), &[200_000, 600_000]);
        let limits = Limits {
            max_total_bytes: 500_000,
            inflate_threads: 2,
            ..Limits::default()
        };
        let got = everything(&read_from(&gz[..], "t.tar.gz", &limits));
        assert!(got.contains("exceeds the analyzer's limit"), "{got:.2000}");
        assert_eq!(got, everything(&read_as_one_stream(&gz, &limits)));
    }

    #[test]
    fn bytes_hidden_inside_a_members_claimed_length_read_as_one_stream() {
        let gz = members_of(&node_files(30), &[100_000]);
        let ms = members::members(&gz).unwrap();
        // The first member claims seven more bytes: junk, then its size again (so the size
        // read at the claimed end is right); the second member follows them.
        let first = ms[0].range.clone();
        let mut bad = gz[first.clone()].to_vec();
        bad.extend_from_slice(b"xyz");
        bad.extend_from_slice(&ms[0].isize.to_le_bytes());
        let len = u32::from_le_bytes(bad[16..20].try_into().unwrap()) + 7;
        bad[16..20].copy_from_slice(&len.to_le_bytes());
        bad.extend_from_slice(&gz[first.end..]);
        assert_eq!(members::members(&bad).map(|m| m.len()), Some(2));
        let limits = Limits {
            inflate_threads: 2,
            ..Limits::default()
        };
        let got = everything(&read_from(&bad[..], "t.tar.gz", &limits));
        assert!(got.contains("truncated or corrupt"), "{got:.3000}");
        assert_eq!(got, everything(&read_as_one_stream(&bad, &limits)));
    }

    /// Reads `gz` (`pristine` damaged) in parallel and as one stream: identical when neither
    /// sees damage. Else the same entries up to where each reading stopped: how much of a
    /// damaged part inflates before the error depends on how the reads were sliced, so one
    /// reading may reach the entry cap before the damage that stops the other. And a member
    /// libdeflate inflates to exactly its size and CRC where zlib's rules refuse its encoding
    /// (litlen symbols 286-287 read as length 258) reads as the undamaged stream does.
    fn same_as_one_stream(
        gz: &[u8],
        pristine: &[u8],
        limits: &Limits,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let got = read_from(gz, "t.tar.gz", limits);
        let want = read_as_one_stream(gz, limits);
        let said = |b: &Result<Bundle, BundleError>, what: &str| match b {
            Ok(b) => b.diagnostics.iter().any(|d| d.message.contains(what)),
            Err(_) => what == "corrupt",
        };
        let damaged = |b: &Result<Bundle, BundleError>| said(b, "corrupt");
        let capped = |b: &Result<Bundle, BundleError>| said(b, "entries; the rest is ignored");
        match (damaged(&got), damaged(&want)) {
            // Undamaged bytes read the same whatever their tar says, as do readings that see
            // no damage.
            (g, w) if gz == pristine || !(g || w) => {
                proptest::prop_assert_eq!(everything(&got), everything(&want))
            }
            (false, _) => {
                let undamaged = read_as_one_stream(pristine, limits);
                proptest::prop_assert_eq!(everything(&got), everything(&undamaged));
            }
            (true, seen) => {
                proptest::prop_assert!(seen || capped(&want), "{}", everything(&want));
                let entries = |b: &Result<Bundle, BundleError>| {
                    b.as_ref().map_or(vec![], |b| {
                        b.stored
                            .files
                            .iter()
                            .map(|e| (e.path.clone(), e.bytes))
                            .collect()
                    })
                };
                let (g, w) = (entries(&got), entries(&want));
                let common = g.len().min(w.len());
                proptest::prop_assert_eq!(&g[..common], &w[..common]);
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Members cut between entries (as the collector writes them) or anywhere, with refused
        /// entries, an end-of-archive block in the middle, damage anywhere (a member's data,
        /// its CRC, its claimed sizes), and an entry cap: read as the same bytes read as one
        /// stream.
        #[test]
        fn members_read_as_one_stream(
            n in 1usize..40,
            cuts in proptest::collection::vec((proptest::bool::ANY, 0usize..3_000_000), 0..8),
            links in proptest::collection::vec(0usize..40, 0..2),
            marker in proptest::option::of(0usize..40),
            hits in proptest::collection::vec((0usize..4_000_000, 0u8..=255), 0..2),
            threads in 1usize..4,
            max_entries in proptest::option::of(1u64..50),
        ) {
            let mut files = node_files(n);
            for l in links {
                let at = l % files.len();
                files.insert(at, (format!("b/proc/link{at}@"), vec![]));
            }
            let (mut tar, ends) = tar_of(&files);
            let mut cuts: Vec<usize> = cuts
                .iter()
                .map(|&(between, c)| if between { ends[c % ends.len()] } else { c })
                .collect();
            if let Some(m) = marker {
                // Two zero blocks after an entry, in a member of their own, then the rest.
                let at = ends[m % ends.len()];
                tar.splice(at..at, [0u8; 1024]);
                cuts.retain(|&c| c % (tar.len() + 1) <= at);
                cuts.extend([at, at + 1024]);
            }
            let pristine = gzip_members(&tar, &cuts);
            let mut gz = pristine.clone();
            for (at, x) in hits {
                let len = gz.len();
                gz[at % len] ^= x;
            }
            let limits = Limits {
                inflate_threads: threads,
                max_entries: max_entries.unwrap_or(Limits::default().max_entries),
                ..Limits::default()
            };
            same_as_one_stream(&gz, &pristine, &limits)?;
        }
    }
}
