//! Byte-slice helpers for the hot paths of reading bundles (here and in the analyzer).

/// Whether two slices of the same length are equal, compared a word at a time: kernel keys and
/// file names are 3 to 40 bytes, where a call to `memcmp` per key cost more than the comparison.
#[inline(always)] // on the hot path of every flat file and `status` line; not always inlined
pub fn same(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len();
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap_or_default());
    let half = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap_or_default());
    match n {
        8.. => {
            let mut i = 0;
            while i + 8 < n {
                if word(a, i) != word(b, i) {
                    return false;
                }
                i += 8;
            }
            // The last word, overlapping the one before.
            word(a, n - 8) == word(b, n - 8)
        }
        4.. => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a.iter().zip(b).all(|(x, y)| x == y),
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn a_flipped_bit_anywhere_at_any_length_is_found() {
        let a = b"total_inactive_file_and_then_some_x";
        for n in 0..a.len() {
            assert!(same(&a[..n], &a[..n]));
            for i in 0..n {
                let mut b = a[..n].to_vec();
                b[i] ^= 1;
                assert!(!same(&a[..n], &b), "{n} {i}");
            }
        }
    }
}
