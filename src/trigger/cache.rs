//! Parsed triggers, remembered per distinct `scalerMetadata` map and namespace.
//!
//! KEDA sends the same metadata for a trigger on every poll and every HPA read, so a warm
//! GetMetrics would otherwise parse it, check it and hash its metric name again each time
//! (about 2 µs, a tenth of a request's CPU at full load). The cache keys a parsed trigger by a
//! 128-bit fingerprint of the map and the namespace: two keyed hashes with keys drawn at
//! start, combined so that the map's iteration order does not matter. Two distinct triggers
//! share a fingerprint with a probability of about n² / 2¹²⁹ (n distinct triggers), far
//! below any hardware error rate, and an outsider cannot aim for a collision without the
//! keys.
//!
//! Only successful parses are kept (a rejected trigger is parsed again, and its error is
//! built anew). The cache is bounded: when it holds `capacity` triggers it is emptied and
//! refills with the triggers still in use, at one parse each.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, RwLock},
};

use super::{Catalog, TriggerSpec, parse_trigger};
use crate::Result;

/// See the module documentation.
pub struct TriggerCache {
    keys: (RandomState, RandomState),
    parsed: RwLock<HashMap<u128, Arc<TriggerSpec>>>,
    capacity: usize,
}

impl TriggerCache {
    pub fn new(capacity: usize) -> TriggerCache {
        TriggerCache {
            keys: (RandomState::new(), RandomState::new()),
            parsed: RwLock::default(),
            capacity: capacity.max(1),
        }
    }

    /// [`parse_trigger`], remembered.
    pub fn parse(
        &self,
        metadata: &HashMap<String, String>,
        namespace: &str,
        catalog: &Catalog,
    ) -> Result<Arc<TriggerSpec>> {
        let fingerprint = self.fingerprint(metadata, namespace);
        if let Some(spec) = self.parsed.read().expect("lock poisoned").get(&fingerprint) {
            return Ok(spec.clone());
        }
        let spec = Arc::new(parse_trigger(metadata, namespace, catalog)?);
        let mut parsed = self.parsed.write().expect("lock poisoned");
        if parsed.len() >= self.capacity {
            parsed.clear();
        }
        parsed.insert(fingerprint, spec.clone());
        Ok(spec)
    }

    /// Triggers remembered now.
    pub fn len(&self) -> usize {
        self.parsed.read().map_or(0, |parsed| parsed.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Order-independent: each entry is hashed on its own and the hashes are added.
    fn fingerprint(&self, metadata: &HashMap<String, String>, namespace: &str) -> u128 {
        let one = |keys: &RandomState| {
            let mut sum = keys.hash_one((0u8, namespace));
            for entry in metadata {
                sum = sum.wrapping_add(keys.hash_one((1u8, entry)));
            }
            keys.hash_one((sum, metadata.len()))
        };
        (u128::from(one(&self.keys.0)) << 64) | u128::from(one(&self.keys.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::tests::{catalog, metadata};

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
        let (catalog, cache) = (catalog(), TriggerCache::new(10));
        let first = cache.parse(&list_trigger("a"), "team-a", &catalog).unwrap();
        // The same map built again iterates in another order: still the same trigger.
        let again = cache.parse(&list_trigger("a"), "team-a", &catalog).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            *first,
            parse_trigger(&list_trigger("a"), "team-a", &catalog).unwrap()
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn another_value_or_namespace_is_another_trigger() {
        let (catalog, cache) = (catalog(), TriggerCache::new(10));
        let a = cache.parse(&list_trigger("a"), "team-a", &catalog).unwrap();
        let b = cache.parse(&list_trigger("b"), "team-a", &catalog).unwrap();
        assert_ne!(a.query, b.query);
        // Keys and values swapped between entries must not collide either.
        let swapped = metadata(&[("x", "y"), ("y", "x")]);
        let straight = metadata(&[("x", "x"), ("y", "y")]);
        assert_ne!(
            cache.fingerprint(&swapped, "team-a"),
            cache.fingerprint(&straight, "team-a")
        );
        assert_ne!(
            cache.fingerprint(&list_trigger("a"), "team-a"),
            cache.fingerprint(&list_trigger("a"), "team-b")
        );
    }

    #[test]
    fn rejections_are_not_remembered_and_the_fence_still_holds() {
        let (catalog, cache) = (catalog(), TriggerCache::new(10));
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
    fn a_full_cache_starts_again_instead_of_growing() {
        let (catalog, cache) = (catalog(), TriggerCache::new(3));
        for key in ["a", "b", "c", "d", "e"] {
            cache.parse(&list_trigger(key), "team-a", &catalog).unwrap();
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 2, "emptied at the fourth, then d and e");
    }
}
