//! The allocator: the `memgap` binary (and the benchmarks that stand for it) run on mimalloc,
//! through [`Mimalloc`], with the settings below.

use std::alloc::{GlobalAlloc, Layout};

use libmimalloc_sys as mi;

/// mimalloc as Rust's global allocator. The `mimalloc` crate hands every request to
/// `mi_malloc_aligned`; in mimalloc v3 a request above 1 KiB whose block size is not a power of
/// two then takes the over-allocating path (a larger block, ~250 instructions instead of ~20),
/// though every block is word-aligned anyway. Here a request whose alignment every block has
/// goes to the plain functions, as `mi_realloc_aligned` itself decides (docs/performance.md).
pub struct Mimalloc;

/// The alignment of every mimalloc block (`mi_realloc_aligned` takes its plain path up to it).
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: each function hands the request to the mimalloc function of the same contract; an
// alignment above `WORD` goes to the aligned ones, which honour it.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast())
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// `mi_option_purge_delay`: its position in mimalloc v3's `mi_option_e` (libmimalloc-sys has
/// no constant for it; a test checks that this option holds the documented default).
const PURGE_DELAY: mi::mi_option_t = 15;

/// Keeps the memory a bundle frees for the next one, instead of returning it to the OS (after a
/// delay) and faulting it back in moments later (zeroed, as huge pages): 7-10% of a batch's
/// time went there. Peak RSS is the same, still bounded by the bundles in flight
/// (docs/performance.md). Call it before the work starts.
pub fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's options; any value is valid for this one (-1: never purge).
    unsafe { mi::mi_option_set(PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::Mimalloc;

    #[test]
    fn every_block_has_the_alignment_asked_for() {
        let sizes = [
            1,
            7,
            8,
            24,
            40,
            100,
            1000,
            1025,
            1280,
            5000,
            70_000,
            3 << 20,
        ];
        for align in [1, 2, 4, 8, 16, 32, 64, 256, 4096, 1 << 16] {
            for size in sizes {
                let layout = Layout::from_size_align(size, align).unwrap();
                let aligned = |p: *mut u8| !p.is_null() && p as usize % align == 0;
                // SAFETY: non-zero sizes; every block is freed with its layout; reads stay
                // within the sizes written.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(aligned(p), "{size} bytes aligned to {align}");
                    p.write_bytes(0xa5, size);
                    let grown = size * 3 + 1;
                    let q = Mimalloc.realloc(p, layout, grown);
                    assert!(aligned(q), "{size} -> {grown} bytes aligned to {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xa5), "contents kept");
                    Mimalloc.dealloc(q, Layout::from_size_align(grown, align).unwrap());
                    let z = Mimalloc.alloc_zeroed(layout);
                    assert!(aligned(z), "{size} zeroed bytes aligned to {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0), "zeroed");
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc v3's default, 1000 ms (no other option defaults to it), unless the
        // environment sets it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an option.
            let delay = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
            assert_eq!(delay, 1000, "mimalloc's option order changed");
        }
    }
}
