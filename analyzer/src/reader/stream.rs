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

    /// A stream of one piece, there already (an inflated member).
    pub(super) fn filled(piece: Vec<u8>) -> Stream {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _ = tx.send(Ok(piece));
        Stream::new(rx) // the sender dropped: the stream ends after the piece
    }

    /// The next piece, waited for; `None` once the stream has ended (its error, if any, kept).
    fn next_piece(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        match self.rx.recv() {
            Ok(Ok(c)) if !c.is_empty() => return Some(c),
            Ok(Err(e)) => self.err = Some(e),
            // The end of the stream, or the producer gone.
            _ => {}
        }
        self.done = true;
        None
    }

    /// Waits for the pieces up to `end`; false if the stream ends before.
    fn fill_to(&mut self, end: u64) -> bool {
        while self.received < end {
            let Some(c) = self.next_piece() else { break };
            self.piece_start.push(self.received);
            self.piece_blob.push(self.blobs.len() as u32);
            self.received += c.len() as u64;
            self.blobs.push(c);
        }
        self.received >= end
    }

    /// Reads on past the tar's end, discarding, so that the gzip trailers after it (CRC-32
    /// and size, which prove every byte before them) are checked: at most `max` more bytes
    /// (a hostile tail of zeros inflates at will). False if the stream went on past that.
    pub(super) fn drain(&mut self, max: u64) -> bool {
        let mut read = 0u64;
        while read <= max {
            let Some(c) = self.next_piece() else {
                return true;
            };
            read += c.len() as u64;
            recycle([c]);
        }
        self.done
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

/// Buffers of bundles already dropped, for the next bundle to inflate into: fresh memory costs
/// the kernel a page fault and a page clearing per 4 KiB, which measured as much as inflating
/// itself; reused memory costs neither. Bounded, so a batch holds no more than this.
static SPARE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// The bytes [`SPARE`] holds at most, and the largest buffer it keeps (a member is ~1 MiB).
const SPARE_BYTES: usize = 32 << 20;
const SPARE_LARGEST: usize = 8 * CHUNK;

/// An empty buffer of at least `n` bytes of capacity: the smallest spare one that is large
/// enough, or a new one of whole chunks (so that it can be reused).
fn spare(n: usize) -> Vec<u8> {
    let reused = SPARE.lock().ok().and_then(|mut s| {
        let fits = s.iter().enumerate().filter(|(_, b)| b.capacity() >= n);
        let (i, _) = fits.min_by_key(|(_, b)| b.capacity())?;
        Some(s.swap_remove(i))
    });
    reused.unwrap_or_else(|| Vec::with_capacity(n.next_multiple_of(CHUNK).max(CHUNK)))
}

/// The blobs of a bundle; those of whole chunks go back to [`SPARE`] when the bundle is dropped.
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

/// Gives blobs of whole chunks back to [`SPARE`], as many as it keeps.
pub(super) fn recycle(blobs: impl IntoIterator<Item = Vec<u8>>) {
    let Ok(mut spare) = SPARE.lock() else { return };
    let mut held: usize = spare.iter().map(Vec::capacity).sum();
    for mut b in blobs {
        let size = b.capacity();
        if size % CHUNK != 0 || size > SPARE_LARGEST || size == 0 {
            continue;
        }
        if held + size > SPARE_BYTES {
            break;
        }
        held += size;
        b.clear();
        spare.push(b);
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
    let mut chunk = spare(CHUNK);
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

/// Members that claim more are left to the streaming reader: a collector's member is ~1 MiB
/// of tar, and a claim is allocated before it is checked.
const MEMBER_MAX: u32 = 64 << 20;

/// A gzip member's raw deflate `data` inflated into one buffer, if it inflates to exactly `size`
/// bytes whose CRC-32 is `crc`, its deflate stream ending exactly where `data` does. The whole
/// member in one call (libdeflate): with the input and the output whole it inflates ~1.4x
/// faster than a streaming inflater (docs/performance.md).
pub(super) fn inflate_member(data: &[u8], size: u32, crc: u32) -> Option<Vec<u8>> {
    // Deflate cannot expand by more than 1032:1; a claim beyond that is refused unread.
    if size > MEMBER_MAX || size as u64 > (data.len() as u64 + 1) * 1032 {
        return None;
    }
    let size = size as usize;
    let mut out = spare(size);
    let whole = Inflater::new()?.inflate(data, &mut out, size);
    if !(whole && crc32(&out) == crc) {
        recycle([out]);
        return None;
    }
    // A small member (a stream's last, or one of a stream of tiny ones) is kept at its size,
    // not in a buffer of a quarter MiB or more for the bundle's lifetime.
    if out.len() < CHUNK / 2 {
        let small = out.to_vec();
        recycle([std::mem::replace(&mut out, small)]);
    }
    Some(out)
}

/// The CRC-32 of `bytes` (libdeflate's: ~4x faster than flate2's here, with AVX-512).
fn crc32(bytes: &[u8]) -> u32 {
    // SAFETY: `bytes` is readable for its length.
    unsafe { libdeflate_sys::libdeflate_crc32(0, bytes.as_ptr().cast(), bytes.len()) }
}

/// A libdeflate decompressor, freed when dropped.
struct Inflater(std::ptr::NonNull<libdeflate_sys::libdeflate_decompressor>);

impl Inflater {
    fn new() -> Option<Inflater> {
        // SAFETY: no arguments; a null result (out of memory) is checked.
        std::ptr::NonNull::new(unsafe { libdeflate_sys::libdeflate_alloc_decompressor() })
            .map(Inflater)
    }

    /// Inflates `data` into `out` (emptied first); true if it is one whole deflate stream,
    /// ending exactly where `data` does, of exactly `size` bytes.
    fn inflate(&mut self, data: &[u8], out: &mut Vec<u8>, size: usize) -> bool {
        out.clear();
        out.reserve_exact(size);
        let (mut used, mut made) = (0usize, 0usize);
        // SAFETY: the decompressor is live; `data` is readable for its length; `out` has
        // `size` bytes of capacity, and libdeflate writes no more than that (it fails with
        // INSUFFICIENT_SPACE instead); `used` and `made` are valid for writes.
        let result = unsafe {
            libdeflate_sys::libdeflate_deflate_decompress_ex(
                self.0.as_ptr(),
                data.as_ptr().cast(),
                data.len(),
                out.as_mut_ptr().cast(),
                size,
                &mut used,
                &mut made,
            )
        };
        let whole = result == libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS
            && used == data.len()
            && made == size;
        if whole {
            // SAFETY: libdeflate initialized the first `made` (= `size`) bytes.
            unsafe { out.set_len(size) };
        }
        whole
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: allocated by `libdeflate_alloc_decompressor`, freed once.
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{read_from, Limits};
    use super::{
        inflate_member, recycle, spare, CHUNK, MEMBER_MAX, SPARE, SPARE_BYTES, SPARE_LARGEST,
    };

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
            let out = inflate_member(&z, size, crc).expect("whole");
            assert_eq!(out, data, "{len} bytes");
            // Whole chunks, so the buffer can be reused for another member; a small member
            // at its size.
            match len < CHUNK / 2 {
                true => assert!(out.capacity() < CHUNK / 2, "{len} bytes"),
                false => assert_eq!(out.capacity() % CHUNK, 0, "{len} bytes"),
            }
            // Every claim that is not exactly right is refused.
            assert!(inflate_member(&z, size + 1, crc).is_none());
            assert!(inflate_member(&z, size.wrapping_sub(1), crc).is_none());
            assert!(inflate_member(&z, size, crc ^ 1).is_none());
            assert!(inflate_member(&z[..z.len() - 1], size, crc).is_none());
            assert!(inflate_member(&[&z[..], b"x"].concat(), size, crc).is_none());
        }
        assert!(inflate_member(b"not deflate at all", 5, 0).is_none());
        // Claims deflate cannot make from so few bytes, or beyond what is read whole, are
        // refused without inflating.
        let (z, crc) = deflated(&[0; 4096]);
        assert!(inflate_member(&z, 1 << 30, crc).is_none());
        let big = vec![0u8; MEMBER_MAX as usize + 1];
        let (z, crc) = deflated(&big);
        assert!(inflate_member(&z, big.len() as u32, crc).is_none());
        assert_eq!(inflate_member(&z[..], big.len() as u32 - 1, crc), None);
    }

    /// Raw deflate, one fixed-Huffman block: `a`, then a match of length symbol `symbol` at
    /// distance 1 (no extra bits), then the end of the block.
    fn fixed_block(symbol: u16) -> Vec<u8> {
        let (mut out, mut acc, mut n) = (Vec::new(), 0u32, 0);
        // Deflate packs fields from the lowest bit; Huffman codes from their highest.
        let mut bits = |value: u32, count: u32, code: bool| {
            for i in 0..count {
                let bit = match code {
                    true => (value >> (count - 1 - i)) & 1,
                    false => (value >> i) & 1,
                };
                acc |= bit << n;
                n += 1;
                if n == 8 {
                    out.push(acc as u8);
                    (acc, n) = (0, 0);
                }
            }
        };
        bits(1, 1, false); // the last block
        bits(1, 2, false); // fixed Huffman codes
        bits(0x30 + u32::from(b'a'), 8, true);
        bits(0xC0 + u32::from(symbol - 280), 8, true); // litlen 280-287: 8-bit codes
        bits(0, 5, true); // distance code 0: 1
        bits(0, 7, true); // end of block (256)
        bits(0, 7, false); // to a whole byte
        out
    }

    /// A member libdeflate reads and zlib refuses: the litlen symbols 286 and 287 "will never
    /// actually occur" (RFC 1951 §3.2.6); libdeflate reads them as a length of 258, as 285,
    /// zlib (and flate2) as an error. Such a member is taken only with its claimed size and
    /// CRC-32, so its bytes are the ones its writer compressed (docs/robustness.md).
    #[test]
    fn a_member_zlib_refuses_is_read_as_its_size_and_crc_say() {
        let want = vec![b'a'; 259];
        let mut crc = flate2::Crc::new();
        crc.update(&want);
        let inflate = |z: &[u8]| {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::DeflateDecoder::new(z), &mut out)
                .map(|_| out)
        };
        assert_eq!(inflate(&fixed_block(285)).unwrap(), want);
        assert_eq!(
            inflate_member(&fixed_block(285), 259, crc.sum()),
            Some(want.clone())
        );
        for symbol in [286, 287] {
            let z = fixed_block(symbol);
            assert!(inflate(&z).is_err(), "flate2 refuses symbol {symbol}");
            assert_eq!(inflate_member(&z, 259, crc.sum()), Some(want.clone()));
            assert_eq!(inflate_member(&z, 259, crc.sum() ^ 1), None);
        }
    }

    #[test]
    fn crc32_is_gzip_s() {
        for len in [0, 1, 7, 8, 63, 64, 65, 4096, 100_003] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 256) as u8).collect();
            let mut crc = flate2::Crc::new();
            crc.update(&data);
            assert_eq!(super::crc32(&data), crc.sum(), "{len} bytes");
        }
    }

    #[test]
    fn spare_buffers_are_bounded_and_the_smallest_that_fits_is_reused() {
        let held = || {
            SPARE
                .lock()
                .unwrap()
                .iter()
                .map(Vec::capacity)
                .sum::<usize>()
        };
        recycle((0..200).map(|_| Vec::with_capacity(CHUNK)));
        assert!(held() <= SPARE_BYTES);
        // Odd sizes and oversized buffers are not kept.
        let (odd, over) = (CHUNK + 1, 2 * SPARE_LARGEST);
        recycle([Vec::with_capacity(odd), Vec::with_capacity(over)]);
        let kept = |n| SPARE.lock().unwrap().iter().any(|b| b.capacity() == n);
        assert!(!kept(odd) && !kept(over));
        let b = spare(CHUNK + 1);
        assert!(b.capacity() > CHUNK && b.capacity() % CHUNK == 0);
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
