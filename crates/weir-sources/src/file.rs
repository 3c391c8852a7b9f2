//! The file source: every `*.yaml` / `*.yml` under a directory (recursive, multi-document),
//! read the way an API server would accept it.
//!
//! - Hidden files and directories (name starting with `.`) and non-YAML files are ignored, so
//!   editors' temporary files and Kubernetes ConfigMap mounts (`..data`) do no harm; symbolic
//!   links to files are followed.
//! - Each object gets the CRD defaults ([`defaults`]), `metadata.namespace` `default` when it
//!   is namespaced and has none, and an identity ([`identity`]): `metadata.uid` and
//!   `metadata.creationTimestamp` set once and kept while the object exists in some file, and
//!   `metadata.generation` (Gateway API kinds and EndpointSlice) starting at 1 and bumped
//!   when the spec changes.
//! - A document that is broken keeps the last good version of its object serving, with a
//!   [`Rejection`](weir_store::Rejection) in the store; a file that is not YAML at all keeps
//!   every object last read from it.
//! - The first definition of a (kind, key) by path order wins; later ones are reported.
//!
//! [`FileSource::scan`] re-reads only files whose metadata changed, so rescanning a large,
//! mostly unchanged tree costs a `stat` per file. [`FileSource::watch`] rescans after each
//! debounced batch of filesystem events.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_store::{Kind, Location, ObjectKey, Store};

mod assemble;
mod bounded;
mod defaults;
mod identity;
mod parse;
mod walk;
mod watch;

#[cfg(test)]
mod tests;

use identity::Identities;
use parse::Doc;

/// Why the file source cannot run at all. Problems with single files or objects are not
/// errors of this kind: they are [`SourceError`]s in a [`LoadReport`] and the source keeps
/// going.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("config directory {} does not exist; create it or pass an existing directory", dir.display())]
    DirNotFound { dir: PathBuf },
    #[error("{} is not a directory; pass the directory that holds the YAML manifests", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("cannot read config directory {}: {source}; check its permissions", dir.display())]
    Dir { dir: PathBuf, source: io::Error },
    #[error(
        "cannot watch {} for changes: {source}; check permissions and the inotify limits \
         (sysctl fs.inotify.max_user_watches / max_user_instances)",
        dir.display()
    )]
    Watch { dir: PathBuf, source: notify::Error },
    #[error("the file watcher for {} stopped delivering events; restart weir", dir.display())]
    WatcherGone { dir: PathBuf },
    #[error("rescanning {} panicked: {source}; this is a bug in weir, please report it", dir.display())]
    ScanPanicked {
        dir: PathBuf,
        source: tokio::task::JoinError,
    },
}

/// A problem with one file or object, at the place a user has to look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceError {
    /// The file and line (the line of the error if known, else the line the document starts).
    pub location: Location,
    pub message: String,
    /// The object concerned, when the document could be identified.
    pub object: Option<(Kind, ObjectKey)>,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl std::error::Error for SourceError {}

/// The outcome of one scan.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Everything currently served (the same `Arc` as before when nothing changed).
    pub store: Arc<Store>,
    /// Every problem the directory has now, in path order. Stable across scans while the
    /// files do not change.
    pub errors: Vec<SourceError>,
    /// Whether `store` differs from the previous scan's (always true for the first scan).
    pub changed: bool,
    /// Whether the store was patched (files rewritten, defining the same objects) rather
    /// than assembled again from every file.
    pub patched: bool,
}

/// Reads a directory of manifests into a [`Store`], remembering enough between scans to act
/// like an API server: identities, generations and last good versions.
pub struct FileSource {
    dir: PathBuf,
    now: Box<dyn Fn() -> Time + Send>,
    /// Per file (ordered by path: the first definition of an object wins) its last read.
    files: BTreeMap<PathBuf, CachedFile>,
    identities: Identities,
    store: Arc<Store>,
    /// Problems of listing the directory, as of the last scan.
    listing_errors: Vec<SourceError>,
    /// Every problem, as of the last assembly.
    errors: Vec<SourceError>,
    scanned: bool,
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSource")
            .field("dir", &self.dir)
            .field("files", &self.files.len())
            .field("objects", &self.store.len())
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// A source for `dir`. `now` supplies `metadata.creationTimestamp` for new objects (a
    /// clock passed in, so tests are deterministic). Nothing is read until [`Self::scan`] or
    /// [`Self::watch`].
    pub fn new(dir: impl Into<PathBuf>, now: Box<dyn Fn() -> Time + Send>) -> Self {
        Self {
            dir: dir.into(),
            now,
            files: BTreeMap::new(),
            identities: Identities::default(),
            store: Arc::new(Store::default()),
            listing_errors: Vec::new(),
            errors: Vec::new(),
            scanned: false,
        }
    }

