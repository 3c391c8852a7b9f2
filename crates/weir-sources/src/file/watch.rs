//! Watching the config directory: notify events, debounced into batches, each batch followed
//! by a rescan (off the async threads) and, if the store changed, a send.
//!
//! The directory itself may be replaced (removed and created again, or renamed over): after
//! each scan the watch is re-established when the directory's identity changed, and while
//! the directory is missing it is polled for.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use weir_store::Store;

use super::{check_dir, FileError, FileSource, LoadReport, SourceError};

/// A constant stream of events still gets applied after this many debounce periods.
const MAX_DELAY_FACTOR: u32 = 10;
/// How often a missing config directory is looked for.
const MISSING_DIR_POLL: Duration = Duration::from_millis(500);

type Events = mpsc::UnboundedReceiver<notify::Result<Event>>;

pub(super) async fn run(
    source: FileSource,
    debounce: Duration,
    tx: watch::Sender<Arc<Store>>,
) -> Result<(), FileError> {
    let dir = source.dir.clone();
    check_dir(&dir)?;
    // Event paths are absolute.
    let absolute = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut root = DirId::of(&dir);
    let mut watcher = Some(start_watcher(&dir, events_tx.clone())?);

    let (mut source, report) = rescan(source).await?;
    let mut errors = log_errors(report.errors, &[]);
    if tx.send(report.store).is_err() {
        return Ok(());
    }
    loop {
        // Wait for a reason to rescan.
        let root_touched = tokio::select! {
            () = tx.closed() => return Ok(()),
            received = next_relevant(&mut events, &absolute) => {
                let touched = received.ok_or_else(|| FileError::WatcherGone { dir: dir.clone() })?;
                debounced(&mut events, &absolute, debounce).await || touched
            }
            () = tokio::time::sleep(MISSING_DIR_POLL), if watcher.is_none() => {
                if DirId::of(&dir).is_none() {
                    continue;
                }
                true
            }
        };
        let (scanned, mut report) = rescan(source).await?;
        source = scanned;
        // Re-watch a directory that was replaced or has come back, then rescan once more for
        // what changed before the new watch began.
        // (The identity alone can miss a replacement when the inode number is reused.)
        let now = DirId::of(&dir);
        if root_touched || now != root || watcher.is_none() {
            watcher = None;
            root = now;
            if root.is_some() {
                match start_watcher(&dir, events_tx.clone()) {
                    Ok(new) => {
                        tracing::info!(dir = %dir.display(), "watching the config directory again");
                        watcher = Some(new);
                        let changed = report.changed;
                        (source, report) = rescan(source).await?;
                        report.changed |= changed;
                    }
                    Err(err) => tracing::warn!(error = %err, "retrying shortly"),
                }
            }
        }
        errors = log_errors(report.errors, &errors);
        if report.changed {
            tracing::info!(
                objects = report.store.len(),
                rejected = report.store.rejected.len(),
                "config directory changed"
            );
            if tx.send(report.store).is_err() {
                return Ok(());
            }
        }
    }
}

fn start_watcher(
    dir: &Path,
    events: mpsc::UnboundedSender<notify::Result<Event>>,
) -> Result<RecommendedWatcher, FileError> {
    let failed = |source| FileError::Watch {
        dir: dir.to_owned(),
        source,
    };
    let mut watcher = notify::recommended_watcher(move |event| {
        // The receiver is gone only when the watch loop has ended.
        let _ = events.send(event);
    })
    .map_err(failed)?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .map_err(failed)?;
    Ok(watcher)
}

/// Waits for the next event that may mean a change: whether it concerns the watched
/// directory itself (removed or renamed: the watch must be renewed); `None` when the
/// watcher is gone.
async fn next_relevant(events: &mut Events, root: &Path) -> Option<bool> {
    loop {
        if let Some(touched) = relevant(&events.recv().await?, root) {
            return Some(touched);
        }
    }
}

/// Wait until no relevant event has arrived for `debounce`, or for at most
/// `MAX_DELAY_FACTOR × debounce` in all; whether any event concerned the directory itself.
async fn debounced(events: &mut Events, root: &Path, debounce: Duration) -> bool {
    let deadline = Instant::now() + debounce * MAX_DELAY_FACTOR;
    let mut touched = false;
    loop {
        let quiet = (Instant::now() + debounce).min(deadline);
        match tokio::time::timeout_at(quiet, next_relevant(events, root)).await {
            Ok(Some(root_event)) => {
                touched |= root_event;
                if Instant::now() >= deadline {
                    return touched;
                }
            }
            // Quiet, capped, or the watcher is gone (noticed by the next wait).
            _ => return touched,
        }
    }
}

/// `None` for events that change nothing: opening and reading files (ours included).
/// Otherwise whether the event is about `root` itself. A watcher error may mean lost events,
/// so it counts as a change.
fn relevant(event: &notify::Result<Event>, root: &Path) -> Option<bool> {
    match event {
        Ok(event) => match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(false),
            EventKind::Access(_) => None,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => {
                Some(event.paths.iter().any(|path| path == root))
            }
            _ => Some(event.need_rescan()),
        },
        Err(err) => {
            tracing::warn!(error = %err, "file watcher error; rescanning the config directory");
            Some(false)
        }
    }
}

async fn rescan(mut source: FileSource) -> Result<(FileSource, LoadReport), FileError> {
    let dir = source.dir.clone();
    tokio::task::spawn_blocking(move || {
        let report = source.scan();
        (source, report)
    })
    .await
    .map_err(|source| FileError::ScanPanicked { dir, source })
}

/// Log the errors not logged before (and when all are gone); returns them for next time.
fn log_errors(errors: Vec<SourceError>, before: &[SourceError]) -> Vec<SourceError> {
    for error in errors.iter().filter(|e| !before.contains(e)) {
        tracing::warn!("{error}");
    }
    if errors.is_empty() && !before.is_empty() {
        tracing::info!("the config directory has no more problems");
    }
    errors
}

/// Which directory is at the config path, so that a replaced one is noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirId(u64, u64);

impl DirId {
    fn of(dir: &Path) -> Option<Self> {
        let meta = std::fs::metadata(dir).ok().filter(|m| m.is_dir())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(Self(meta.dev(), meta.ino()))
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            Some(Self(0, 0))
        }
    }
}
