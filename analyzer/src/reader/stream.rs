//! The decompressed stream: inflated on other threads in pieces that become the bundle's
//! storage, with the tar reader's view of it.

use std::io::Read;

use super::Loc;

/// Fails reads past a byte budget, so no entry (long names included) can exceed it.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(
                "uncompressed size exceeds the analyzer's limit (a decompression bomb?)",
            ));
        }
        let n = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

/// The decompressed stream, inflated on other threads in pieces (chunks of [`CHUNK`] bytes, or
/// whole gzip members): inflating and reading the tar overlap, and the pieces are kept as the
/// bundle's storage (no copy).
pub(super) struct Stream {
    rx: crossbeam_channel::Receiver<std::io::Result<Vec<u8>>>,
    /// The pieces, and the entries that straddle two pieces copied whole.
    pub(super) blobs: Vec<Vec<u8>>,
    /// Where each piece starts in the stream, and its index in `blobs`.
    piece_start: Vec<u64>,
    piece_blob: Vec<u32>,
    pub(super) received: u64,
    pos: u64,
    done: bool,
    /// Where a read found the end of the stream: where it ends, or past it (after a seek over
    /// padding the stream is too short for).
    pub(super) ended_at: Option<u64>,
    /// Why the stream ended early (corrupt gzip, over the size cap).
    pub(super) err: Option<std::io::Error>,
}

pub(super) const CHUNK: usize = 256 << 10;

impl Stream {
    pub(super) fn new(rx: crossbeam_channel::Receiver<std::io::Result<Vec<u8>>>) -> Stream {
        Stream {
            rx,
            blobs: Vec::new(),
            piece_start: Vec::new(),
            piece_blob: Vec::new(),
            received: 0,
            pos: 0,
            done: false,
            ended_at: None,
            err: None,
        }
    }

    /// A stream of pieces all there already.
    pub(super) fn filled(pieces: Vec<Vec<u8>>) -> Stream {
        let (tx, rx) = crossbeam_channel::bounded(pieces.len() + 1);
        for p in pieces {
            let _ = tx.send(Ok(p));
        }
        Stream::new(rx) // the sender dropped: the stream ends after the pieces
    }

    /// Waits for the pieces up to `end`; false if the stream ends before.
    fn fill_to(&mut self, end: u64) -> bool {
        while self.received < end && !self.done {
            match self.rx.recv() {
                Ok(Ok(c)) if !c.is_empty() => {
                    self.piece_start.push(self.received);
                    self.piece_blob.push(self.blobs.len() as u32);
                    self.received += c.len() as u64;
                    self.blobs.push(c);
                }
                Ok(Err(e)) => {
                    self.err = Some(e);
                    self.done = true;
                }
                // The end of the stream, or the producer gone.
                _ => self.done = true,
            }
        }
        self.received >= end
    }

    /// The piece holding stream offset `at` (received), and the offset in it.
    fn piece(&self, at: u64) -> (usize, usize) {
        let p = self.piece_start.partition_point(|&s| s <= at) - 1;
        (p, (at - self.piece_start[p]) as usize)
    }

    fn piece_bytes(&self, p: usize) -> &[u8] {
        &self.blobs[self.piece_blob[p] as usize]
    }

    /// Where the bytes `start..end` of the stream are; `None` if the stream is shorter.
    pub(super) fn locate(&mut self, start: u64, end: u64) -> Option<Loc> {
        if !self.fill_to(end) {
            return None;
        }
        if start == end {
            // An empty file, maybe right at the end of the last piece: any empty range.
            return Some(Loc {
                blob: 0,
                start: 0,
                end: 0,
            });
        }
        let (p, o) = self.piece(start);
        let len = (end - start) as usize;
        if o + len <= self.piece_bytes(p).len() {
            return Some(Loc {
                blob: self.piece_blob[p],
                start: o as u32,
                end: (o + len) as u32,
            });
        }
        let mut whole = Vec::with_capacity(len);
        let (mut p, mut o) = (p, o);
        while whole.len() < len {
            let piece = self.piece_bytes(p);
            let n = (piece.len() - o).min(len - whole.len());
            whole.extend_from_slice(&piece[o..o + n]);
            (p, o) = (p + 1, 0);
        }
        self.blobs.push(whole);
        Some(Loc {
            blob: (self.blobs.len() - 1) as u32,
            start: 0,
            end: len as u32,
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.fill_to(self.pos + 1) {
            self.ended_at = Some(self.pos);
            return Ok(0);
        }
        let (p, o) = self.piece(self.pos);
        let c = self.piece_bytes(p);
        let n = buf.len().min(c.len() - o);
        buf[..n].copy_from_slice(&c[o..o + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for Stream {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            std::io::SeekFrom::Start(p) => p,
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
            })?,
            std::io::SeekFrom::End(_) => {
                return Err(std::io::Error::other("a stream has no known end"))
            }
        };
        Ok(self.pos)
    }
}

/// The stream, shared by the tar reader (headers) and the loop over entries (contents).
pub(super) struct Shared<'a>(pub(super) &'a std::cell::RefCell<Stream>);

impl Read for Shared<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl std::io::Seek for Shared<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.borrow_mut().seek(to)
    }
}

