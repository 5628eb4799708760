//! The packed-directory entry: several small files of one directory in one tar entry.
//!
//! A cgroup directory holds ~30 small files and a node holds thousands of cgroups; one tar entry
//! per file costs a 512-byte header plus padding each, which dominated both bundle size and read
//! time. A pack keeps the files verbatim behind a one-line header that `grep`, `less` and
//! `tar -xOf` users can read:
//!
//! ```text
//! ==> memory.stat 1234 <==
//! <exactly 1234 bytes: the file as the kernel wrote it>
//! <one newline>
//! ==> memory.usage_in_bytes 9 <==
//! ...
//! ```
//!
//! The length makes the framing exact for any content (binary `cmdline` with NULs, files without
//! a trailing newline, content that itself looks like a header).

use thiserror::Error;

/// Name of a packed entry inside the directory it describes.
pub const PACK_NAME: &str = "memgap.files";

const OPEN: &[u8] = b"==> ";
const CLOSE: &[u8] = b" <==";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PackError {
    #[error("byte {offset}: header line not terminated")]
    UnterminatedHeader { offset: usize },
    #[error("byte {offset}: malformed header {line:?}")]
    BadHeader { offset: usize, line: String },
    #[error("byte {offset}: file {name:?} claims {len} bytes but only {available} remain")]
    Truncated {
        offset: usize,
        name: String,
        len: usize,
        available: usize,
    },
    #[error("byte {offset}: file {name:?} is not followed by the separating newline")]
    MissingSeparator { offset: usize, name: String },
    #[error("file name {0:?} is empty or contains whitespace or '/'")]
    BadName(String),
}

/// Appends one file to a pack being built in `out`.
pub fn push(out: &mut Vec<u8>, name: &str, content: &[u8]) -> Result<(), PackError> {
    if !valid_name(name) {
        return Err(PackError::BadName(name.to_string()));
    }
    out.extend_from_slice(OPEN);
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(content.len().to_string().as_bytes());
    out.extend_from_slice(CLOSE);
    out.push(b'\n');
    out.extend_from_slice(content);
    out.push(b'\n');
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.bytes().any(|b| b.is_ascii_whitespace() || b == b'/')
}

/// Iterates over the `(name, content)` pairs of a pack, borrowing from it.
pub fn entries(pack: &[u8]) -> Entries<'_> {
    Entries { pack, pos: 0 }
}

/// Iterator returned by [`entries`]; stops after the first error.
pub struct Entries<'a> {
    pack: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(&'a str, &'a [u8]), PackError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.pack.len() {
            return None;
        }
        let item = self.parse_one();
        if item.is_err() {
            self.pos = self.pack.len();
        }
        Some(item)
    }
}

/// The common header, `==> NAME LEN <==\n` with an ASCII name, read in one pass: a bundle
/// holds ~140,000 of them. Returns the name, the content's length and where the content starts;
/// `None` for anything else, which [`Entries::parse_slow`] then reads or explains.
fn quick_header(rest: &[u8]) -> Option<(&str, usize, usize)> {
    let b = rest.strip_prefix(OPEN)?;
    let name_len = name_len(b)?;
    let (name, b) = b.split_at(name_len);
    let b = b.strip_prefix(b" ")?;
    let digits = b.iter().position(|c| !c.is_ascii_digit())?;
    // 19 digits always fit a u64; longer lengths are left to the careful reader.
    if name.is_empty() || digits == 0 || digits > 19 {
        return None;
    }
    let len = b[..digits]
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    b[digits..].strip_prefix(CLOSE)?.strip_prefix(b"\n")?;
    let start = OPEN.len() + name_len + 1 + digits + CLOSE.len() + 1;
    // SAFETY: every byte of `name` was checked above to be printable ASCII, hence UTF-8;
    // `from_utf8` cost as much as the rest of this function.
    let name = unsafe { std::str::from_utf8_unchecked(name) };
    Some((name, usize::try_from(len).ok()?, start))
}

/// A byte a quick header's name may hold: printable ASCII but the space and `/`.
fn name_byte(c: u8) -> bool {
    c > b' ' && c < 0x7f && c != b'/'
}