    /// The directory this source reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rescan the directory: re-read only files whose metadata (or, for recently modified
    /// files, content) changed, drop vanished files, and return the resulting store with the
    /// directory's current errors. `changed` is false when the store equals the previous
    /// scan's; the caller can then skip rebuilding.
    pub fn scan(&mut self) -> LoadReport {
        let listing = walk::list(&self.dir);
        let mut dirty = !self.scanned || listing.errors != self.listing_errors;
        // Files whose content changed, with what they held before, while the set of files
        // stays the same: the store may then be patched (see `assemble::patch`).
        let mut rewritten: Option<Vec<(PathBuf, Vec<Doc>)>> = (!dirty).then(Vec::new);
        let mut previous = std::mem::take(&mut self.files);
        let mut next = BTreeMap::new();
        for path in listing.files {
            let cached = previous.remove(&path);
            let had = cached.is_some();
            match refresh(&path, cached) {
                Refresh::Unchanged(file) => {
                    next.insert(path, file);
                }
                Refresh::Changed(file, before) => {
                    dirty = true;
                    match (before, rewritten.as_mut()) {
                        (Some(docs), Some(list)) => list.push((path.clone(), docs)),
                        _ => rewritten = None,
                    }
                    next.insert(path, file);
                }
                Refresh::Gone => {
                    dirty |= had;
                    rewritten = None;
                }
            }
        }
        // Files that were not listed are gone, unless they sit in a directory that could not
        // be read this time: keep those as they were rather than drop their objects.
        for (path, file) in previous {
            if listing.unreadable.iter().any(|dir| path.starts_with(dir)) {
                next.insert(path, file);
            } else {
                dirty = true;
                rewritten = None;
            }
        }
        self.files = next;

        let patched = match rewritten {
            Some(list) if dirty => assemble::patch(
                &self.store,
                &self.errors,
                &mut self.files,
                list,
                &mut self.identities,
                &self.now,
            ),
            _ => None,
        };
        let was_patched = patched.is_some();
        let changed = if let Some((store, changed)) = patched {
            #[cfg(test)]
            self.check_patch(&store, &listing.errors);
            if changed {
                self.store = Arc::new(store);
            }
            changed
        } else if dirty {
            let (store, errors) = assemble::assemble(
                &mut self.files,
                &mut self.identities,
                &self.now,
                &listing.errors,
            );
            self.errors = errors;
            let changed = !self.scanned || !assemble::store_eq(&store, &self.store);
            if changed {
                self.store = Arc::new(store);
            }
            changed
        } else {
            false
        };
        self.scanned = true;
        self.listing_errors = listing.errors;
        LoadReport {
            store: self.store.clone(),
            errors: self.errors.clone(),
            changed,
            patched: was_patched,
        }
    }

    /// A patched store must be what assembling every file gives.
    #[cfg(test)]
    fn check_patch(&mut self, patched: &Store, listing_errors: &[SourceError]) {
        let (full, errors) = assemble::assemble(
            &mut self.files,
            &mut self.identities,
            &self.now,
            listing_errors,
        );
        assert!(
            assemble::store_eq(patched, &full),
            "patched store differs from the assembled one:\n{patched:#?}\n{full:#?}"
        );
        assert_eq!(errors, self.errors, "patched scan's errors differ");
    }

    /// Watch the directory and send a new store after each debounced batch of filesystem
    /// events that changed it. Sends the first scan at once; logs each scan's new errors;
    /// runs until every receiver is dropped.
    pub async fn watch(
        self,
        debounce: Duration,
        tx: tokio::sync::watch::Sender<Arc<Store>>,
    ) -> Result<(), FileError> {
        watch::run(self, debounce, tx).await
    }
}

/// One-shot read for `weir check`: the same parsing, defaults and checks as [`FileSource`],
/// with `now` as every object's creation time. A missing directory is an error in the report.
pub fn load_dir(dir: &Path, now: Time) -> LoadReport {
    FileSource::new(dir, Box::new(move || now.clone())).scan()
}

/// Whether `dir` exists and is a directory.
fn check_dir(dir: &Path) -> Result<(), FileError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(FileError::NotADirectory {
            dir: dir.to_owned(),
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(FileError::DirNotFound {
            dir: dir.to_owned(),
        }),
        Err(source) => Err(FileError::Dir {
            dir: dir.to_owned(),
            source,
        }),
    }
}

