//! Metric names: deterministic, readable, DNS-1123 labels.
//!
//! KEDA passes the name we return from GetMetricSpec to the HPA (prefixed with `sN-`) and back
//! to GetMetrics. A name must be a DNS-1123 label (`[a-z0-9-]`, starting and ending with a
//! letter or digit, at most 63 characters), the same for the same trigger on every call and
//! every replica, and different for different triggers. The readable part (metric and its
//! main subject, e.g. `redis-list-agent-tasks-pending`) is lossy — case, punctuation, cut
//! length and the other parts of the trigger are folded away — so every name ends with an
//! 8-hex-digit hash of the full measurement identity, which keeps different triggers apart.

/// The longest DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;

/// Length of the `-xxxxxxxx` suffix.
const HASH_SUFFIX_LEN: usize = 9;

/// Builds the metric name of a trigger.
///
/// `metric` is the trigger's `metric` value (`redis-list`), `subject` its most telling part
/// (the first key, the queue name), and `identity` a canonical rendering of everything that
/// makes the measurement distinct (source and typed query), used only for the hash.
pub fn metric_name(metric: &str, subject: &str, identity: &str) -> String {
    let readable = sanitize(&format!("{metric}-{subject}"));
    let budget = MAX_NAME_LEN - HASH_SUFFIX_LEN;
    let mut name: String = readable.chars().take(budget).collect();
    // Cutting may leave a trailing `-`; the hash suffix adds its own separator.
    while name.ends_with('-') {
        name.pop();
    }
    if name.is_empty() {
        name.push('m');
    }
    let mut name = format!("{name}-{:08x}", fnv1a32(identity.as_bytes()));
    // A parsed trigger keeps its name as long as it lives: no spare capacity (formatting
    // leaves up to twice the length).
    name.shrink_to_fit();
    name
}

/// Lower-cases, maps every run of other characters to one `-`, trims `-` at both ends.
fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// FNV-1a, 32 bits. Chosen because it is stable across Rust versions and platforms (unlike
/// `DefaultHasher`), so a name never changes when the scaler is rebuilt.
fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// True for a valid DNS-1123 label.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Source names appear in error messages and as a label of the scaler's own metrics; they
/// follow the same rule.
pub fn is_source_name(name: &str) -> bool {
    is_dns1123_label(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_part_comes_first() {
        let name = metric_name("redis-list", "agent:tasks:pending", "id");
        assert!(
            name.starts_with("redis-list-agent-tasks-pending-"),
            "{name}"
        );
        assert!(is_dns1123_label(&name), "{name}");
    }

    #[test]
    fn same_trigger_same_name_and_different_trigger_different_name() {
        let a = metric_name("redis-list", "jobs", "redis-main|jobs");
        assert_eq!(a, metric_name("redis-list", "jobs", "redis-main|jobs"));
        // Same readable part, other source: the hash keeps them apart.
        let b = metric_name("redis-list", "jobs", "redis-other|jobs");
        assert_ne!(a, b);
        // Keys that sanitize alike stay apart too.
        let c = metric_name("redis-list", "Jobs", "redis-main|Jobs");
        assert_ne!(a, c);
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned: a change here renames every metric of every running ScaledObject.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(
            metric_name("redis-list", "jobs", "x"),
            format!("redis-list-jobs-{:08x}", fnv1a32(b"x"))
        );
    }

    #[test]
    fn every_input_gives_a_valid_label() {
        let subjects = [
            "",
            "---",
            "ÄÖÜ unicode ключ",
            "UPPER_case.with.dots",
            &"x".repeat(200),
            &"a-".repeat(100),
            "trailing-",
            "{bull}:queue:wait",
        ];
        for subject in subjects {
            for metric in ["redis-list", "pg-activity", ""] {
                let name = metric_name(metric, subject, subject);
                assert!(
                    is_dns1123_label(&name),
                    "{metric:?} {subject:?} -> {name:?}"
                );
            }
        }
    }

    #[test]
    fn dns1123_rules() {
        assert!(is_dns1123_label("a"));
        assert!(is_dns1123_label("redis-main"));
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad:?}");
        }
    }
}
