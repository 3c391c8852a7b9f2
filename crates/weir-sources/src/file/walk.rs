//! Listing the manifest files under the config directory.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use weir_store::Location;

use super::{check_dir, SourceError};

/// The YAML files found, in no particular order.
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub files: Vec<PathBuf>,
    /// Directories that exist but could not be read: files cached under them are kept.
    pub unreadable: Vec<PathBuf>,
    pub errors: Vec<SourceError>,
}

/// Every non-hidden `*.yaml` / `*.yml` file under `root`, recursively, following symbolic
/// links (a directory reached twice is read once).
pub(super) fn list(root: &Path) -> Listing {
    let mut listing = Listing::default();
    if let Err(err) = check_dir(root) {
        listing.unreadable.push(root.to_owned());
        listing.errors.push(SourceError {
            location: Location {
                file: root.to_owned(),
                line: 0,
            },
            message: format!("{err} (the objects read before keep serving)"),
            object: None,
        });
        return listing;
    }
    let mut visited = HashSet::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        // Symbolic links can form cycles; canonical paths break them.
        if let Ok(canonical) = fs::canonicalize(&dir) {
            if !visited.insert(canonical) {
                continue;
            }
        }
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed while we were looking: its files are gone.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => {
                unreadable(&mut listing, dir, err);
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    unreadable(&mut listing, dir.clone(), err);
                    continue;
                }
            };
            let name = entry.file_name();
            if is_hidden(&name) {
                continue;
            }
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            // Follow symbolic links to see what they point at; dangling ones are skipped.
            let is_dir = if file_type.is_symlink() {
                match fs::metadata(&path) {
                    Ok(meta) if meta.is_dir() => true,
                    Ok(meta) if meta.is_file() => false,
                    _ => continue,
                }
            } else {
                file_type.is_dir()
            };
            if is_dir {
                pending.push(path);
            } else if is_yaml(&name) {
                listing.files.push(path);
            }
        }
    }
    listing
}

fn unreadable(listing: &mut Listing, dir: PathBuf, err: io::Error) {
    listing.errors.push(SourceError {
        location: Location {
            file: dir.clone(),
            line: 0,
        },
        message: format!(
            "cannot read directory: {err}; fix its permissions (the objects read from it before keep serving)"
        ),
        object: None,
    });
    listing.unreadable.push(dir);
}

/// Hidden files and directories: editors' and tools' temporary files, ConfigMap mount
/// internals (`..data`), version control.
fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

/// Whether the file at `path` has a name the scan reads (its directories aside).
pub(super) fn is_yaml_path(path: &Path) -> bool {
    path.file_name().is_some_and(is_yaml)
}

fn is_yaml(name: &OsStr) -> bool {
    Path::new(name)
        .extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml"))
}
