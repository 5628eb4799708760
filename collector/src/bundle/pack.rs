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

use std::ops::Range;

use thiserror::Error;

/// Name of a packed entry inside the directory it describes.
pub const PACK_NAME: &str = "memgap.files";

const OPEN: &[u8] = b"==> ";
/// The end of a header line.
const CLOSE_LINE: &[u8] = b" <==\n";
const CLOSE: &[u8] = CLOSE_LINE.split_at(4).0;

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

/// The names of the files of the last pack [`scan`] read, in order. Packs of one kind of
/// directory hold the same files in the same order, so a header most often names the file the
/// last pack had at its position: that is checked with one comparison instead of reading the
/// name byte by byte.
#[derive(Debug, Default)]
pub struct Recall {
    /// The names one after another; name `k` ends at `ends[k]`.
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Recall {
    /// Where name `k` starts (`k` at most the number of names).
    fn start(&self, k: usize) -> usize {
        k.checked_sub(1).map_or(0, |j| self.ends[j])
    }

    fn name(&self, k: usize) -> Option<&[u8]> {
        let end = *self.ends.get(k)?;
        Some(&self.bytes[self.start(k)..end])
    }

    /// Name `k` is `name` (the names after it are forgotten when it was another).
    fn set(&mut self, k: usize, name: &[u8]) {
        if k > self.ends.len() || self.name(k) == Some(name) {
            return;
        }
        self.bytes.truncate(self.start(k));
        self.ends.truncate(k);
        self.bytes.extend_from_slice(name);
        self.ends.push(self.bytes.len());
    }
}

/// Calls `f(name, content)` with the byte ranges of each file of `pack`, in order, and returns
/// the error that stopped it, if any: [`entries`] for indexing a whole bundle (~140,000 files),
/// where the usual header and its whole file are taken in one step and anything else is read
/// as `entries` reads it. `recall` carries the names from one pack to the next.
#[inline]
pub fn scan(
    pack: &[u8],
    recall: &mut Recall,
    mut f: impl FnMut(Range<usize>, Range<usize>),
) -> Option<PackError> {
    let mut pos = 0;
    let mut k = 0;
    while pos < pack.len() {
        let rest = &pack[pos..];
        // The name expected here, then its space (`after_name`): exactly the name `name_len`
        // would find (a recalled name holds only name bytes, and a space ends one).
        let recalled = recall
            .name(k)
            .filter(|name| {
                rest.starts_with(OPEN)
                    && rest
                        .get(OPEN.len()..OPEN.len() + name.len())
                        .is_some_and(|here| crate::bytes::same(here, name))
            })
            .and_then(|name| after_name(rest, name.len()));
        let quick = recalled.or_else(|| {
            let q = quick_header(rest);
            if let Some((name, ..)) = q {
                recall.set(k, name.as_bytes());
            }
            q
        });
        k += 1;
        if let Some((name, len, header)) = quick {
            let start = pos + header;
            // The content and its separating newline are there (else `entries` explains).
            if len < pack.len() - start && pack[start + len] == b'\n' {
                let n = pos + OPEN.len();
                f(n..n + name.len(), start..start + len);
                pos = start + len + 1;
                continue;
            }
        }
        let mut e = Entries { pack, pos };
        match e.parse_one() {
            Ok((name, content)) => {
                let at = |s: &[u8]| s.as_ptr() as usize - pack.as_ptr() as usize;
                let (n, c) = (at(name.as_bytes()), at(content));
                f(n..n + name.len(), c..c + content.len());
                pos = e.pos;
            }
            Err(err) => return Some(err),
        }
    }
    None
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
    after_name(rest, name_len(rest.strip_prefix(OPEN)?)?)
}

/// [`quick_header`] once the name is known to be the `name_len` bytes after `==> `, all of
/// them [`name_byte`]s.
#[inline]
fn after_name(rest: &[u8], name_len: usize) -> Option<(&str, usize, usize)> {
    let b = &rest[OPEN.len()..];
    if name_len == 0 || b.get(name_len) != Some(&b' ') {
        return None;
    }
    // The length: 19 digits always fit a u64; longer ones are left to the careful reader.
    let at = name_len + 1;
    let (mut len, mut end) = (0u64, at);
    while let Some(d) = b.get(end).filter(|d| d.is_ascii_digit()) {
        if end - at == 19 {
            return None;
        }
        len = len * 10 + u64::from(d - b'0');
        end += 1;
    }
    if end == at || b.get(end..end + CLOSE_LINE.len())? != CLOSE_LINE {
        return None;
    }
    // SAFETY: every byte of the name was checked by `name_len` to be printable ASCII, hence
    // UTF-8; `from_utf8` cost as much as the rest of this function.
    let name = unsafe { std::str::from_utf8_unchecked(&b[..name_len]) };
    let start = OPEN.len() + end + CLOSE_LINE.len();
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
    use proptest::strategy::Strategy as _;

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

    /// What `scan` finds, as `entries` gives it.
    fn scanned(pack: &[u8]) -> Vec<Result<(&str, &[u8]), PackError>> {
        scanned_after(pack, &mut Recall::default())
    }

    /// The same, recalling the names of the packs scanned before with `recall`.
    fn scanned_after<'p>(
        pack: &'p [u8],
        recall: &mut Recall,
    ) -> Vec<Result<(&'p str, &'p [u8]), PackError>> {
        let mut out = Vec::new();
        let err = scan(pack, recall, |n, c| {
            out.push(Ok((std::str::from_utf8(&pack[n]).unwrap(), &pack[c])))
        });
        out.extend(err.map(Err));
        out
    }

