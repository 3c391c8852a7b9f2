//! Watching the config directory: notify events, debounced into batches, each batch followed
//! by a rescan (off the async threads) and, if the store changed, a send.
//!
//! Debouncing has a leading and a trailing edge ([`Debouncer`]): the first change after a
//! quiet period is applied at once, as soon as the events show it is complete (a file closed
//! after writing, renamed into place, or removed), so a single edit costs no waiting; events
//! that follow within `--debounce` are a burst and are coalesced into one rescan when the
//! burst has been quiet for `--debounce` (or after `MAX_DELAY_FACTOR` times that at most).
//! Neither edge reads a manifest whose content is being written in place (`> file`, `cp`,
//! an editor saving in place) before the writer closes it: the batch waits for the close,
//! however long the writer pauses, up to `OPEN_WRITE_CAP` (then the file is read as it is
//! and a warning logged). Should a file still be read empty, the scan keeps its objects
//! (see `refresh` in the parent module).
//!
//! A deletion is not a leading edge: it is applied once deletions have been quiet for
//! `--debounce` (however long they go on, up to `OPEN_WRITE_CAP`), so deleting the whole
//! directory (`rm -r`) is seen as one change: the directory is missing, and a missing
//! directory keeps the last good set serving (logged) until it is back. No scan sees the
//! directory half deleted, which would serve a part of the set.
//!
//! The directory itself may be replaced (removed and created again, or renamed over): after
//! each scan the watch is re-established when the directory's identity changed, and while
//! the directory is missing it is polled for.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use weir_store::Store;

use super::{check_dir, FileError, FileSource, LoadReport, SourceError};

/// A constant stream of events still gets applied after this many debounce periods.
const MAX_DELAY_FACTOR: u32 = 10;
/// How long a batch waits, at most, for manifest files still open for writing to be closed
/// (see [`Batch::open`]): a slow in-place rewrite (`helm template > file`) is read whole,
/// and a writer that never closes its file delays changes by this much at worst.
const OPEN_WRITE_CAP: Duration = Duration::from_secs(10);
/// Whether the watcher reports files closed after writing (inotify does); elsewhere a quiet
/// period is the only sign that a write is over.
const CLOSE_EVENTS: bool = cfg!(any(target_os = "linux", target_os = "android"));
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
    let mut debouncer = Debouncer::new(debounce);
    loop {
        // Wait for a reason to rescan.
        let root_touched = tokio::select! {
            () = tx.closed() => return Ok(()),
            received = next_relevant(&mut events, &absolute) => {
                let first = received.ok_or_else(|| FileError::WatcherGone { dir: dir.clone() })?;
                debouncer.batch(first, &mut events, &absolute).await
            }
            () = tokio::time::sleep(MISSING_DIR_POLL), if watcher.is_none() => {
                if DirId::of(&dir).is_none() {
                    continue;
                }
                true
            }
        };
        let scan_started = Instant::now();
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
                scan_us = scan_started.elapsed().as_micros() as u64,
                patched = report.patched,
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

/// What one relevant event says about the change it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Relevant {
    /// The event concerns the watched directory itself (removed or renamed: the watch must
    /// be renewed).
    root: bool,
    progress: Progress,
}

/// Whether an event shows a change still being made or one that is complete.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Progress {
    /// A file is being written (created, data modified): more is to come, until it is
    /// closed or renamed. `data`: its content was written (not only created), and it is a
    /// file the scan reads (visible, `*.yaml` / `*.yml`).
    Writing { path: PathBuf, data: bool },
    /// The write of this file is over, without that making anything visible by itself (a
    /// hidden temporary file closed before it is renamed into place).
    Closed(PathBuf),
    /// A change is complete: a visible file closed after writing, anything renamed or
    /// removed, metadata changed. For a rename, the path it came from.
    Done(Option<PathBuf>),
    /// A visible file or directory was deleted: complete, but maybe one of many that
    /// belong together (the whole directory deleted), so only a quiet period ends it.
    Removed(PathBuf),
    /// A change has begun that later events complete (a directory was created: its files
    /// follow).
    Started,
    /// Nothing is known about the change (a watcher error, an unclassified event): only a
    /// quiet period shows that it is over.
    Unknown,
}

/// Waits for the next relevant event; `None` when the watcher is gone.
async fn next_relevant(events: &mut Events, root: &Path) -> Option<Relevant> {
    loop {
        if let Some(relevant) = relevant(&events.recv().await?, root) {
            return Some(relevant);
        }
    }
}

