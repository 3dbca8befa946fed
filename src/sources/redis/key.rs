//! A Redis key as a live query holds it: inside the query's own allocation when it is short,
//! as nearly every queue's key is (`queue:default`, `bull:mail`, `rq:queue:high`, `celery`).
//!
//! A live measurement's query sits behind an `Arc`, in one of malloc's 80-byte chunks
//! whatever its key. A key of up to [`INLINE`] bytes fits in that chunk; a `Box<str>` would
//! cost a chunk of its own (32 to 48 bytes for such keys) per measurement. Longer keys are
//! boxed. Either way the key compares, hashes, prints and serializes as the string it is, so
//! metric names do not change.

use std::{
    fmt,
    hash::{Hash, Hasher},
    ops::Deref,
};

use serde::Serialize;

/// The longest key held inline: the most that keeps every [`super::RedisQuery`] within 56
/// bytes (an 80-byte chunk with its `Arc` counts). Checked by a test in `query.rs`.
pub const INLINE: usize = 38;

/// See the module documentation.
#[derive(Clone)]
pub struct Key(Repr);

/// Private, so a key that fits is always inline. Equal keys are equal values either way,
/// since comparisons and hashes go through the key's bytes.
#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<str>),
}

impl Key {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)])
                .expect("an inline key is a whole string's bytes"),
            Repr::Boxed(key) => key,
        }
    }

    /// The key's bytes, unchecked: what a lookup compares and hashes (a warm request looks
    /// its measurement up by query, so this is on every request's path).
    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Boxed(key) => key.as_bytes(),
        }
    }
}

impl From<&str> for Key {
    fn from(key: &str) -> Key {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..key.len()].copy_from_slice(key.as_bytes());
                Key(Repr::Inline { len, bytes })
            }
            _ => Key(Repr::Boxed(key.into())),
        }
    }
}

impl From<String> for Key {
    fn from(key: String) -> Key {
        if key.len() <= INLINE {
            Key::from(key.as_str())
        } else {
            Key(Repr::Boxed(key.into_boxed_str()))
        }
    }
}

impl Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl Hash for Key {
    /// As `str` hashes: its bytes, then `0xff` (no string contains that byte).
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, RandomState};

    use super::*;

    #[test]
    fn a_key_reads_back_as_it_was_given_on_either_side_of_the_inline_limit() {
        let long = "k".repeat(INLINE + 1);
        let exact = "é".repeat(INLINE / 2);
        for given in ["", "queue:default", exact.as_str(), long.as_str()] {
            let key = Key::from(given);
            assert_eq!(key.as_str(), given);
            assert_eq!(Key::from(given.to_string()), key);
            assert_eq!(format!("{key}"), given);
            assert_eq!(format!("{key:?}"), format!("{given:?}"));
            assert_eq!(
                serde_json::to_string(&key).unwrap(),
                serde_json::to_string(given).unwrap()
            );
        }
        assert!(matches!(Key::from(exact.as_str()).0, Repr::Inline { .. }));
        assert!(matches!(Key::from(long.as_str()).0, Repr::Boxed(_)));
    }

    #[test]
    fn a_key_hashes_and_compares_as_its_string() {
        let hasher = RandomState::new();
        let (a, b) = (Key::from("bull:mail"), Key::from("bull:mail".to_string()));
        assert_eq!(hasher.hash_one(&a), hasher.hash_one(&b));
        assert_eq!(hasher.hash_one(&a), hasher.hash_one("bull:mail"));
        assert_ne!(a, Key::from("bull:mails"));
    }
}
