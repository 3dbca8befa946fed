//! Which live measurements read which key, and which keys are armed on the event connection.
//!
//! The engine tells the source when a measurement becomes live and when it expires
//! ([`crate::sources::Source::live`]), so the index holds exactly the live measurements and
//! is never fed by the reads themselves. It is sized for 100,000 measurements: one 24-byte
//! slot per (key, measurement) pair, with no copy of the key. A slot holds a 63-bit keyed
//! hash of the key and the measurement; the key itself is the measurement's to give. Two
//! keys that share a hash (about n² / 2⁶⁴ for n keys) cost no more than a spurious re-read
//! or a key left to the periodic refresh: never a wrong value.

use std::{
    collections::HashSet,
    hash::{BuildHasher, RandomState},
};

use hashbrown::HashTable;

use super::super::RedisQuery;
use crate::sources::Query;

/// See the module documentation.
pub(super) struct KeyIndex {
    slots: HashTable<Slot>,
    hasher: RandomState,
    /// Measurements that brought a key not indexed before, while a session follows the
    /// source: the watcher arms their keys.
    fresh: Vec<Query>,
    /// A session of event connections is up (new keys are to be armed).
    following: bool,
}

/// One (key, measurement) pair.
struct Slot {
    /// The key's hash in the upper 63 bits; the lowest bit says whether the key is armed
    /// (the same in every slot of the key).
    tagged: u64,
    query: Query,
}

impl Slot {
    fn hash(&self) -> u64 {
        self.tagged & !ARMED
    }

    fn armed(&self) -> bool {
        self.tagged & ARMED != 0
    }

    fn set_armed(&mut self, armed: bool) {
        self.tagged = if armed {
            self.tagged | ARMED
        } else {
            self.hash()
        };
    }
}

const ARMED: u64 = 1;

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            slots: HashTable::new(),
            hasher: RandomState::new(),
            fresh: Vec::new(),
            following: false,
        }
    }
}

impl KeyIndex {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key) & !ARMED
    }

    /// Indexes a measurement that became live. True when it brought a key to arm.
    pub fn add(&mut self, query: &Query, typed: &RedisQuery) -> bool {
        let mut fresh = false;
        for key in keys_of(typed) {
            let hash = self.hash(&key);
            let mut known = false;
            let mut armed = false;
            for slot in self.slots.iter_hash(hash) {
                if slot.hash() == hash {
                    known = true;
                    armed = slot.armed();
                    if slot.query == *query {
                        return fresh;
                    }
                }
            }
            let mut slot = Slot {
                tagged: hash,
                query: query.clone(),
            };
            slot.set_armed(armed);
            self.slots.insert_unique(hash, slot, Slot::hash);
            fresh |= !known;
        }
        if fresh && self.following {
            self.fresh.push(query.clone());
        }
        fresh && self.following
    }

    /// Forgets a measurement that expired.
    pub fn remove(&mut self, query: &Query, typed: &RedisQuery) {
        for key in keys_of(typed) {
            let hash = self.hash(&key);
            if let Ok(slot) = self
                .slots
                .find_entry(hash, |slot| slot.hash() == hash && slot.query == *query)
            {
                slot.remove();
            }
        }
        // A table that held a storm's measurements gives its room back once most expired.
        if self.slots.capacity() > 1024 && self.slots.len() < self.slots.capacity() / 8 {
            self.slots.shrink_to_fit(Slot::hash);
        }
    }

    /// A session starts following the source: every key is unarmed, and all are returned to
    /// be armed; keys new from now on are collected for [`KeyIndex::take_fresh`].
    pub fn start(&mut self) -> Vec<String> {
        self.following = true;
        self.fresh.clear();
        self.disarm_all();
        self.keys(|_| true)
    }

    /// The session ended: nothing is armed any more, nothing is collected.
    pub fn stop(&mut self) {
        self.following = false;
        self.fresh.clear();
        self.disarm_all();
    }

    /// The keys that measurements added since the last call brought, not armed yet.
    pub fn take_fresh(&mut self) -> Vec<String> {
        let fresh = std::mem::take(&mut self.fresh);
        let mut keys: Vec<String> = Vec::new();
        for query in &fresh {
            if let Some(typed) = query.downcast::<RedisQuery>() {
                keys.extend(keys_of(typed));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys.retain(|key| !self.is_armed(key));
        keys
    }

    /// Every indexed key that is not armed.
    pub fn unarmed(&self) -> Vec<String> {
        self.keys(|slot| !slot.armed())
    }

    /// The distinct keys of the slots `wanted` picks.
    fn keys(&self, wanted: impl Fn(&Slot) -> bool) -> Vec<String> {
        let mut hashes: HashSet<u64> = HashSet::new();
        let mut keys = Vec::new();
        for slot in self.slots.iter().filter(|slot| wanted(slot)) {
            if !hashes.insert(slot.hash()) {
                continue;
            }
            let Some(typed) = slot.query.downcast::<RedisQuery>() else {
                continue;
            };
            keys.extend(
                keys_of(typed)
                    .into_iter()
                    .filter(|key| self.hash(key) == slot.hash()),
            );
        }
        keys
    }

    fn is_armed(&self, key: &str) -> bool {
        let hash = self.hash(key);
        self.slots
            .find(hash, |slot| slot.hash() == hash)
            .is_some_and(Slot::armed)
    }

    /// Marks keys armed (the server now reports their next change) or not (it reported it).
    pub fn set_armed<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>, armed: bool) {
        for key in keys {
            let hash = self.hash(key);
            for slot in self.slots.iter_hash_mut(hash) {
                if slot.hash() == hash {
                    slot.set_armed(armed);
                }
            }
        }
    }

    pub fn disarm_all(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.set_armed(false);
        }
    }

    /// The measurements that read any of `keys`, each once.
    pub fn readers<'a>(&self, keys: impl IntoIterator<Item = &'a String>) -> Vec<Query> {
        let mut found: Vec<Query> = Vec::new();
        for key in keys {
            let hash = self.hash(key);
            found.extend(
                self.slots
                    .iter_hash(hash)
                    .filter(|slot| slot.hash() == hash)
                    .map(|slot| slot.query.clone()),
            );
        }
        dedup(found)
    }

    /// Every indexed measurement, each once.
    pub fn all_readers(&self) -> Vec<Query> {
        dedup(self.slots.iter().map(|slot| slot.query.clone()).collect())
    }

    /// (key, measurement) pairs indexed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }
}