/// A file older than this (by mtime, relative to when it was read) cannot change without its
/// mtime changing, even on filesystems with coarse timestamps. Younger files are re-hashed on
/// every scan ("racily clean", as git calls it).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What identifies a file's content version without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    mtime: Option<SystemTime>,
    len: u64,
    /// Inode and ctime: a file renamed into place is a new inode even when mtime and length
    /// match.
    #[cfg(unix)]
    ino: u64,
    #[cfg(unix)]
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            mtime: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            ino: meta.ino(),
            #[cfg(unix)]
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The last read of one file.
#[derive(Debug)]
struct CachedFile {
    /// `None` when the file could not be read.
    stamp: Option<FileStamp>,
    read_at: SystemTime,
    /// Hash of the content last read (good or not).
    hash: u64,
    /// The documents of the last version that parsed.
    docs: Vec<Doc>,
    /// Why the current content is not what `docs` holds (not YAML, unreadable).
    error: Option<SourceError>,
}

impl CachedFile {
    /// Whether the file may have changed since it was read without its stamp changing.
    fn racy(&self) -> bool {
        match self.stamp.and_then(|s| s.mtime) {
            Some(mtime) => mtime + RACY_WINDOW >= self.read_at,
            None => true,
        }
    }
}

enum Refresh {
    Unchanged(CachedFile),
    /// With the documents the file held before, when it held only good ones and still
    /// parses.
    Changed(CachedFile, Option<Vec<Doc>>),
    Gone,
}

/// Whether documents define objects (served, or rejected with a last good version).
fn holds_objects(docs: &[Doc]) -> bool {
    docs.iter().any(|doc| !matches!(doc, Doc::Invalid(_)))
}

/// Bring one file's cache entry up to date, reading it only when it may have changed.
fn refresh(path: &Path, cached: Option<CachedFile>) -> Refresh {
    let failed = |cached: Option<CachedFile>, err: io::Error| {
        let error = SourceError {
            location: Location {
                file: path.to_owned(),
                line: 0,
            },
            message: format!(
                "cannot read the file: {err}; the objects last read from it keep serving"
            ),
            object: None,
        };
        match cached {
            Some(mut file) if file.error.as_ref() == Some(&error) => {
                file.stamp = None;
                Refresh::Unchanged(file)
            }
            cached => Refresh::Changed(
                CachedFile {
                    stamp: None,
                    read_at: SystemTime::now(),
                    hash: 0,
                    docs: cached.map(|c| c.docs).unwrap_or_default(),
                    error: Some(error),
                },
                None,
            ),
        }
    };
    let stamp = match fs::metadata(path) {
        Ok(meta) => FileStamp::of(&meta),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Refresh::Gone,
        Err(err) => return failed(cached, err),
    };
    let cached = match cached {
        Some(file) if file.stamp == Some(stamp) && !file.racy() => return Refresh::Unchanged(file),
        cached => cached,
    };
    let read_at = SystemTime::now();
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Refresh::Gone,
        Err(err) => return failed(cached, err),
    };
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    let hash = hasher.finish();
    let (previous_docs, previous_ok) = match cached {
        Some(mut file) if file.stamp.is_some() && file.hash == hash => {
            file.stamp = Some(stamp);
            file.read_at = read_at;
            return Refresh::Unchanged(file);
        }
        Some(file) => (file.docs, file.error.is_none()),
        None => (Vec::new(), false),
    };
    let mut before = None;
    let (docs, error) = match String::from_utf8(bytes) {
        Ok(text) => match parse::parse_file(path, &text) {
            // A file that held objects and now holds no document at all is far more likely
            // caught in the middle of a rewrite (truncated, not yet written), or emptied by
            // mistake, than meant to delete them: that is what deleting the file is for.
            Ok(docs) if docs.is_empty() && parse::is_blank(&text) && holds_objects(&previous_docs) => {
                let error = SourceError {
                    location: Location {
                        file: path.to_owned(),
                        line: 0,
                    },
                    message: "the file is empty; the objects last read from it keep serving \
                              (to delete them, delete the file)"
                        .to_string(),
                    object: None,
                };
                (previous_docs, Some(error))
            }
            Ok(docs) => {
                before = previous_ok.then_some(previous_docs);
                (docs, None)
            }
            Err(err) => (previous_docs, Some(err)),
        },
        Err(err) => (
            previous_docs,
            Some(SourceError {
                location: Location {
                    file: path.to_owned(),
                    line: 0,
                },
                message: format!(
                    "not UTF-8 text ({err}); save it as UTF-8 (the objects last read from it keep serving)"
                ),
                object: None,
            }),
        ),
    };
    Refresh::Changed(
        CachedFile {
            stamp: Some(stamp),
            read_at,
            hash,
            docs,
            error,
        },
        before,
    )
}
