//! The bundle's gzip stream: a series of gzip members (RFC 1952 §2.2; every gzip reader inflates
//! them as one stream), each holding whole tar entries, about [`MEMBER_BYTES`] of tar, and naming
//! its own compressed length in an extra field of its header, as BGZF does. A reader finds every
//! member without inflating anything and can inflate them in parallel; one gzip stream can only
//! be inflated from its start, by one thread.
//!
//! Member header: `1f 8b 08 04`, mtime 0, `00 ff`, XLEN 8, then the subfield `M G`, length 4,
//! and the member's whole length in bytes (header to trailer), little-endian u32.

use std::io::{self, Write};
use std::ops::Range;

use flate2::write::DeflateEncoder;
use flate2::{Compression, Crc};

/// Tar bytes per member, at least (a member ends at the first entry boundary after this).
/// Resetting the compressor's 32 KiB window once per MiB costs ~0.5% of the bundle's size.
pub const MEMBER_BYTES: u64 = 1 << 20;

/// The fixed part of a member header: magic, deflate, FEXTRA, mtime 0, no extra flags, OS
/// unknown, XLEN 8, subfield `MG` of 4 bytes.
const HEADER: [u8; 16] = [0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255, 8, 0, b'M', b'G', 4, 0];
/// The fixed header plus the member's length: what a reader peeks at (see [`starts_members`]).
pub const HEADER_LEN: usize = HEADER.len() + 4;
/// CRC-32 and ISIZE.
const TRAILER_LEN: usize = 8;

/// Writes a gzip stream as members; the caller ends each one after a whole entry (see
/// [`Members::len`], [`Members::end_member`]).
pub struct Members<W: Write> {
    out: W,
    deflate: DeflateEncoder<Vec<u8>>,
    crc: Crc,
    /// The previous member's compressed buffer, for the next one.
    spare: Vec<u8>,
    /// Whether any member was written (an empty stream still gets one, empty, member).
    wrote: bool,
}

impl<W: Write> Members<W> {
    pub fn new(out: W, level: Compression) -> Members<W> {
        Members {
            out,
            deflate: DeflateEncoder::new(Vec::with_capacity(256 << 10), level),
            crc: Crc::new(),
            spare: Vec::with_capacity(256 << 10),
            wrote: false,
        }
    }

    /// Uncompressed bytes in the member being written.
    pub fn len(&self) -> u64 {
        self.deflate.total_in()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the member out; what is written next starts another.
    pub fn end_member(&mut self) -> io::Result<()> {
        let mut data = self.deflate.reset(std::mem::take(&mut self.spare))?;
        let len = HEADER_LEN + data.len() + TRAILER_LEN;
        let len = u32::try_from(len)
            .map_err(|_| io::Error::other("a gzip member over 4 GiB (an entry that large?)"))?;
        self.out.write_all(&HEADER)?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&data)?;
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        self.crc.reset();
        data.clear();
        self.spare = data;
        self.wrote = true;
        Ok(())
    }

    /// Ends the last member and returns the output, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.is_empty() || !self.wrote {
            self.end_member()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Members<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.deflate.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // a member is only written whole
    }
}

/// One member of a bundle's gzip stream, found from the headers alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its bytes in the compressed stream, header to trailer.
    pub range: Range<usize>,
    /// The uncompressed length its trailer claims (modulo 2^32, as gzip stores it).
    pub isize: u32,
}

/// The members of `gz` when each names its length and together they tile `gz` exactly; `None`
/// for anything else (a bundle of an earlier collector, another gzip writer, damage): such a
/// stream is read from its start.
pub fn members(gz: &[u8]) -> Option<Vec<Member>> {
    let mut out = Vec::with_capacity(gz.len() / (64 << 10) + 1);
    let mut at = 0;
    while at < gz.len() {
        let rest = &gz[at..];
        if rest.len() < HEADER_LEN + TRAILER_LEN || rest[..HEADER.len()] != HEADER {
            return None;
        }
        let len = u32::from_le_bytes(rest[HEADER.len()..HEADER_LEN].try_into().ok()?) as usize;
        if len < HEADER_LEN + TRAILER_LEN || len > rest.len() {
            return None;
        }
        let isize = u32::from_le_bytes(rest[len - 4..len].try_into().ok()?);
        out.push(Member {
            range: at..at + len,
            isize,
        });
        at += len;
    }
    (!out.is_empty()).then_some(out)
}

impl Member {
    /// The member's raw deflate data, and the CRC-32 its trailer gives (of `gz`, the stream
    /// [`members`] found it in).
    pub fn deflate<'a>(&self, gz: &'a [u8]) -> (&'a [u8], u32) {
        let m = &gz[self.range.clone()];
        let (data, trailer) = m[HEADER_LEN..].split_at(m.len() - HEADER_LEN - TRAILER_LEN);
        let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        (data, crc)
    }
}

/// The first bytes a stream of members starts with: a reader that sees them can read the whole
/// stream into memory and look for the members.
pub fn starts_members(head: &[u8]) -> bool {
    head.len() >= HEADER.len() && head[..HEADER.len()] == HEADER
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn write(parts: &[&[u8]]) -> Vec<u8> {
        let mut m = Members::new(Vec::new(), Compression::fast());
        for p in parts {
            m.write_all(p).unwrap();
            if m.len() >= MEMBER_BYTES {
                m.end_member().unwrap();
            }
        }
        m.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn members_are_one_gzip_stream_and_found_from_headers() {
        let big: Vec<u8> = (0..MEMBER_BYTES as usize + 5)
            .map(|i| (i % 253) as u8)
            .collect();
        let parts: [&[u8]; 4] = [b"small", &big, b"after", &big[..100]];
        let gz = write(&parts);
        assert_eq!(gunzip(&gz), parts.concat());
        let ms = members(&gz).expect("members");
        // The first member ends after `big`, the entry that took it past MEMBER_BYTES.
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].isize as usize, 5 + big.len());
        assert_eq!(ms[1].isize, 105);
        assert_eq!(ms[1].range.end, gz.len());
        // Each member is a gzip stream of its own.
        assert_eq!(
            gunzip(&gz[ms[1].range.clone()]),
            [&b"after"[..], &big[..100]].concat()
        );
        assert!(starts_members(&gz));
        // Its raw deflate data and CRC, as a reader without a gzip decoder takes them.
        let (data, crc) = ms[1].deflate(&gz);
        let mut tar = Vec::new();
        flate2::read::DeflateDecoder::new(data)
            .read_to_end(&mut tar)
            .unwrap();
        let mut want = Crc::new();
        want.update(&tar);
        assert_eq!((tar.len(), crc), (105, want.sum()));
    }

    #[test]
    fn an_empty_stream_is_one_empty_member() {
        let gz = write(&[]);
        assert_eq!(gunzip(&gz), b"");
        assert_eq!(members(&gz).map(|m| m.len()), Some(1));
    }

    #[test]
    fn anything_else_is_not_members() {
        let gz = write(&[b"abc"]);
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
        plain.write_all(b"abc").unwrap();
        let plain = plain.finish().unwrap();
        assert_eq!(members(&plain), None);
        assert!(!starts_members(&plain));
        assert_eq!(members(&gz[..gz.len() - 1]), None); // truncated
        assert_eq!(members(&[gz.clone(), b"x".to_vec()].concat()), None); // trailing bytes
        let mut long = gz.clone();
        long[HEADER.len()] += 1; // a length past the end
        assert_eq!(members(&long), None);
        let mut short = gz.clone();
        short[HEADER.len()..HEADER_LEN].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(members(&short), None);
        assert_eq!(members(b""), None);
    }
}
