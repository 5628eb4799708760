//! Parsers: pure functions from a kernel file's text to typed values, units normalized to bytes.
//!
//! Every parser is lenient in the same way: unknown keys are kept (new kernels add fields in
//! the middle of files), and lines it cannot read are reported by number in `bad_lines`
//! instead of failing the whole file.

pub mod flat;
pub mod kv_kb;
pub mod limit;
pub mod misc;
pub mod nested;
pub mod oom;
pub mod pid_cgroup;
pub mod slabinfo;
pub mod sysvipc;

pub use flat::Flat;
pub use limit::Limit;

/// The value of a run of ASCII digits; `None` if it does not fit a `u64`.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Kernel text files are ASCII; anything else is decoded lossily rather than refused.
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    // The strict check is several times faster than the lossy decoder on valid input.
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}
