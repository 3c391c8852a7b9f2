//! From the cached documents of every file to one [`Store`]: first definition by path order
//! wins, rejected documents fall back to the last served version, identities are stamped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_store::{Kind, Location, ObjectKey, Rejection, Store};

use super::identity::Identities;
use super::parse::Doc;
use super::{CachedFile, SourceError};

/// Build the store and the list of problems from the files, in path order, after the
/// problems of listing them (`listing_errors`).
///
/// Problems that concern one object are in `store.rejected`; the others (files that do not
/// parse or cannot be read, documents that are not objects, duplicates) in `store.errors`.
pub(super) fn assemble(
    files: &mut BTreeMap<PathBuf, CachedFile>,
    identities: &mut Identities,
    now: &dyn Fn() -> Time,
    listing_errors: &[SourceError],
) -> (Store, Vec<SourceError>) {
    let mut store = Store::default();
    let mut errors = Vec::new();
    for error in listing_errors {
        unowned(&mut store, &mut errors, error.clone());
    }
    // Where each object was first defined: `store.locations` for those served, and here the
    // rejected ones without a last good version (not served, so not located in the store).
    let mut unserved: HashMap<(Kind, ObjectKey), Location> = HashMap::new();
    for file in files.values_mut() {
        if let Some(error) = &file.error {
            unowned(&mut store, &mut errors, error.clone());
        }
        for doc in &mut file.docs {
            let (kind, key, location) = match &*doc {
                Doc::Object(object) => (object.kind, &object.key, &object.location),
                Doc::Rejected {
                    kind,
                    key,
                    location,
                    ..
                } => (*kind, key, location),
                Doc::Invalid(error) => {
                    // Problems of a version that has since been replaced by one that does
                    // not parse are no longer worth reporting.
                    if file.error.is_none() {
                        unowned(&mut store, &mut errors, error.clone());
                    }
                    continue;
                }
            };
            let id = (kind, key.clone());
            if let Some(first) = store.locations.get(&id).or_else(|| unserved.get(&id)) {
                let error = SourceError {
                    location: location.clone(),
                    message: format!(
                        "{kind} {key} is already defined at {first}; the first definition (by \
                         path order) is used and this one ignored: remove or rename one of them"
                    ),
                    object: Some(id),
                };
                unowned(&mut store, &mut errors, error);
                continue;
            }
            match doc {
                Doc::Object(object) => {
                    store.apply(identities.stamp(object, now));
                    if let Some(error) = &file.error {
                        // The file's current version does not parse: this object is from
                        // its last good version.
                        store.rejected.insert(
                            id.clone(),
                            Rejection {
                                location: error.location.clone(),
                                message: error.message.clone(),
                            },
                        );
                    }
                    // (The key moves in: this runs for every object on every rescan.)
                    Arc::make_mut(&mut store.locations).insert(id, object.location.clone());
                }
                Doc::Rejected {
                    location, message, ..
                } => {
                    let message = match identities.last_served(kind, &id.1) {
                        Some(last) => {
                            store.apply(last);
                            Arc::make_mut(&mut store.locations)
                                .insert(id.clone(), location.clone());
                            format!("{message}; fix it (its last good version keeps serving)")
                        }
                        None => {
                            unserved.insert(id.clone(), location.clone());
                            format!("{message}; fix it (it is not served until then)")
                        }
                    };
                    store.rejected.insert(
                        id.clone(),
                        Rejection {
                            location: location.clone(),
                            message: message.clone(),
                        },
                    );
                    errors.push(SourceError {
                        location: location.clone(),
                        message,
                        object: Some(id),
                    });
                }
                Doc::Invalid(_) => {}
            }
        }
    }
    // Every served object has an identity, so when there are as many identities as served
    // objects none is left over (the common case, checked without a lookup per object).
    if identities.len() != store.locations.len() {
        identities.retain(|kind, key| store.locations.contains_key(&(kind, key.clone())));
    }
    (store, errors)
}

/// The store after files were rewritten without changing which objects they define:
/// `previous` with those files' objects replaced, and whether that differs from it. `None`
/// when [`assemble`] must rebuild instead, because some rewritten file (before or now) has
/// a problem, or defines other objects, or in another order, or one that is a duplicate,
/// rejected, or served from elsewhere. When `Some`, the result and `errors` are what
/// [`assemble`] would give, at the cost of a copy of the store's maps instead of stamping
/// and inserting every object again.
pub(super) fn patch(
    previous: &Store,
    errors: &[SourceError],
    files: &mut BTreeMap<PathBuf, CachedFile>,
    rewritten: Vec<(PathBuf, Vec<Doc>)>,
    identities: &mut Identities,
    now: &dyn Fn() -> Time,
) -> Option<(Store, bool)> {
    let same_objects = |path: &PathBuf, before: &[Doc]| {
        let file = files.get(path)?;
        fn ids(doc: &Doc) -> Option<(Kind, &ObjectKey)> {
            match doc {
                Doc::Object(o) => Some((o.kind, &o.key)),
                _ => None,
            }
        }
        let ok = file.error.is_none()
            && file.docs.len() == before.len()
            && file.docs.iter().zip(before).all(|(now, was)| {
                let Some(id) = ids(now) else {
                    return false;
                };
                ids(was) == Some(id) && {
                    let id = (id.0, id.1.clone());
                    previous.locations.get(&id).is_some_and(|l| l.file == *path)
                        && !previous.rejected.contains_key(&id)
                        && !errors.iter().any(|e| e.object.as_ref() == Some(&id))
                }
            });
        ok.then_some(())
    };
    for (path, before) in &rewritten {
        same_objects(path, before)?;
    }
    let mut store = previous.clone();
    let mut changed = false;
    for (path, _) in &rewritten {
        let Some(file) = files.get_mut(path) else {
            continue;
        };
        for doc in &mut file.docs {
            let Doc::Object(object) = doc else {
                continue;
            };
            let served = identities.stamp(object, now);
            let id = (object.kind, object.key.clone());
            let same = store
                .get(object.kind, &object.key)
                .is_some_and(|old| old.same_allocation(&served));
            if !same {
                changed = true;
                store.apply(served);
            }
            if store.locations.get(&id) != Some(&object.location) {
                changed = true;
                Arc::make_mut(&mut store.locations).insert(id, object.location.clone());
            }
        }
    }
    Some((store, changed))
}

/// Record a problem no single object owns.
fn unowned(store: &mut Store, errors: &mut Vec<SourceError>, error: SourceError) {
    store.errors.push(Rejection {
        location: error.location.clone(),
        message: error.message.clone(),
    });
    errors.push(error);
}

/// Whether two stores hold the same objects, rejections, locations and errors.
pub(super) fn store_eq(a: &Store, b: &Store) -> bool {
    a.same_objects(b)
        && a.rejected == b.rejected
        && a.locations == b.locations
        && a.errors == b.errors
}
