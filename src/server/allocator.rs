//! glibc malloc's one setting the server changes: a fixed mmap threshold.
//!
//! glibc serves an allocation above its mmap threshold (128 KiB at start) with its own
//! mapping, and gives the mapping back when it is freed. But freeing one *raises* the
//! threshold to its size (up to 32 MiB), so the next buffers of that size come from the heap
//! and, once freed, stay in the process as holes between smaller, long-lived allocations.
//! The server makes such buffers again and again: a refresh's list of due measurements
//! (16 bytes each), a hash table that doubles, a refresh round's replies. With the threshold
//! fixed they are mapped and unmapped each time, and 100,000 live measurements cost about
//! 60 bytes less each (BENCHMARKS.md, Performance III).
//!
//! A threshold set in the environment (`MALLOC_MMAP_THRESHOLD_`) is left as it is.

/// glibc's initial threshold, kept instead of letting it rise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// The environment variable with which glibc takes the threshold from the user.
const ENV: &str = "MALLOC_MMAP_THRESHOLD_";

/// Fixes glibc's mmap threshold, unless the environment sets it. Elsewhere (another libc)
/// there is nothing to do.
pub(super) fn fix_mmap_threshold() {
    if !should_fix(std::env::var_os(ENV).as_deref()) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes malloc's parameters, under malloc's own lock; any
    // thread may call it at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// The user's setting wins, even an empty one: glibc has read it at the process's start.
fn should_fix(from_env: Option<&std::ffi::OsStr>) -> bool {
    from_env.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_in_the_environment_is_left_alone() {
        assert!(should_fix(None));
        assert!(!should_fix(Some("65536".as_ref())));
        assert!(!should_fix(Some("".as_ref())));
    }
}