/// Chunks of bundles already dropped, for the next bundle to inflate into: fresh memory costs
/// the kernel a page fault and a page clearing per 4 KiB, which measured as much as inflating
/// itself; reused memory costs neither. Bounded, so a batch holds no more than this.
static SPARE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const SPARE_MAX: usize = 128; // 32 MiB

/// An empty chunk, [`CHUNK`] bytes of capacity.
fn spare_chunk() -> Vec<u8> {
    let reused = SPARE.lock().ok().and_then(|mut s| s.pop());
    reused.unwrap_or_else(|| Vec::with_capacity(CHUNK))
}

/// The blobs of a bundle; chunk-sized ones go back to [`SPARE`] when the bundle is dropped.
#[derive(Debug, Default)]
pub(super) struct Blobs(pub(super) Vec<Vec<u8>>);

impl std::ops::Deref for Blobs {
    type Target = [Vec<u8>];
    fn deref(&self) -> &[Vec<u8>] {
        &self.0
    }
}

impl Drop for Blobs {
    fn drop(&mut self) {
        recycle(self.0.drain(..));
    }
}

/// Gives chunk-sized blobs back to [`SPARE`], as many as it keeps.
fn recycle(blobs: impl IntoIterator<Item = Vec<u8>>) {
    let Ok(mut spare) = SPARE.lock() else { return };
    for mut b in blobs {
        if spare.len() >= SPARE_MAX {
            break;
        }
        if b.capacity() == CHUNK {
            b.clear();
            spare.push(b);
        }
    }
}

type Pieces = crossbeam_channel::Sender<std::io::Result<Vec<u8>>>;

/// Inflates the gzip stream `r` (all its members) into chunks until its end, an error, the
/// `left` bytes cap, or the reader hanging up.
pub(super) fn inflate(r: impl Read, left: u64, tx: &Pieces) {
    let gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(128 << 10, r));
    let mut capped = Capped { inner: gz, left };
    loop {
        let (chunk, res) = fill_chunk(&mut capped);
        let last = chunk.len() < CHUNK;
        if !chunk.is_empty() && tx.send(Ok(chunk)).is_err() {
            return;
        }
        if let Err(e) = res {
            let _ = tx.send(Err(e));
            return;
        }
        if last {
            let _ = tx.send(Ok(Vec::new()));
            return;
        }
    }
}

