//! The allocator's settings: the `memgap` binary (and the benchmarks that stand for it) run on
//! mimalloc.

/// `mi_option_purge_delay`: its position in mimalloc v3's `mi_option_e` (libmimalloc-sys has
/// no constant for it; a test checks that this option holds the documented default).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps the memory a bundle frees for the next one, instead of returning it to the OS (after a
/// delay) and faulting it back in moments later (zeroed, as huge pages): 7-10% of a batch's
/// time went there. Peak RSS is the same, still bounded by the bundles in flight
/// (docs/performance.md). Call it before the work starts.
pub fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's options; any value is valid for this one (-1: never purge).
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
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