/// Turns events into batches, each followed by one rescan: a leading edge (the first change
/// after a quiet period is rescanned as soon as it is complete) and a trailing edge (the
/// events of a burst are coalesced until the burst has been quiet for `debounce`, or for
/// `MAX_DELAY_FACTOR × debounce` in all).
struct Debouncer {
    debounce: Duration,
    /// When the last relevant event was seen (none yet: the start was quiet).
    last_event: Option<Instant>,
}

/// What a batch has seen so far.
#[derive(Default)]
struct Batch {
    /// Files written and not yet closed, renamed or removed.
    writing: HashSet<PathBuf>,
    /// Of those, manifest files whose content was written: a scan now would read them
    /// half-written (an in-place rewrite truncates first), so the trailing edge waits for
    /// them to be closed, up to [`OPEN_WRITE_CAP`]. (Created-only files are not held: a
    /// symbolic link or hard link is created without ever being closed.)
    open: HashSet<PathBuf>,
    /// Some change of the batch is complete.
    done: bool,
    /// A visible file or directory was deleted.
    removed: bool,
    /// Some event told nothing about its change's progress.
    unknown: bool,
    root_touched: bool,
}

impl Batch {
    fn add(&mut self, event: Relevant) {
        self.root_touched |= event.root;
        match event.progress {
            Progress::Writing { path, data } => {
                if data && CLOSE_EVENTS {
                    self.open.insert(path.clone());
                }
                self.writing.insert(path);
            }
            Progress::Closed(path) => {
                self.open.remove(&path);
                self.writing.remove(&path);
            }
            Progress::Done(path) => {
                if let Some(path) = path {
                    self.open.remove(&path);
                    self.writing.remove(&path);
                }
                self.done = true;
            }
            Progress::Removed(path) => {
                self.open.remove(&path);
                self.writing.remove(&path);
                self.done = true;
                self.removed = true;
            }
            Progress::Started => {}
            Progress::Unknown => self.unknown = true,
        }
    }

    /// Whether every change the batch has seen is complete, so a rescan now sees whole files.
    fn complete(&self) -> bool {
        self.done && self.writing.is_empty() && !self.unknown && !self.removed
    }
}

impl Debouncer {
    fn new(debounce: Duration) -> Self {
        Self {
            debounce,
            last_event: None,
        }
    }

    /// Collect the batch that begins with `first` (just received) and return when it should
    /// be rescanned; whether any of its events concerned the directory itself.
    async fn batch(&mut self, first: Relevant, events: &mut Events, root: &Path) -> bool {
        let started = Instant::now();
        // Leading edge: nothing happened for a debounce period before this event.
        let leading = self
            .last_event
            .is_none_or(|last| started.duration_since(last) >= self.debounce);
        let burst_deadline = started + self.debounce * MAX_DELAY_FACTOR;
        // Files open for writing, and deletions, are waited for longer, but not forever.
        let open_deadline = started + OPEN_WRITE_CAP.max(self.debounce * MAX_DELAY_FACTOR);
        let mut batch = Batch::default();
        batch.add(first);
        self.last_event = Some(started);
        loop {
            // What has already happened belongs to this batch (a rename's From, To and
            // Both events come together): take it without waiting.
            // (Empty, or the watcher is gone: noticed by the next wait.)
            while let Ok(event) = events.try_recv() {
                if let Some(relevant) = relevant(&event, root) {
                    batch.add(relevant);
                    self.last_event = Some(Instant::now());
                }
            }
            if leading && batch.complete() {
                return batch.root_touched;
            }
            // A deletion may be one of many (`rm -r` of the whole directory): it is applied
            // once deleting has stopped, up to the longer cap, so a scan never sees half of
            // it (see the module docs).
            let deadline = if batch.removed {
                open_deadline
            } else {
                burst_deadline
            };
            let now = Instant::now();
            // While a manifest is open for writing, only its close (or the cap) ends the
            // batch; otherwise a quiet period or the cap does.
            let holding = !batch.open.is_empty() && now < open_deadline;
            let wake = if holding {
                open_deadline
            } else {
                (now + self.debounce).min(deadline)
            };
            match tokio::time::timeout_at(wake, next_relevant(events, root)).await {
                Ok(Some(event)) => {
                    batch.add(event);
                    let now = Instant::now();
                    self.last_event = Some(now);
                    if now >= open_deadline || (now >= deadline && batch.open.is_empty()) {
                        batch.warn_open();
                        return batch.root_touched;
                    }
                }
                // Quiet, capped, or the watcher is gone (noticed by the next wait).
                _ => {
                    if holding && Instant::now() < open_deadline {
                        continue;
                    }
                    batch.warn_open();
                    return batch.root_touched;
                }
            }
        }
    }
}