/// A chunk (recycled: see [`SPARE`]) filled from `r` up to [`CHUNK`] bytes or `r`'s end; the
/// error that stopped it, if any.
fn fill_chunk(r: &mut impl Read) -> (Vec<u8>, std::io::Result<()>) {
    let mut chunk = spare_chunk();
    chunk.resize(CHUNK, 0); // `Read` writes only into initialized bytes
    let mut n = 0;
    let res = loop {
        match r.read(&mut chunk[n..]) {
            Ok(0) => break Ok(()),
            Ok(k) => {
                n += k;
                if n == CHUNK {
                    break Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    chunk.truncate(n);
    (chunk, res)
}

/// A gzip member's raw deflate `data` inflated into chunks, if it inflates to exactly `size`
/// bytes whose CRC-32 is `crc`, its deflate stream ending exactly where `data` does. Inflated
/// straight into the chunks' spare capacity: no zeroing, no copy through a reader.
pub(super) fn inflate_member(data: &[u8], size: u32, crc: u32) -> Option<Vec<Vec<u8>>> {
    let mut d = flate2::Decompress::new(false);
    let mut sum = flate2::Crc::new();
    let (mut chunks, mut input) = (Vec::new(), data);
    loop {
        let mut chunk = spare_chunk();
        let status = loop {
            let (was_in, was_out) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(input, &mut chunk, flate2::FlushDecompress::None)
                .ok()?;
            input = &input[(d.total_in() - was_in) as usize..];
            if d.total_out() > size as u64 {
                return None; // more than it claims: a bomb, or damage
            }
            let stuck = d.total_in() == was_in && d.total_out() == was_out;
            if status == flate2::Status::StreamEnd || chunk.len() == CHUNK || stuck {
                break status;
            }
        };
        sum.update(&chunk);
        let full = chunk.len() == CHUNK;
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        match status {
            flate2::Status::StreamEnd => break,
            _ if full => {}
            // No progress with room left: the data ended before the deflate stream did.
            _ => return None,
        }
    }
    if !(input.is_empty() && d.total_out() == size as u64 && sum.sum() == crc) {
        return None;
    }
    // A member's last chunk is mostly empty (a member ends at an entry boundary): kept at its
    // size, so a bundle does not hold a quarter MiB per member for a few KiB.
    if let Some(last) = chunks.last_mut().filter(|c| c.len() < CHUNK / 2) {
        let small = last.to_vec();
        recycle([std::mem::replace(last, small)]);
    }
    Some(chunks)
}

#[cfg(test)]
mod tests {
    use super::super::{read_from, Limits};
    use super::{inflate_member, CHUNK};

    /// Raw deflate of `data`, and its CRC-32.
    fn deflated(data: &[u8]) -> (Vec<u8>, u32) {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, data).unwrap();
        let mut crc = flate2::Crc::new();
        crc.update(data);
        (e.finish().unwrap(), crc.sum())
    }

    #[test]
    fn a_member_inflates_only_to_exactly_what_it_claims() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let (z, crc) = deflated(&data);
            let size = len as u32;
            let chunks = inflate_member(&z, size, crc).expect("whole");
            assert!(chunks.iter().all(|c| c.len() <= CHUNK && !c.is_empty()));
            // A mostly empty last chunk is kept at its size.
            let last = chunks.last().filter(|c| c.len() < CHUNK / 2);
            assert!(last.is_none_or(|c| c.capacity() < CHUNK / 2), "{len} bytes");
            assert_eq!(chunks.concat(), data, "{len} bytes");
            // Every claim that is not exactly right is refused.
            assert!(inflate_member(&z, size + 1, crc).is_none());
            assert!(inflate_member(&z, size.wrapping_sub(1), crc).is_none());
            assert!(inflate_member(&z, size, crc ^ 1).is_none());
            assert!(inflate_member(&z[..z.len() - 1], size, crc).is_none());
            assert!(inflate_member(&[&z[..], b"x"].concat(), size, crc).is_none());
        }
        assert!(inflate_member(b"not deflate at all", 5, 0).is_none());
    }

    /// A tar whose entries end exactly at chunk boundaries, straddle them, or are empty right
    /// after one, without the end-of-archive blocks: every file must read back whole.
    #[test]
    fn entries_at_and_across_chunk_boundaries() {
        fn add(tar: &mut Vec<u8>, name: &str, content: &[u8]) {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).unwrap();
            h.set_size(content.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            tar.extend_from_slice(h.as_bytes());
            tar.extend_from_slice(content);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        let mut tar = Vec::new();
        let fill = vec![b'x'; CHUNK - 1024];
        let across: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
        add(&mut tar, "b/proc/fill", &fill); // ends 512 bytes before the first boundary
        add(&mut tar, "b/proc/empty_at_boundary", b""); // its content starts at the boundary
        add(&mut tar, "b/proc/across", &across);
        let pad = CHUNK * 3 - 1024 - tar.len();
        add(&mut tar, "b/proc/pad", &vec![b'p'; pad]);
        // Its content would start right where the tar ends, at the third boundary, with no
        // end-of-archive blocks after it.
        add(&mut tar, "b/proc/empty_last", b"");
        assert_eq!(tar.len(), CHUNK * 3);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let b = read_from(&gz[..], "t.tar.gz", &Limits::default()).unwrap();
        let f = b.latest();
        assert_eq!(f.get("proc/fill"), Some(&fill[..]));
        assert_eq!(f.get("proc/empty_at_boundary"), Some(&b""[..]));
        assert_eq!(f.get("proc/across"), Some(&across[..]));
        assert_eq!(f.get("proc/pad").map(<[u8]>::len), Some(pad));
        assert_eq!(f.get("proc/empty_last"), Some(&b""[..]));
    }
}
