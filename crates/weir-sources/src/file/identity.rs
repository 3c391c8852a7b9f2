//! The identity an API server gives an object: `metadata.uid` and
//! `metadata.creationTimestamp` once, at creation, and `metadata.generation` counting spec
//! changes. Kept per (kind, key) for as long as some file defines the object, also across
//! moves between files and while a newer version is rejected.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_store::{Kind, Object, ObjectKey};

use super::parse::ObjectDoc;

type Id = (Kind, ObjectKey);

#[derive(Debug, Default)]
pub(super) struct Identities {
    objects: HashMap<Id, Identity>,
    /// Randomly keyed per process: uids differ between runs, as they would between clusters.
    seed: RandomState,
    minted: u64,
}

#[derive(Debug)]
struct Identity {
    uid: String,
    created: Time,
    generation: i64,
    basis: Option<u64>,
    /// The object as served. Its document holds the same `Arc` (see [`Identities::stamp`]),
    /// so an unchanged document costs nothing to stamp again and is kept in memory once.
    served: Object,
}

impl Identities {
    /// The document's object as served: with its uid, creation time and generation. The
    /// document's object is replaced by the served one, so that the parsed and the served
    /// version are one allocation (the identity fields are all that differ, and the served
    /// ones are what every later stamp sets again).
    pub(super) fn stamp(&mut self, doc: &mut ObjectDoc, now: &dyn Fn() -> Time) -> Object {
        let id = (doc.kind, doc.key.clone());
        let Some(identity) = self.objects.get_mut(&id) else {
            let uid = self.mint_uid(&id);
            let created = now();
            let served = stamped(doc, &uid, &created, 1);
            let identity = Identity {
                uid,
                created,
                generation: 1,
                basis: doc.generation_basis,
                served: served.clone(),
            };
            self.objects.insert(id, identity);
            return served;
        };
        if identity.served.same_allocation(&doc.object) {
            return identity.served.clone();
        }
        if identity.basis != doc.generation_basis {
            identity.generation += 1;
            identity.basis = doc.generation_basis;
        }
        let served = stamped(doc, &identity.uid, &identity.created, identity.generation);
        identity.served = served.clone();
        served
    }

    /// The version of an object served last, if it still has an identity.
    pub(super) fn last_served(&self, kind: Kind, key: &ObjectKey) -> Option<Object> {
        self.objects
            .get(&(kind, key.clone()))
            .map(|identity| identity.served.clone())
    }

    /// How many objects have an identity.
    pub(super) fn len(&self) -> usize {
        self.objects.len()
    }

    /// Forget every object for which `keep` is false (it is in no file any more).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(Kind, &ObjectKey) -> bool) {
        self.objects.retain(|(kind, key), _| keep(*kind, key));
    }

    /// A random-looking version 4 UUID, unique within this process.
    fn mint_uid(&mut self, id: &Id) -> String {
        self.minted += 1;
        let half = |salt: u8| self.seed.hash_one((id, self.minted, salt));
        let (high, low) = (half(1), half(2));
        let bits = (u128::from(high) << 64) | u128::from(low);
        // Version 4, variant RFC 4122.
        let bits = (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            bits >> 96,
            (bits >> 80) & 0xffff,
            (bits >> 64) & 0xffff,
            (bits >> 48) & 0xffff,
            bits & 0xffff_ffff_ffff
        )
    }
}

/// Replace the document's object by a copy with the identity metadata set (the generation
/// only for kinds that track one); returns the object as served.
fn stamped(doc: &mut ObjectDoc, uid: &str, created: &Time, generation: i64) -> Object {
    let generation = doc.generation_basis.map(|_| generation);
    doc.object.with_meta(|meta| {
        meta.uid = Some(uid.to_owned());
        meta.creation_timestamp = Some(created.clone());
        meta.generation = generation;
    });
    doc.object.clone()
}