impl Batch {
    /// Say so when files are read while still open for writing (the cap was reached).
    fn warn_open(&self) {
        for path in &self.open {
            tracing::warn!(
                file = %path.display(),
                waited_s = OPEN_WRITE_CAP.as_secs(),
                "a manifest is still open for writing; reading it as it is now"
            );
        }
    }
}

/// `None` for events that change nothing: opening and reading files (ours included).
/// Otherwise what the event says about its change (see [`Progress`]). A watcher error may
/// mean lost events, so it counts as a change.
fn relevant(event: &notify::Result<Event>, root: &Path) -> Option<Relevant> {
    let event = match event {
        Ok(event) => event,
        Err(err) => {
            tracing::warn!(error = %err, "file watcher error; rescanning the config directory");
            return Some(Relevant {
                root: false,
                progress: Progress::Unknown,
            });
        }
    };
    let first = || event.paths.first().cloned();
    let (root_event, progress) = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
            let Some(path) = first() else {
                return Some(Relevant {
                    root: false,
                    progress: Progress::Unknown,
                });
            };
            // A hidden file is never read: closing one (a temporary file about to be renamed
            // into place) completes nothing yet.
            let progress = if hidden_below(&path, root) {
                Progress::Closed(path)
            } else {
                Progress::Done(Some(path))
            };
            (false, progress)
        }
        EventKind::Access(_) => return None,
        EventKind::Remove(_) => {
            let progress = match first() {
                Some(path) if !hidden_below(&path, root) => Progress::Removed(path),
                // (A ConfigMap mount's old hidden directory, removed after the swap.)
                path => Progress::Done(path),
            };
            (event.paths.iter().any(|path| path == root), progress)
        }
        EventKind::Modify(ModifyKind::Name(_)) => (
            event.paths.iter().any(|path| path == root),
            Progress::Done(first()),
        ),
        EventKind::Modify(ModifyKind::Metadata(_)) => (event.need_rescan(), Progress::Done(None)),
        // A new directory: its files follow (and a ConfigMap mount's hidden directory is
        // made visible by a rename).
        EventKind::Create(CreateKind::Folder) => (false, Progress::Started),
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) => match first() {
            Some(path) => {
                // Only the content of a file the scan reads can be seen half-written.
                let data = matches!(event.kind, EventKind::Modify(ModifyKind::Data(_)))
                    && !hidden_below(&path, root)
                    && super::walk::is_yaml_path(&path);
                (event.need_rescan(), Progress::Writing { path, data })
            }
            None => (event.need_rescan(), Progress::Unknown),
        },
        _ => (event.need_rescan(), Progress::Unknown),
    };
    Some(Relevant {
        root: root_event,
        progress,
    })
}