/// Where the name at the start of `b` ends: its first byte that is not a [`name_byte`],
/// looked for eight bytes at a time (names are up to ~35 bytes, and a bundle holds ~140,000).
fn name_len(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(word) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // Per byte, the lowest flagged one is exact (borrows and carries only run upwards
        // from a flagged byte): below `!`, above `~`, and `/`.
        let below = x.wrapping_sub(ONES * 0x21) & !x & HIGH;
        let above = (x.wrapping_add(ONES) | x) & HIGH;
        let y = x ^ (ONES * u64::from(b'/'));
        let slash = y.wrapping_sub(ONES) & !y & HIGH;
        let stop = below | above | slash;
        if stop != 0 {
            return Some(i + stop.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| !name_byte(c)).map(|p| i + p)
}

impl<'a> Entries<'a> {
    fn parse_one(&mut self) -> Result<(&'a str, &'a [u8]), PackError> {
        let offset = self.pos;
        let rest = &self.pack[offset..];
        let Some((name, len, header)) = quick_header(rest) else {
            return self.parse_slow();
        };
        self.content(offset, name, len, offset + header)
    }

    /// Any header, with an exact error for a bad one.
    fn parse_slow(&mut self) -> Result<(&'a str, &'a [u8]), PackError> {
        let offset = self.pos;
        let rest = &self.pack[offset..];
        let eol = memchr::memchr(b'\n', rest).ok_or(PackError::UnterminatedHeader { offset })?;
        let line = &rest[..eol];
        let bad = || PackError::BadHeader {
            offset,
            line: String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
        };
        let inner = line
            .strip_prefix(OPEN)
            .and_then(|l| l.strip_suffix(CLOSE))
            .ok_or_else(bad)?;
        let space = memchr::memrchr(b' ', inner).ok_or_else(bad)?;
        let (name, digits) = (&inner[..space], &inner[space + 1..]);
        let name = std::str::from_utf8(name).map_err(|_| bad())?;
        if !valid_name(name) || digits.is_empty() {
            return Err(bad());
        }
        let len = digits.iter().try_fold(0usize, |n, &d| {
            if d.is_ascii_digit() {
                n.checked_mul(10)?.checked_add((d - b'0') as usize)
            } else {
                None
            }
        });
        let len = len.ok_or_else(bad)?;
        self.content(offset, name, len, offset + eol + 1)
    }

    /// The content of the file whose header at `offset` ends at `start`.
    fn content(
        &mut self,
        offset: usize,
        name: &'a str,
        len: usize,
        start: usize,
    ) -> Result<(&'a str, &'a [u8]), PackError> {
        let available = self.pack.len() - start;
        // `len + 1` cannot overflow: len <= available < usize::MAX is checked first.
        if len > available {
            return Err(PackError::Truncated {
                offset,
                name: name.to_string(),
                len,
                available,
            });
        }
        if self.pack.get(start + len) != Some(&b'\n') {
            return Err(PackError::MissingSeparator {
                offset,
                name: name.to_string(),
            });
        }
        self.pos = start + len + 1;
        Ok((name, &self.pack[start..start + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_content() {
        let files: &[(&str, &[u8])] = &[
            ("memory.stat", b"cache 1\nrss 2\n"),
            ("cmdline", b"/bin/sh\0-c\0echo ==> x 3 <==\0"),
            ("no_newline", b"42"),
            ("empty", b""),
        ];
        let mut pack = Vec::new();
        for (n, c) in files {
            push(&mut pack, n, c).unwrap();
        }
        let back: Vec<_> = entries(&pack).map(|e| e.unwrap()).collect();
        assert_eq!(back, files.to_vec());
    }

    #[test]
    fn reports_truncation_and_garbage() {
        let mut pack = Vec::new();
        push(&mut pack, "memory.stat", b"cache 1\n").unwrap();
        let cut = &pack[..pack.len() - 3];
        let err = entries(cut).last().unwrap().unwrap_err();
        assert!(matches!(err, PackError::Truncated { .. }), "{err}");
        let err = entries(b"hello\nworld").next().unwrap().unwrap_err();
        assert!(matches!(err, PackError::BadHeader { .. }), "{err}");
        let err = entries(b"==> a 99999999999999999999999 <==\n")
            .next()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, PackError::BadHeader { .. }), "{err}");
        assert!(entries(b"").next().is_none());
    }

    #[test]
    fn names_end_where_the_plain_scan_ends() {
        let plain = |b: &[u8]| b.iter().position(|&c| !name_byte(c));
        // Every byte value at every position of 20 bytes, alone and before a header's rest.
        for len in 1..20 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'm'; len];
                    b[at] = c;
                    assert_eq!(name_len(&b), plain(&b), "{b:?}");
                    b.extend_from_slice(b" 12 <==\n");
                    assert_eq!(name_len(&b), plain(&b), "{b:?}");
                }
            }
        }
        assert_eq!(name_len(b""), None);
        // Two stops in one word: the first counts.
        for (a, z) in [(b'/', b' '), (b' ', 0xff), (0x7f, b'/'), (0xff, 0x00)] {
            let b = [b'a', b'b', a, b'c', z, b'd', b'e', b'f', b'g'];
            assert_eq!(name_len(&b), Some(2));
        }
    }

    #[test]
    fn quick_and_careful_readers_agree() {
        let cases: &[&[u8]] = &[
            b"==> memory.stat 3 <==\nabc\n",
            b"==> m\xc3\xa9moire 0 <==\n\n",
            b"==> a 007 <==\nabcdefg\n",
            b"==> a 99999999999999999999 <==\n",
            b"==> a 9999999999999999999 <==\n",
            b"==> a\tb 1 <==\nx\n",
            b"==> a 1 <=\nx\n",
            b"==> a 1 <==",
            b"==>  1 <==\nx\n",
            b"==> a  1 <==\nx\n",
            b"==> a/b 1 <==\nx\n",
            b"==> a 2 <==\nx\n",
        ];
        for c in cases {
            let careful = Entries { pack: c, pos: 0 }.parse_slow();
            let either = Entries { pack: c, pos: 0 }.parse_one();
            assert_eq!(either, careful, "{}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn refuses_names_that_would_break_framing() {
        assert!(push(&mut Vec::new(), "a b", b"").is_err());
        assert!(push(&mut Vec::new(), "../x", b"").is_err());
        assert!(push(&mut Vec::new(), "", b"").is_err());
    }
}
