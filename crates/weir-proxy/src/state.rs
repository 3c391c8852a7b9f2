//! Runtime policy state: what a policy owns while the proxy runs (a connection counter, a
//! per-socket server or TLS configuration built from it; later token buckets, breaker and
//! health state, key caches). It lives beside the snapshot, not in it, in a
//! [`StateRegistry`] keyed by a stable identity of the policy (its `id`, a hash of its
//! name, spec and target, plus where it applies), so it survives snapshot swaps that keep
//! the policy, and is dropped by [`StateRegistry::retain`] once a swap removed the policy.
//!
//! Lookups happen where a policy is first needed (a connection's accept, not each request);
//! holders keep an `Arc` to the state, so a connection counted against a state that a
//! swap dropped still gives its count back to that state when it closes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

/// A hasher for keys Weir makes itself (policy ids, which are already hashes, socket keys,
/// endpoint addresses from the snapshot: never client input): FxHash's multiply-rotate, a
/// few instructions where std's SipHash spent about 600 per lookup on a policy route's
/// request (bench/results/2026-12-07-policies-2.md).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by identities Weir makes (see [`IdHasher`]).
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// State of type `V` per policy identity `K`.
pub(crate) struct StateRegistry<K, V> {
    entries: Mutex<IdMap<K, Arc<V>>>,
}

impl<K: Eq + Hash + Clone, V> Default for StateRegistry<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(IdMap::default()),
        }
    }
}

impl<K: Eq + Hash + Clone, V> StateRegistry<K, V> {
    /// The state for `key`, made by `make` if there is none yet. `make` runs under the
    /// registry's lock (keep it short; it may fail, and then nothing is stored).
    pub(crate) fn get_or_try_insert<E>(
        &self,
        key: &K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = entries.get(key) {
            return Ok(state.clone());
        }
        let state = Arc::new(make()?);
        entries.insert(key.clone(), state.clone());
        Ok(state)
    }

    /// Keep only the states whose key `live` accepts (called after a snapshot swap with the
    /// keys the new snapshot still has).
    pub(crate) fn retain(&self, mut live: impl FnMut(&K) -> bool) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| live(k));
    }

    /// Every state with its key, at this moment (metrics at scrape time).
    pub(crate) fn entries(&self) -> Vec<(K, Arc<V>)> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn the_id_hasher_spreads_ids_and_tuples() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<IdHasher>::default();
        // One map holds one key type: distinct keys of a type must hash apart.
        let (mut ids, mut pairs) = (
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
        );
        for i in 0u64..1000 {
            assert!(
                ids.insert(b.hash_one(i.wrapping_mul(0x9e37_79b9))),
                "u64 {i}"
            );
            assert!(pairs.insert(b.hash_one((i, 7u64))), "pair {i}");
            assert!(pairs.insert(b.hash_one((7u64, i + 1000))), "pair' {i}");
        }
        let a: std::net::SocketAddr = "10.0.0.1:80".parse().unwrap();
        let c: std::net::SocketAddr = "10.0.0.1:81".parse().unwrap();
        assert_ne!(b.hash_one(a), b.hash_one(c));
    }

    #[test]
    fn state_survives_lookups_and_is_dropped_when_gone() {
        let registry: StateRegistry<u64, AtomicU32> = StateRegistry::default();
        let a = registry
            .get_or_try_insert(&1, || Ok::<_, Infallible>(AtomicU32::new(0)))
            .unwrap();
        a.fetch_add(1, Ordering::Relaxed);
        let again = registry
            .get_or_try_insert(&1, || Ok::<_, Infallible>(AtomicU32::new(0)))
            .unwrap();
        assert_eq!(again.load(Ordering::Relaxed), 1);
        assert!(registry
            .get_or_try_insert(&2, || Err::<AtomicU32, _>("no"))
            .is_err());
        assert_eq!(registry.len(), 1);
        registry.retain(|k| *k != 1);
        assert_eq!(registry.len(), 0);
        // A holder keeps its state after the registry dropped it.
        assert_eq!(a.load(Ordering::Relaxed), 1);
    }
}
