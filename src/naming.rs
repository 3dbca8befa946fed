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
    Name::hashed(metric, subject, identity_hash(identity))
        .as_str()
        .to_owned()
}

/// The hash a metric name ends with, of a measurement's identity (see [`metric_name`]).
pub fn identity_hash(identity: &str) -> u32 {
    fnv1a32(identity.as_bytes())
}

/// A metric name built in place: at most [`MAX_NAME_LEN`] ASCII bytes, without an allocation.
/// A parsed trigger keeps only its identity's hash, and an answer that carries the name builds
/// it again ([`Name::hashed`]): the readable part sanitized and cut in one pass.
#[derive(Clone, Copy)]
pub struct Name {
    bytes: [u8; MAX_NAME_LEN],
    len: usize,
}

impl Name {
    /// The name of [`metric_name`], with the identity already hashed.
    pub fn hashed(metric: &str, subject: &str, hash: u32) -> Name {
        let budget = MAX_NAME_LEN - HASH_SUFFIX_LEN;
        let mut name = Name {
            bytes: [0; MAX_NAME_LEN],
            len: 0,
        };
        // Lower-case; every run of other characters becomes one `-`, none at the start. Read
        // as bytes: each byte of a non-ASCII character is one of those others, so the run it
        // belongs to is the same.
        'parts: for part in [metric.as_bytes(), b"-", subject.as_bytes()] {
            for &byte in part {
                if name.len == budget {
                    break 'parts;
                }
                let byte = byte.to_ascii_lowercase();
                if byte.is_ascii_lowercase() || byte.is_ascii_digit() {
                    name.push(byte);
                } else if name.len > 0 && name.last() != b'-' {
                    name.push(b'-');
                }
            }
        }
        // No `-` at the end: the hash suffix adds its own separator.
        while name.len > 0 && name.last() == b'-' {
            name.len -= 1;
        }
        if name.len == 0 {
            name.push(b'm');
        }
        // `-{hash:08x}`, without the formatting machinery (this runs for every answer).
        name.push(b'-');
        for shift in (0..8).rev() {
            name.push(HEX_DIGITS[(hash >> (shift * 4)) as usize & 0xf]);
        }
        name
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters, digits and `-` are ever pushed.
        std::str::from_utf8(&self.bytes[..self.len]).expect("a metric name is ASCII")
    }

    /// Within [`MAX_NAME_LEN`]: the readable part stops at its budget, the suffix fits after.
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn last(&self) -> u8 {
        self.bytes[self.len - 1]
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Name").field(&self.as_str()).finish()
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

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
    fn the_name_built_in_place_is_the_name() {
        let long = "x".repeat(100);
        for (metric, subject) in [
            ("redis-list", "jobs"),
            ("redis-list", ""),
            ("", "---"),
            ("redis-list", long.as_str()),
            ("pg-activity", "ÄÖÜ unicode ключ"),
        ] {
            let name = Name::hashed(metric, subject, identity_hash(subject));
            assert_eq!(name.as_str(), two_step_reference(metric, subject, subject));
            assert!(is_dns1123_label(name.as_str()), "{name:?}");
        }
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

    /// The rule as first written (sanitize the whole, then cut): the one-pass builder must
    /// give every name it gave, or running ScaledObjects would see their metrics renamed.
    fn two_step_reference(metric: &str, subject: &str, identity: &str) -> String {
        let mut readable = String::new();
        for c in format!("{metric}-{subject}").chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                readable.push(c);
            } else if !readable.ends_with('-') && !readable.is_empty() {
                readable.push('-');
            }
        }
        let readable = readable.trim_end_matches('-');
        let mut name: String = readable
            .chars()
            .take(MAX_NAME_LEN - HASH_SUFFIX_LEN)
            .collect();
        while name.ends_with('-') {
            name.pop();
        }
        if name.is_empty() {
            name.push('m');
        }
        format!("{name}-{:08x}", fnv1a32(identity.as_bytes()))
    }

    #[test]
    fn the_one_pass_builder_gives_the_names_of_the_first_rule() {
        let subjects = [
            "",
            "-",
            "jobs",
            "ÄÖÜ unicode ключ",
            "{bull}:queue:wait",
            &"x".repeat(60),
            &"a-".repeat(40),
            &format!("{}-:-tail", "y".repeat(42)),
            &format!("{}::", "z".repeat(43)),
            &format!("{}__b", "z".repeat(42)),
        ];
        for subject in subjects {
            for metric in ["redis-list", "pg-activity", "", "--", "Sidekiq"] {
                assert_eq!(
                    metric_name(metric, subject, subject),
                    two_step_reference(metric, subject, subject),
                    "{metric:?} {subject:?}"
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
