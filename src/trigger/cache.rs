//! Parsed triggers, remembered per distinct `scalerMetadata` map and namespace.
//!
//! KEDA sends the same metadata for a trigger on every poll and every HPA read, so a warm
//! GetMetrics would otherwise parse it, check it and hash its metric name again each time
//! (about 2 µs, a tenth of a request's CPU at full load). The cache keys a parsed trigger by a
//! 128-bit fingerprint of the namespace and the map: one pass of SipHash-1-3 with 128-bit
//! output, keyed with secrets drawn at start, over the namespace and the entries sorted by key,
//! each part after its length as a varint (a prefix-free code), so that no two different
//! triggers feed it the same bytes, gathered in a buffer so the hasher is called once. Two
//! distinct triggers share a fingerprint with a probability of about n² / 2¹²⁹ (n distinct
//! triggers), far below any hardware error rate, and an outsider cannot aim for a collision
//! without the keys: a crafted trigger is never answered with another namespace's spec.
//! Comparing the stored metadata on every hit would make a collision cost time instead, but
//! would keep a copy of every map (as many bytes again as the rest of a trigger's entry).
//!
//! The fingerprint is already a keyed hash, so the tables use its first half as their own
//! hash instead of hashing it once more. A table's slot holds the fingerprint and the parsed
//! trigger itself (64 bytes), so a remembered trigger costs no allocation of its own: with
//! 100,000 triggers, separate allocations for each spec and metric name would cost more
//! than the table (malloc's headers, rounding and the holes the parses leave between them).
//!
//! Only successful parses are kept (a rejected trigger is parsed again, and its error is
//! built anew). Deleted ScaledObjects must not stay forever, so triggers live in two
//! generations, as measurements live for `idle_expiry`: every `idle_expiry` (or when the
//! current generation holds half of `capacity`) the current generation becomes the previous
//! one and the previous one is dropped; a trigger found in the previous generation moves back
//! to the current one. A trigger nobody asks for is gone after at most two periods, and at
//! most `capacity` are remembered.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher, RandomState},
    sync::RwLock,
    time::Duration,
};

use hashbrown::HashTable;
use siphasher::sip128::{Hasher128, SipHasher13};
use tokio::time::Instant;

use super::{Catalog, TriggerSpec, parse_trigger};
use crate::Result;

/// A trigger's 128-bit keyed hash, as two words: 8-byte aligned (a `u128` would align the
/// slot to 16 bytes). The tables hash it with [`Fingerprint::table_hash`]; `Hash` is only
/// for the tests' sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(Hash))]
struct Fingerprint(u64, u64);

impl Fingerprint {
    /// The tables' hash: the first half, which is already keyed and uniform.
    fn table_hash(&self) -> u64 {
        self.0
    }
}

/// One remembered trigger.
struct Slot {
    fingerprint: Fingerprint,
    spec: TriggerSpec,
}

/// One generation of remembered triggers.
#[derive(Default)]
struct Parsed(HashTable<Slot>);

impl Parsed {
    fn get(&self, fingerprint: &Fingerprint) -> Option<&TriggerSpec> {
        let found = self.0.find(fingerprint.table_hash(), |slot| {
            slot.fingerprint == *fingerprint
        });
        found.map(|slot| &slot.spec)
    }

    fn remove(&mut self, fingerprint: &Fingerprint) {
        let found = self.0.find_entry(fingerprint.table_hash(), |slot| {
            slot.fingerprint == *fingerprint
        });
        if let Ok(slot) = found {
            slot.remove();
        }
    }

