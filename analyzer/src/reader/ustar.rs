//! The plain ustar headers the collector writes, read by hand for its gzip members: the tar
//! crate spent ~3,200 instructions on each of a bundle's ~7,000 headers (a `format!` among
//! them). Only headers that mean the same to every reader are taken here: the ustar magic, a
//! correct checksum, plain octal numbers, a regular file or a directory. A member with
//! anything else (a long name, pax records, another entry type, damage, an end that is not
//! exactly the member's) is left whole to the tar crate, so what a bundle reads as does not
//! depend on this reader.

const BLOCK: usize = 512;

/// One entry of a plain member.
pub(super) struct Plain {
    /// As the tar crate gives it: `prefix/name`, or `name` with no prefix.
    pub path: String,
    pub kind: tar::EntryType,
    pub size: u64,
    /// Where its content starts in the member.
    pub start: u64,
}

/// How a plain member ends.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    /// Right after its last entry's padding.
    AtEnd,
    /// At an end-of-archive block.
    Marker,
}

/// The entries of the inflated `member`, if every header is plain and the member ends right
/// after an entry or at an end-of-archive block; `None` leaves it to the tar crate.
pub(super) fn walk(member: &[u8]) -> Option<(Vec<Plain>, End)> {
    // An entry with content takes two blocks at least: room for all of them, grown only by
    // members of empty files.
    let (mut pos, mut out) = (0u64, Vec::with_capacity(member.len() / (2 * BLOCK)));
    loop {
        if pos == member.len() as u64 {
            return Some((out, End::AtEnd));
        }
        let at = usize::try_from(pos).ok()?;
        let h: &[u8; BLOCK] = member.get(at..at.checked_add(BLOCK)?)?.try_into().ok()?;
        if h.iter().all(|&b| b == 0) {
            return Some((out, End::Marker));
        }
        let (kind, size) = plain(h)?;
        let start = pos + BLOCK as u64;
        let padded = size.checked_add(BLOCK as u64 - 1)? & !(BLOCK as u64 - 1);
        // Past the member's end, the next block is not there: a short member is the tar
        // crate's to explain.
        let next = start.checked_add(padded)?;
        out.push(Plain {
            path: path(h),
            kind,
            size,
            start,
        });
        pos = next;
    }
}

/// A header's type and size, if it is plain.
fn plain(h: &[u8; BLOCK]) -> Option<(tar::EntryType, u64)> {
    if &h[257..263] != b"ustar\0" || &h[263..265] != b"00" {
        return None;
    }
    // The checksum counts its own field as spaces.
    let sum =
        byte_sum(h) - h[148..156].iter().map(|&b| u64::from(b)).sum::<u64>() + 8 * u64::from(b' ');
    if octal(&h[148..156])? != sum {
        return None;
    }
    let kind = match h[156] {
        b'\0' | b'0' | b'5' | b'7' => tar::EntryType::new(h[156]),
        _ => return None,
    };
    Some((kind, octal(&h[124..136])?))
}

/// The sum of a block's bytes, eight at a time: four 16-bit lanes, each adding two bytes of
/// each word, at most 128 bytes of 255 (no carry into the next lane).
fn byte_sum(h: &[u8; BLOCK]) -> u64 {
    const LOW: u64 = 0x00ff_00ff_00ff_00ff;
    let lanes = h.chunks_exact(8).fold(0u64, |acc, w| {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        acc + (w & LOW) + ((w >> 8) & LOW)
    });
    (0..4).map(|i| (lanes >> (16 * i)) & 0xffff).sum()
}

/// A numeric field's value if it is plain: octal digits from its first byte on, then spaces
/// at most, then the field's end or a NUL (after which anything is ignored). The tar crate
/// reads every such field to the same value (and some others, which are not taken here).
fn octal(field: &[u8]) -> Option<u64> {
    let digits = field
        .iter()
        .take_while(|b| (b'0'..=b'7').contains(b))
        .count();
    if digits == 0 {
        return None;
    }
    let rest = &field[digits..];
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    if rest.get(spaces).is_some_and(|&b| b != 0) {
        return None;
    }
    // A field is at most 12 bytes: 36 bits.
    Some(
        field[..digits]
            .iter()
            .fold(0, |n, d| n * 8 + u64::from(d - b'0')),
    )
}