/// Whether `path` lies under `root` with a hidden component (name starting with `.`), as
/// the scan ignores such files.
fn hidden_below(path: &Path, root: &Path) -> bool {
    path.strip_prefix(root).unwrap_or(path).components().any(|c| {
        matches!(c, std::path::Component::Normal(name) if name.as_encoded_bytes().starts_with(b"."))
    })
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

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

    use super::*;

    const DEBOUNCE: Duration = Duration::from_millis(50);

    fn root() -> PathBuf {
        PathBuf::from("/config")
    }

    fn event(kind: EventKind, paths: &[&str]) -> notify::Result<Event> {
        let mut event = Event::new(kind);
        for path in paths {
            event = event.add_path(root().join(path));
        }
        Ok(event)
    }

    fn close_write(path: &str) -> notify::Result<Event> {
        event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &[path],
        )
    }

    fn modify(path: &str) -> notify::Result<Event> {
        event(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &[path],
        )
    }

    /// The events of `tmp` written and renamed to `to`, as inotify reports them.
    fn write_and_rename(tmp: &str, to: &str) -> Vec<notify::Result<Event>> {
        vec![
            event(EventKind::Create(CreateKind::File), &[tmp]),
            modify(tmp),
            close_write(tmp),
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &[tmp],
            ),
            event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &[to]),
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &[tmp, to],
            ),
        ]
    }

    /// Feed `events` (each after its delay from the previous one) to a channel, as the
    /// watcher thread would.
    fn feed(events: Vec<(Duration, notify::Result<Event>)>) -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for (delay, event) in events {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if tx.send(event).is_err() {
                    return;
                }
            }
            // Keep the channel open, as a live watcher does.
            std::future::pending::<()>().await;
        });
        rx
    }

    fn at_once(events: Vec<notify::Result<Event>>) -> Vec<(Duration, notify::Result<Event>)> {
        events.into_iter().map(|e| (Duration::ZERO, e)).collect()
    }

    /// Wait for the next batch as the watch loop does: first event, then the debouncer.
    /// Returns when the batch is due, relative to when waiting began.
    async fn next_batch(debouncer: &mut Debouncer, events: &mut Events) -> Duration {
        let began = Instant::now();
        let first = next_relevant(events, &root()).await.expect("an event");
        debouncer.batch(first, events, &root()).await;
        began.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_renamed_into_place_after_a_quiet_period_is_read_at_once() {
        let mut events = feed(at_once(write_and_rename(".live.yaml.tmp", "live.yaml")));
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(
            next_batch(&mut debouncer, &mut events).await,
            Duration::ZERO
        );
        // The rename's To and Both events were part of the batch, not the start of another.
        assert!(events.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_written_in_place_is_read_when_it_is_closed() {
        let ms = Duration::from_millis;
        let mut events = feed(vec![
            (ms(0), modify("live.yaml")),
            (ms(3), modify("live.yaml")),
            (ms(2), close_write("live.yaml")),
        ]);
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(next_batch(&mut debouncer, &mut events).await, ms(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hidden_temporary_file_closed_is_not_yet_a_change() {
        let ms = Duration::from_millis;
        let mut events = feed(vec![
            (
                ms(0),
                event(EventKind::Create(CreateKind::File), &[".x.tmp"]),
            ),
            (ms(1), close_write(".x.tmp")),
            (
                ms(4),
                event(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &[".x.tmp", "x.yaml"],
                ),
            ),
        ]);
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(next_batch(&mut debouncer, &mut events).await, ms(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_after_the_leading_edge_is_coalesced_until_quiet() {
        let ms = Duration::from_millis;
        let mut feed_events = vec![(ms(0), close_write("a.yaml"))];
        // Nine more changes, 10 ms apart: one burst.
        for _ in 0..9 {
            feed_events.push((ms(10), close_write("b.yaml")));
        }
        let mut events = feed(feed_events);
        let mut debouncer = Debouncer::new(DEBOUNCE);
        // The first change is read at once.
        assert_eq!(next_batch(&mut debouncer, &mut events).await, ms(0));
        // The other nine become one batch, due one debounce after the last of them.
        assert_eq!(
            next_batch(&mut debouncer, &mut events).await,
            ms(90) + DEBOUNCE
        );
        assert!(events.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_after_a_quiet_period_is_a_leading_edge_again() {
        let ms = Duration::from_millis;
        let mut events = feed(vec![
            (ms(0), close_write("a.yaml")),
            (DEBOUNCE + ms(1), close_write("b.yaml")),
        ]);
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(next_batch(&mut debouncer, &mut events).await, ms(0));
        assert_eq!(
            next_batch(&mut debouncer, &mut events).await,
            DEBOUNCE + ms(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_only_created_waits_for_a_quiet_period() {
        // (A symbolic link is created and never closed.)
        let mut events = feed(at_once(vec![event(
            EventKind::Create(CreateKind::File),
            &["a.yaml"],
        )]));
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(next_batch(&mut debouncer, &mut events).await, DEBOUNCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_rewrite_in_place_is_read_when_it_is_closed() {
        let ms = Duration::from_millis;
        // `> routes.yaml`: truncated, half written, a pause far longer than the debounce
        // (and than the cap of a burst), the rest, closed.
        let mut events = feed(vec![
            (ms(0), modify("routes.yaml")),
            (ms(1), modify("routes.yaml")),
            (ms(2_000), modify("routes.yaml")),
            (ms(3), close_write("routes.yaml")),
        ]);
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(next_batch(&mut debouncer, &mut events).await, ms(2_004));
        assert!(events.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_rewrite_within_a_burst_is_read_when_it_is_closed() {
        let ms = Duration::from_millis;
        let mut events = feed(vec![
            (ms(0), close_write("a.yaml")),
            (ms(10), modify("routes.yaml")),
            (ms(1_000), modify("routes.yaml")),
            (ms(5), close_write("routes.yaml")),
        ]);
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(next_batch(&mut debouncer, &mut events).await, ms(0));
        // Held past the cap of a burst (10 × debounce) until the close, then read at once.
        assert_eq!(next_batch(&mut debouncer, &mut events).await, ms(1_015));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deletion_is_applied_once_deleting_has_stopped() {
        let ms = Duration::from_millis;
        let remove = |path| event(EventKind::Remove(RemoveKind::File), &[path]);
        let mut events = feed(vec![(ms(0), remove("a.yaml")), (ms(5), remove("b.yaml"))]);
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(
            next_batch(&mut debouncer, &mut events).await,
            ms(5) + DEBOUNCE
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_deletion_of_the_directory_is_one_batch() {
        let ms = Duration::from_millis;
        // `rm -r` on a slow disk: a file every 20 ms for 2 s (four times the burst cap),
        // then the directory itself.
        let mut stream: Vec<_> = (0..100)
            .map(|i| {
                let path = format!("f{i}.yaml");
                (ms(20), event(EventKind::Remove(RemoveKind::File), &[&path]))
            })
            .collect();
        stream.push((
            ms(20),
            Ok(Event::new(EventKind::Remove(RemoveKind::Folder)).add_path(root())),
        ));
        let mut events = feed(stream);
        let mut debouncer = Debouncer::new(DEBOUNCE);
        let began = Instant::now();
        let first = next_relevant(&mut events, &root()).await.expect("an event");
        assert!(debouncer.batch(first, &mut events, &root()).await);
        assert_eq!(began.elapsed(), ms(20 * 101) + DEBOUNCE);
    }

    #[tokio::test(start_paused = true)]
    async fn removing_hidden_files_is_complete_at_once() {
        // A ConfigMap mount swapped: `..data` renamed, the old hidden directory removed.
        let mut events = feed(at_once(vec![
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                &["..data"],
            ),
            event(
                EventKind::Remove(RemoveKind::File),
                &["..2026_12_06/a.yaml"],
            ),
        ]));
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(
            next_batch(&mut debouncer, &mut events).await,
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_manifest_never_closed_is_read_after_the_open_write_cap() {
        let mut events = feed(at_once(vec![modify("a.yaml")]));
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(
            next_batch(&mut debouncer, &mut events).await,
            OPEN_WRITE_CAP
        );
    }

    #[tokio::test(start_paused = true)]
    async fn files_the_scan_does_not_read_are_not_waited_for() {
        // An editor's swap file, open for the whole session, and a log file.
        let mut events = feed(at_once(vec![modify(".a.yaml.swp"), modify("notes.txt")]));
        let mut debouncer = Debouncer::new(DEBOUNCE);
        assert_eq!(next_batch(&mut debouncer, &mut events).await, DEBOUNCE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_stream_of_events_is_applied_after_the_cap() {
        let ms = Duration::from_millis;
        // A change every 20 ms, for longer than the cap.
        let stream: Vec<_> = (0..100).map(|_| (ms(20), close_write("a.yaml"))).collect();
        let mut events = feed(stream);
        let mut debouncer = Debouncer::new(DEBOUNCE);
        // The first one is a leading edge.
        assert_eq!(next_batch(&mut debouncer, &mut events).await, ms(20));
        let due = next_batch(&mut debouncer, &mut events).await;
        // The burst ends at the first event at or after the cap (10 × debounce after the
        // batch began).
        let cap = DEBOUNCE * MAX_DELAY_FACTOR;
        assert!(due >= cap && due <= ms(40) + cap, "due after {due:?}");
    }

    #[test]
    fn events_are_classified_by_what_they_complete() {
        let r = root();
        let progress = |e: notify::Result<Event>| relevant(&e, &r).map(|r| r.progress);
        assert_eq!(
            progress(close_write("a.yaml")),
            Some(Progress::Done(Some(r.join("a.yaml"))))
        );
        assert_eq!(
            progress(close_write("sub/.a.yaml.swp")),
            Some(Progress::Closed(r.join("sub/.a.yaml.swp")))
        );
        assert_eq!(
            progress(modify("a.yaml")),
            Some(Progress::Writing {
                path: r.join("a.yaml"),
                data: true
            })
        );
        assert_eq!(
            progress(modify("sub/.a.yaml.swp")),
            Some(Progress::Writing {
                path: r.join("sub/.a.yaml.swp"),
                data: false
            })
        );
        assert_eq!(
            progress(event(EventKind::Create(CreateKind::File), &["a.yml"])),
            Some(Progress::Writing {
                path: r.join("a.yml"),
                data: false
            })
        );
        assert_eq!(
            progress(event(
                EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any)),
                &["a.yaml"]
            )),
            None
        );
        assert_eq!(
            progress(Err(notify::Error::generic("lost events"))),
            Some(Progress::Unknown)
        );
        // The directory itself renamed away: the watch must be renewed.
        let gone = Event::new(EventKind::Remove(RemoveKind::Folder)).add_path(r.clone());
        assert_eq!(
            relevant(&Ok(gone), &r),
            Some(Relevant {
                root: true,
                progress: Progress::Removed(r.clone())
            })
        );
    }
}