    #[test]
    fn scan_finds_what_entries_finds() {
        let mut pack = Vec::new();
        push(&mut pack, "memory.stat", b"cache 1\n").unwrap();
        push(&mut pack, "cmdline", b"a\0==> b 1 <==\n").unwrap();
        push(&mut pack, "empty", b"").unwrap();
        for end in 0..=pack.len() {
            let cut = &pack[..end];
            assert_eq!(scanned(cut), entries(cut).collect::<Vec<_>>(), "{end}");
        }
        // Lengths that are wrong: no newline where the content should end.
        for bad in [
            &b"==> a 1 <==\nxy\n"[..],
            b"==> a 2 <==\nx\n==> b 0 <==\n\n",
        ] {
            let found = scanned(bad);
            assert_eq!(found, entries(bad).collect::<Vec<_>>());
            assert!(matches!(
                found.last(),
                Some(Err(PackError::MissingSeparator { .. }))
            ));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// Packs of files whose names recur, and of pieces, scanned one after another with
        /// one `Recall`, scan as they iterate.
        #[test]
        fn scan_agrees_with_entries_pack_after_pack(
            packs in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        3 => ("a|ab|a.b|memory.stat|x", "[a-z\\n]{0,3}").prop_map(|(n, c)| {
                            format!("==> {n} {} <==\n{c}\n", c.len()).into_bytes()
                        }),
                        1 => "==> (a|ab)[ ./b]?".prop_map(String::into_bytes),
                        1 => "[=> x]{4}(a|ab) [0-9] <==\n".prop_map(String::into_bytes),
                        1 => "[0-9]{1,2} <==\n".prop_map(String::into_bytes),
                        1 => proptest::collection::vec(proptest::num::u8::ANY, 0..3),
                    ],
                    0..6,
                ),
                1..6,
            )
        ) {
            let mut recall = Recall::default();
            for pieces in packs {
                let pack = pieces.concat();
                proptest::prop_assert_eq!(
                    scanned_after(&pack, &mut recall),
                    entries(&pack).collect::<Vec<_>>()
                );
            }
        }

        /// Any bytes built from pieces of headers and contents scan as they iterate.
        #[test]
        fn scan_agrees_with_entries(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b"==> ".to_vec()),
                    proptest::strategy::Just(b" <==\n".to_vec()),
                    proptest::strategy::Just(b"\n".to_vec()),
                    "[a-z./ \t]{0,4}".prop_map(String::into_bytes),
                    "[0-9]{1,3}".prop_map(String::into_bytes),
                    proptest::collection::vec(proptest::num::u8::ANY, 0..3),
                ],
                0..12,
            )
        ) {
            let pack = pieces.concat();
            proptest::prop_assert_eq!(scanned(&pack), entries(&pack).collect::<Vec<_>>());
        }
    }

    #[test]
    fn refuses_names_that_would_break_framing() {
        assert!(push(&mut Vec::new(), "a b", b"").is_err());
        assert!(push(&mut Vec::new(), "../x", b"").is_err());
        assert!(push(&mut Vec::new(), "", b"").is_err());
    }
}