/// The header's path as the tar crate reads a ustar header's: the prefix, a `/` and the name,
/// each up to its first NUL; the name alone when the prefix is empty. Lossy as `parse::text`.
fn path(h: &[u8; BLOCK]) -> String {
    let (name, prefix) = (upto_nul(&h[..100]), upto_nul(&h[345..500]));
    let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
    if !prefix.is_empty() {
        p.extend_from_slice(prefix);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    match String::from_utf8(p) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// A field up to its first NUL.
fn upto_nul(f: &[u8]) -> &[u8] {
    &f[..memchr::memchr(0, f).unwrap_or(f.len())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every way of writing a numeric field the tar crate reads: `octal` takes some of them,
    /// always with the crate's value.
    #[test]
    fn plain_numbers_read_as_the_tar_crate_reads_them() {
        let bytes = [b'0', b'1', b'7', b'8', b' ', 0, b'+', b'\t', b'x', 0xff];
        let mut taken = 0;
        // Every 4-byte field over these bytes, padded with each of NUL, space and a digit.
        for n in 0..bytes.len().pow(4) {
            let mut f: Vec<u8> = (0..4).map(|i| bytes[n / bytes.len().pow(i) % 10]).collect();
            for pad in [0, b' ', b'3'] {
                f.truncate(4);
                f.resize(8, pad);
                let mut h = tar::Header::new_old();
                h.as_old_mut().cksum.copy_from_slice(&f);
                let theirs = h.cksum().ok().map(u64::from);
                if let Some(mine) = octal(&f) {
                    assert_eq!(Some(mine), theirs, "{f:?}");
                    taken += 1;
                }
            }
        }
        assert!(taken > 1000, "{taken}");
    }

    proptest! {
        #[test]
        fn blocks_add_up(bytes in proptest::collection::vec(any::<u8>(), BLOCK), high in any::<bool>()) {
            let mut h = [0u8; BLOCK];
            h.copy_from_slice(&bytes);
            if high {
                h.iter_mut().for_each(|b| *b |= 0xf0);
            }
            prop_assert_eq!(byte_sum(&h), h.iter().map(|&b| u64::from(b)).sum::<u64>());
        }

        /// The path of any header is the tar crate's.
        #[test]
        fn paths_read_as_the_tar_crate_reads_them(
            name in proptest::collection::vec(any::<u8>(), 0..=100),
            prefix in proptest::collection::vec(any::<u8>(), 0..=155),
        ) {
            let mut h = tar::Header::new_ustar();
            h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(&name);
            h.as_ustar_mut().unwrap().prefix[..prefix.len()].copy_from_slice(&prefix);
            let block: &[u8; BLOCK] = h.as_bytes();
            let theirs = crate::parse::text(&h.path_bytes()).into_owned();
            prop_assert_eq!(path(block), theirs);
        }
    }

    /// A tar of directories and files of sizes around the block size, with paths that need
    /// the ustar prefix, as the collector writes it.
    fn plain_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        for (i, size) in [0usize, 1, 511, 512, 513, 1500].into_iter().enumerate() {
            let mut h = tar::Header::new_ustar();
            h.set_size(size as u64);
            h.set_entry_type(tar::EntryType::Regular);
            let data = vec![b'a' + i as u8; size];
            b.append_data(&mut h, format!("{long}{i}"), &data[..])
                .unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, format!("dir{i}/"), &[][..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Rewrites the header at `at`, its checksum made right.
    fn rewrite(tar: &mut [u8], at: usize, f: &dyn Fn(&mut tar::Header)) {
        let mut h = tar::Header::from_byte_slice(&tar[at..at + 512]).clone();
        f(&mut h);
        h.set_cksum();
        tar[at..at + 512].copy_from_slice(h.as_bytes());
    }

    /// The second header of [`plain_tar`] (after the empty first file's).
    const SECOND: usize = 1024;

    #[test]
    fn plain_tars_read_as_the_tar_crate_reads_them() {
        let mut nameless = plain_tar();
        rewrite(&mut nameless, SECOND, &|h| h.as_old_mut().name = [0; 100]);
        for tar in [plain_tar(), nameless] {
            same_entries_as_the_tar_crate(&tar);
        }
    }

    fn same_entries_as_the_tar_crate(tar: &[u8]) {
        let mut theirs = Vec::new();
        for e in tar::Archive::new(tar).entries().unwrap() {
            let e = e.unwrap();
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let kind = e.header().entry_type();
            theirs.push((path, kind, e.size(), e.raw_file_position()));
        }
        assert!(
            theirs.iter().any(|e| e.0.len() > 200),
            "a path with a prefix"
        );
        let last = theirs.last().unwrap();
        let entries_end = (last.3 + last.2).next_multiple_of(512) as usize;
        for (bytes, end) in [(tar, End::Marker), (&tar[..entries_end], End::AtEnd)] {
            let (mine, got) = walk(bytes).expect("plain");
            let mine: Vec<_> = mine
                .into_iter()
                .map(|p| (p.path, p.kind, p.size, p.start))
                .collect();
            assert_eq!(mine, theirs);
            assert_eq!(got, end);
        }
    }

    #[test]
    fn anything_else_is_left_to_the_tar_crate() {
        let (tar, second) = (plain_tar(), SECOND);
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut t = tar.clone();
        t[second + 3] ^= 1;
        cases.push(("a checksum that does not add up", t));
        let mut t = tar.clone();
        rewrite(&mut t, second, &|h| {
            h.set_entry_type(tar::EntryType::GNULongName)
        });
        cases.push(("a long name record", t));
        let mut t = tar.clone();
        rewrite(&mut t, second, &|h| {
            h.set_entry_type(tar::EntryType::XHeader)
        });
        cases.push(("pax records", t));
        let mut t = tar.clone();
        rewrite(&mut t, second, &|h| {
            h.as_old_mut().size = [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        });
        cases.push(("a base-256 size", t));
        let mut t = tar.clone();
        rewrite(&mut t, second, &|h| h.as_old_mut().size = *b" 0000000000\0");
        cases.push(("a size after a space", t));
        let mut t = tar.clone();
        rewrite(&mut t, second, &|h| {
            h.as_ustar_mut().unwrap().version = *b" \0"
        });
        cases.push(("another magic", t));
        cases.push(("an entry cut short", tar[..second + 512 + 100].to_vec()));
        cases.push(("a part of a block", tar[..second + 100].to_vec()));
        for (what, t) in cases {
            assert!(walk(&t).is_none(), "{what}");
        }
    }
}