    /// Puts the trigger in, or replaces the one with the same fingerprint (two requests may
    /// have parsed it at once).
    fn insert(&mut self, fingerprint: Fingerprint, spec: TriggerSpec) {
        let slot = self.0.entry(
            fingerprint.table_hash(),
            |slot| slot.fingerprint == fingerprint,
            |slot| slot.fingerprint.table_hash(),
        );
        slot.insert(Slot { fingerprint, spec });
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Entries sorted on the stack up to this many (the default `max_metadata_entries` is 64, a
/// real trigger has 4–10); more go through a `Vec`.
const SORTED_ON_STACK: usize = 16;

/// See the module documentation.
pub struct TriggerCache {
    /// SipHash's 128-bit key.
    key: (u64, u64),
    generations: RwLock<Generations>,
    capacity: usize,
    period: Duration,
}

struct Generations {
    current: Parsed,
    previous: Parsed,
    /// When `current` started.
    started: Instant,
}

impl TriggerCache {
    /// At most `capacity` triggers; one not asked for during two `period`s is forgotten.
    pub fn new(capacity: usize, period: Duration) -> TriggerCache {
        // Each `RandomState` holds secret keys drawn for the process (successive ones differ),
        // so a hash made with it is a secret no client can predict.
        let secret = || RandomState::new().hash_one(0u8);
        TriggerCache {
            key: (secret(), secret()),
            generations: RwLock::new(Generations {
                current: Parsed::default(),
                previous: Parsed::default(),
                started: Instant::now(),
            }),
            capacity: capacity.max(2),
            period,
        }
    }

    /// [`parse_trigger`], remembered.
    pub fn parse(
        &self,
        metadata: &HashMap<String, String>,
        namespace: &str,
        catalog: &Catalog,
    ) -> Result<TriggerSpec> {
        let entries = metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        self.parse_entries(entries, namespace, catalog)
    }

    /// [`parse_trigger`] of the map these entries make, remembered: the map is built only
    /// when the trigger is not. A key may repeat; as in a protobuf map, the last one counts.
    pub fn parse_entries<'a>(
        &self,
        entries: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        namespace: &str,
        catalog: &Catalog,
    ) -> Result<TriggerSpec> {
        let fingerprint = self.fingerprint(entries.clone(), namespace);
        let found = {
            let generations = self.generations.read().expect("lock poisoned");
            if let Some(spec) = generations.current.get(&fingerprint) {
                return Ok(spec.clone());
            }
            generations.previous.get(&fingerprint).cloned()
        };
        let spec = match found {
            Some(spec) => spec,
            None => {
                let metadata: HashMap<String, String> =
                    entries.map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                parse_trigger(&metadata, namespace, catalog)?
            }
        };
        self.remember(fingerprint, spec.clone());
        Ok(spec)
    }

    /// Puts a trigger in the current generation, starting a new one first when it is due.
    fn remember(&self, fingerprint: Fingerprint, spec: TriggerSpec) {
        let mut generations = self.generations.write().expect("lock poisoned");
        let now = Instant::now();
        if now.saturating_duration_since(generations.started) >= self.period
            || generations.current.len() >= self.capacity / 2
        {
            // The dropped generation's table becomes the new current one, so its room is
            // reused instead of freed and allocated again.
            let Generations {
                current, previous, ..
            } = &mut *generations;
            std::mem::swap(current, previous);
            current.clear();
            generations.started = now;
        }
        generations.previous.remove(&fingerprint);
        generations.current.insert(fingerprint, spec);
    }

    /// Triggers remembered now, in both generations.
    pub fn len(&self) -> usize {
        self.generations
            .read()
            .map_or(0, |g| g.current.len() + g.previous.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Independent of the entries' order: they are hashed sorted by key, and of a repeated
    /// key only the last entry is.
    fn fingerprint<'a>(
        &self,
        entries: impl Iterator<Item = (&'a str, &'a str)>,
        namespace: &str,
    ) -> Fingerprint {
        let mut on_stack = [("", ""); SORTED_ON_STACK];
        let mut on_heap = Vec::new();
        let mut count = 0;
        for entry in entries {
            if count < SORTED_ON_STACK {
                on_stack[count] = entry;
            } else {
                if on_heap.is_empty() {
                    on_heap.extend_from_slice(&on_stack);
                }
                on_heap.push(entry);
            }
            count += 1;
        }
        let entries = if count <= SORTED_ON_STACK {
            &mut on_stack[..count]
        } else {
            on_heap.as_mut_slice()
        };
        // Stable: the entries of a repeated key stay in the order they came.
        entries.sort_by_key(|(key, _)| *key);
        let mut feed = Feed::new(SipHasher13::new_with_keys(self.key.0, self.key.1));
        feed.part(namespace.as_bytes());
        for (at, (key, value)) in entries.iter().enumerate() {
            let replaced = entries.get(at + 1).is_some_and(|(next, _)| next == key);
            if !replaced {
                feed.part(key.as_bytes());
                feed.part(value.as_bytes());
            }
        }
        feed.finish()
    }
}

/// Bytes gathered before each call to the hasher: a trigger's whole fingerprint input, as a
/// rule.
const FEED_BYTES: usize = 256;

/// The fingerprint's input: each part after its length, as a LEB128 varint. The lengths are
/// a prefix-free code, so no two sequences of parts feed the hasher the same bytes. The bytes
/// go to the hasher a buffer at a time: SipHash's cost per call is more than its cost per
/// byte for parts this short.
struct Feed {
    hasher: SipHasher13,
    buf: [u8; FEED_BYTES],
    len: usize,
}

impl Feed {
    fn new(hasher: SipHasher13) -> Feed {
        Feed {
            hasher,
            buf: [0; FEED_BYTES],
            len: 0,
        }
    }

    #[inline(always)]
    fn part(&mut self, bytes: &[u8]) {
        // As a rule a part is short and there is room: its one-byte length and its bytes go
        // straight in.
        let end = self.len + 1 + bytes.len();
        if bytes.len() < 0x80 && end <= FEED_BYTES {
            self.buf[self.len] = bytes.len() as u8;
            self.buf[self.len + 1..end].copy_from_slice(bytes);
            self.len = end;
            return;
        }
        self.long_part(bytes);
    }

    fn long_part(&mut self, bytes: &[u8]) {
        let (mut prefix, mut at, mut len) = ([0u8; 10], 0, bytes.len());
        while len >= 0x80 {
            prefix[at] = (len & 0x7f) as u8 | 0x80;
            (at, len) = (at + 1, len >> 7);
        }
        prefix[at] = len as u8;
        self.push(&prefix[..=at]);
        self.push(bytes);
    }

    #[inline]
    fn push(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > FEED_BYTES {
            self.hasher.write(&self.buf[..self.len]);
            self.len = 0;
            if bytes.len() > FEED_BYTES {
                self.hasher.write(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn finish(mut self) -> Fingerprint {
        self.hasher.write(&self.buf[..self.len]);
        let hash = self.hasher.finish128();
        Fingerprint(hash.h1, hash.h2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::tests::{catalog, metadata};

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn entries(map: &HashMap<String, String>) -> impl Iterator<Item = (&str, &str)> + Clone {
        map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn list_trigger(keys: &str) -> HashMap<String, String> {
        metadata(&[
            ("source", "redis-main"),
            ("metric", "redis-list"),
            ("keys", keys),
            ("target", "5"),
        ])
    }

    #[test]
    fn the_same_trigger_is_parsed_once_and_answers_what_a_parse_answers() {
        let (catalog, cache) = (catalog(), TriggerCache::new(10, HOUR));
        let first = cache.parse(&list_trigger("a"), "team-a", &catalog).unwrap();
        // The same map built again iterates in another order: still the same trigger.
        let again = cache.parse(&list_trigger("a"), "team-a", &catalog).unwrap();
        // Not parsed again: the query is the one the first parse built.
        assert!(first.query.same(&again.query));
        assert_eq!(
            first,
            parse_trigger(&list_trigger("a"), "team-a", &catalog).unwrap()
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn another_value_or_namespace_is_another_trigger() {
        let (catalog, cache) = (catalog(), TriggerCache::new(10, HOUR));
        let a = cache.parse(&list_trigger("a"), "team-a", &catalog).unwrap();
        let b = cache.parse(&list_trigger("b"), "team-a", &catalog).unwrap();
        assert_ne!(a.query, b.query);
        // Keys and values swapped between entries must not collide either.
        let swapped = metadata(&[("x", "y"), ("y", "x")]);
        let straight = metadata(&[("x", "x"), ("y", "y")]);
        assert_ne!(
            cache.fingerprint(entries(&swapped), "team-a"),
            cache.fingerprint(entries(&straight), "team-a")
        );
        assert_ne!(
            cache.fingerprint(entries(&list_trigger("a")), "team-a"),
            cache.fingerprint(entries(&list_trigger("a")), "team-b")
        );
    }

    #[test]
    fn no_two_triggers_feed_the_fingerprint_the_same_bytes() {
        let cache = TriggerCache::new(10, HOUR);
        // Boundaries moved between key and value, between entries, between the namespace
        // and the map; an empty entry against none.
        let triggers = [
            (metadata(&[("ab", "c")]), "team-a"),
            (metadata(&[("a", "bc")]), "team-a"),
            (metadata(&[("a", "b"), ("c", "")]), "team-a"),
            (metadata(&[("a", "b"), ("", "c")]), "team-a"),
            (metadata(&[("a", "b")]), "team-a"),
            (metadata(&[("a", "b"), ("", "")]), "team-a"),
            (metadata(&[("team-a", "")]), ""),
            (metadata(&[("a", "")]), "team-"),
            (metadata(&[]), "team-a"),
            // Lengths past one varint byte and past the buffer.
            (metadata(&[("a", &"b".repeat(128))]), "team-a"),
            (metadata(&[("a", &"b".repeat(127)), ("b", "")]), "team-a"),
            (metadata(&[("a", &"b".repeat(300))]), "team-a"),
            (metadata(&[("a", &"b".repeat(299)), ("", "")]), "team-a"),
        ];
        let fingerprints: std::collections::HashSet<_> = triggers
            .iter()
            .map(|(map, namespace)| cache.fingerprint(entries(map), namespace))
            .collect();
        assert_eq!(fingerprints.len(), triggers.len());
    }

    #[test]
    fn the_feed_hashes_each_length_then_its_part_however_the_bytes_are_buffered() {
        // Parts short, at a varint's step and longer than the buffer, with their lengths as
        // LEB128 varints written out by hand.
        let parts: [(usize, &[u8]); 7] = [
            (0, &[0x00]),
            (5, &[0x05]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (FEED_BYTES, &[0x80, 0x02]),
            (40, &[0x28]),
        ];
        let mut feed = Feed::new(SipHasher13::new_with_keys(1, 2));
        let mut whole = Vec::new();
        for (at, (len, prefix)) in parts.iter().enumerate() {
            let part = vec![b'a' + at as u8; *len];
            feed.part(&part);
            whole.extend_from_slice(prefix);
            whole.extend_from_slice(&part);
        }
        let mut direct = SipHasher13::new_with_keys(1, 2);
        direct.write(&whole);
        let hash = direct.finish128();
        assert_eq!(feed.finish(), Fingerprint(hash.h1, hash.h2));
    }

    #[test]
    fn the_fingerprint_ignores_the_map_order_and_depends_on_the_secret_key() {
        let cache = TriggerCache::new(10, HOUR);
        let first = cache.fingerprint(entries(&list_trigger("a")), "team-a");
        // Every map gets its own random iteration order; the fingerprint must not see it.
        for _ in 0..20 {
            assert_eq!(
                cache.fingerprint(entries(&list_trigger("a")), "team-a"),
                first
            );
        }
        // More entries than are sorted on the stack take the other path, to the same end.
        let many: Vec<(String, String)> = (0..SORTED_ON_STACK + 5)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let forward: HashMap<String, String> = many.iter().cloned().collect();
        let backward: HashMap<String, String> = many.iter().rev().cloned().collect();
        assert_eq!(
            cache.fingerprint(entries(&forward), "team-a"),
            cache.fingerprint(entries(&backward), "team-a")
        );
        // Another process (another secret key) fingerprints the same trigger differently, so
        // no client can compute a fingerprint to aim a collision at.
        let other = TriggerCache::new(10, HOUR);
        assert_ne!(
            other.fingerprint(entries(&list_trigger("a")), "team-a"),
            first
        );
    }

    #[test]
    fn of_a_repeated_key_the_last_entry_counts_as_in_a_protobuf_map() {
        let (catalog, cache) = (catalog(), TriggerCache::new(10, HOUR));
        let one = [("target", "1")];
        let two = [("target", "2")];
        let one_then_two = [("target", "1"), ("target", "2")];
        let two_then_one = [("target", "2"), ("target", "1")];
        let fingerprint =
            |e: &[(&'static str, &'static str)]| cache.fingerprint(e.iter().copied(), "team-a");
        assert_eq!(fingerprint(&one_then_two), fingerprint(&two));
        assert_eq!(fingerprint(&two_then_one), fingerprint(&one));
        assert_ne!(fingerprint(&one_then_two), fingerprint(&two_then_one));
        // Parsed, the repeated key gives what the map a generated decoder builds gives.
        let mut pairs = vec![("source", "redis-main"), ("metric", "redis-list")];
        pairs.extend([("keys", "a"), ("target", "5"), ("keys", "b")]);
        let spec = cache
            .parse_entries(pairs.iter().copied(), "team-a", &catalog)
            .unwrap();
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(spec, parse_trigger(&map, "team-a", &catalog).unwrap());
        assert_eq!(
            spec,
            cache.parse(&list_trigger("b"), "team-a", &catalog).unwrap()
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn rejections_are_not_remembered_and_the_fence_still_holds() {
        let (catalog, cache) = (catalog(), TriggerCache::new(10, HOUR));
        assert!(cache.parse(&list_trigger("a"), "team-a", &catalog).is_ok());
        let denied = cache
            .parse(&list_trigger("a"), "team-b", &catalog)
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let mut bad = list_trigger("a");
        bad.insert("target".into(), "-1".into());
        for _ in 0..2 {
            let error = cache.parse(&bad, "team-a", &catalog).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_generation_makes_room_instead_of_growing() {
        let (catalog, cache) = (catalog(), TriggerCache::new(4, HOUR));
        for key in ["a", "b", "c", "d", "e"] {
            cache.parse(&list_trigger(key), "team-a", &catalog).unwrap();
            assert!(cache.len() <= 4, "{key}: {}", cache.len());
        }
        // a, b went to the previous generation at c; c, d at e, and a, b were dropped.
        assert_eq!(cache.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_nobody_asks_for_is_forgotten_and_one_in_use_is_kept() {
        let (catalog, cache) = (catalog(), TriggerCache::new(100, MINUTE));
        let kept = cache
            .parse(&list_trigger("kept"), "team-a", &catalog)
            .unwrap();
        cache
            .parse(&list_trigger("deleted"), "team-a", &catalog)
            .unwrap();
        for round in 0..3 {
            tokio::time::sleep(MINUTE).await;
            // A new trigger now and then starts the next generation.
            let new = format!("new-{round}");
            cache
                .parse(&list_trigger(&new), "team-a", &catalog)
                .unwrap();
            let again = cache
                .parse(&list_trigger("kept"), "team-a", &catalog)
                .unwrap();
            assert!(
                kept.query.same(&again.query),
                "round {round}: still the same parse"
            );
        }
        // Left: kept, new-2 (current) and new-1 (previous); `deleted` and new-0 are gone.
        assert_eq!(cache.len(), 3);
    }
}