fn dedup(queries: Vec<Query>) -> Vec<Query> {
    let mut seen: HashSet<&Query> = HashSet::with_capacity(queries.len());
    let keep: Vec<bool> = queries.iter().map(|query| seen.insert(query)).collect();
    drop(seen);
    queries
        .into_iter()
        .zip(keep)
        .filter_map(|(query, keep)| keep.then_some(query))
        .collect()
}

/// The keys a measurement's first round reads, each once.
pub(super) fn keys_of(query: &RedisQuery) -> Vec<String> {
    let mut keys: Vec<String> = query
        .reads(0)
        .iter()
        .map(|read| read.key().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(keys: &[&str]) -> (Query, RedisQuery) {
        let query = RedisQuery::List {
            keys: keys
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .into(),
        };
        (Query::new(query.clone()), query)
    }

    fn sorted(mut queries: Vec<Query>) -> Vec<String> {
        let mut names: Vec<String> = queries.drain(..).map(|q| format!("{q:?}")).collect();
        names.sort();
        names
    }

    #[test]
    fn keys_map_to_the_live_measurements_that_read_them() {
        let mut index = KeyIndex::default();
        let (ab, ab_typed) = list(&["a", "b"]);
        let (b, b_typed) = list(&["b"]);
        index.add(&ab, &ab_typed);
        index.add(&b, &b_typed);
        index.add(&b, &b_typed);
        assert_eq!(index.len(), 3, "a pair per key and measurement, once");
        let readers = |index: &KeyIndex, keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            sorted(index.readers(&keys))
        };
        assert_eq!(readers(&index, &["a"]), sorted(vec![ab.clone()]));
        assert_eq!(
            readers(&index, &["a", "b"]),
            sorted(vec![ab.clone(), b.clone()])
        );
        assert!(readers(&index, &["c"]).is_empty());
        index.remove(&ab, &ab_typed);
        assert!(
            readers(&index, &["a"]).is_empty(),
            "forgotten when it expired"
        );
        assert_eq!(readers(&index, &["b"]), sorted(vec![b.clone()]));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn new_keys_are_armed_once_while_a_session_follows() {
        let mut index = KeyIndex::default();
        let (a, a_typed) = list(&["a"]);
        assert!(!index.add(&a, &a_typed), "no session: nothing to arm yet");
        assert!(index.take_fresh().is_empty());
        assert_eq!(index.start(), ["a"], "a session arms every key");
        index.set_armed(["a"], true);
        let (ab, ab_typed) = list(&["a", "b"]);
        assert!(index.add(&ab, &ab_typed), "`b` is new");
        assert_eq!(index.take_fresh(), ["b"], "`a` is armed already");
        index.set_armed(["b"], true);
        assert!(index.unarmed().is_empty());
        index.set_armed(["a"], false);
        assert_eq!(index.unarmed(), ["a"], "both of a's slots disarmed");
        index.set_armed(["a"], true);
        let (a2, a2_typed) = list(&["a", "c"]);
        index.add(&a2, &a2_typed);
        assert_eq!(index.take_fresh(), ["c"]);
        index.stop();
        assert_eq!(
            index.unarmed().len(),
            3,
            "nothing is armed without a session"
        );
    }

    #[test]
    fn every_reader_once() {
        let mut index = KeyIndex::default();
        let (ab, ab_typed) = list(&["a", "b"]);
        index.add(&ab, &ab_typed);
        assert_eq!(index.all_readers().len(), 1);
        let keys = ["a".to_string(), "b".to_string()];
        assert_eq!(index.readers(&keys).len(), 1);
    }
}
