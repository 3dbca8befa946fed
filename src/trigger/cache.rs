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
//! built anew). Deleted ScaledObjects must not stay forever, so triggers live in two
//! generations, as measurements live for `idle_expiry`: every `idle_expiry` (or when the
//! current generation holds half of `capacity`) the current generation becomes the previous
//! one and the previous one is dropped; a trigger found in the previous generation moves back
//! to the current one. A trigger nobody asks for is gone after at most two periods, and at
//! most `capacity` are remembered.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::time::Instant;

use super::{Catalog, TriggerSpec, parse_trigger};
use crate::Result;

type Parsed = HashMap<u128, Arc<TriggerSpec>>;

/// See the module documentation.
pub struct TriggerCache {
    keys: (RandomState, RandomState),
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
        TriggerCache {
            keys: (RandomState::new(), RandomState::new()),
            generations: RwLock::new(Generations {
                current: Parsed::new(),
                previous: Parsed::new(),
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
    ) -> Result<Arc<TriggerSpec>> {
        let fingerprint = self.fingerprint(metadata, namespace);
        let found = {
            let generations = self.generations.read().expect("lock poisoned");
            if let Some(spec) = generations.current.get(&fingerprint) {
                return Ok(spec.clone());
            }
            generations.previous.get(&fingerprint).cloned()
        };
        let spec = match found {
            Some(spec) => spec,
            None => Arc::new(parse_trigger(metadata, namespace, catalog)?),
        };
        self.remember(fingerprint, spec.clone());
        Ok(spec)
    }

    /// Puts a trigger in the current generation, starting a new one first when it is due.
    fn remember(&self, fingerprint: u128, spec: Arc<TriggerSpec>) {
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

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

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
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            *first,
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
                Arc::ptr_eq(&kept, &again),
                "round {round}: still the same parse"
            );
        }
        // Left: kept, new-2 (current) and new-1 (previous); `deleted` and new-0 are gone.
        assert_eq!(cache.len(), 3);
    }
}
