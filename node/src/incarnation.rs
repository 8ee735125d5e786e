//! The node's incarnation: a number that grows on every start, so that a restarted node's
//! observations supersede the ones it signed before (peers order observations by
//! `(incarnation, seq)` and ignore anything not newer).
//!
//! It is persisted next to the key file (`<key>.incarnation`, mode 0600) as
//! `max(stored + 1, now)` and written before the node starts. `now` is the Unix time in
//! **microseconds**: the fallback when the file cannot be written is the bare clock, and using
//! the same unit in both cases means a run that fell back never leaves a larger number behind
//! than the next persisted one (with seconds on one path and microseconds on the other, a node
//! that once fell back would be ignored by its peers after every later restart).
//!
//! Invariants: the stored value is below [`MAX_STORED`] (`u64::MAX / 2`): a larger one (no clock
//! gives it; a liar or a corrupt disk does) would pin every later start at `u64::MAX`, so it is
//! repaired (warned about, restarted from the clock), and so is a file that does not hold a
//! number or is not safe to read (a link, another user's); `next = max(stored + 1, now)` never
//! overflows. While the node runs, a peer can tell it that it once ran with a higher
//! incarnation (restored without this file, or with a clock behind): membership then raises it,
//! and [`persist_changes`] stores every new value here, so the next start is above it too.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use spdu_keys::private_file::{OpenError, open_private};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The largest incarnation kept from the file; anything from here on is repaired.
pub const MAX_STORED: u64 = u64::MAX / 2;

/// The file that holds the incarnation of the node whose key is at `key`.
pub fn incarnation_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".incarnation");
    PathBuf::from(name)
}

/// The current Unix time in microseconds.
pub fn unix_micros() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

/// Picks this start's incarnation for the node whose key file is `key` and persists it.
/// Falls back to the clock, with a warning, if the file cannot be read or written.
pub fn next_incarnation(key: &Path) -> u64 {
    let path = incarnation_path(key);
    let now = unix_micros();
    match advance(&path, now) {
        Ok(incarnation) => incarnation,
        Err(e) => {
            tracing::warn!(
                "cannot persist the incarnation ({e:#}); using the clock ({now}): if the clock \
                 is behind, the peers' replies raise it once the node runs"
            );
            now
        }
    }
}

/// Reads `path` (absent, corrupt, unsafe or out-of-range counts as 0, with a warning), stores
/// `max(stored + 1, now)` there and returns it.
pub fn advance(path: &Path, now: u64) -> anyhow::Result<u64> {
    let stored = read(path)?;
    let next = stored.saturating_add(1).max(now.min(MAX_STORED));
    store(path, next)?;
    Ok(next)
}

/// The stored incarnation, repaired to 0 (with a warning) when it cannot be trusted.
fn read(path: &Path) -> anyhow::Result<u64> {
    let mut file = match open_private(path) {
        Ok(file) => file,
        Err(OpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(OpenError::Io(e)) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        Err(OpenError::Unsafe(e)) => {
            tracing::warn!("{}: {e}; replacing it with a fresh file", path.display());
            return Ok(0);
        }
    };
    // A number has at most 20 digits: whatever else the file holds is not read.
    let mut text = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::Read::take(&mut file, 64), &mut text) {
        tracing::warn!("{}: {e}; rewriting it from the clock", path.display());
        return Ok(0);
    }
    match text.trim().parse::<u64>() {
        Ok(value) if value >= MAX_STORED => {
            tracing::warn!(
                "{}: stored incarnation {value} is beyond {MAX_STORED} (no clock gives that); \
                 restarting from the clock",
                path.display()
            );
            Ok(0)
        }
        Ok(value) => Ok(value),
        Err(_) => {
            tracing::warn!(
                "{}: not an incarnation number ({:?}); rewriting it from the clock",
                path.display(),
                crate::text::escape(text.trim())
            );
            Ok(0)
        }
    }
}

/// Stores `incarnation` in `path` (atomically, mode 0600).
pub fn store(path: &Path, incarnation: u64) -> anyhow::Result<()> {
    write_atomically(path, &format!("{incarnation}\n"))
}

/// Stores every incarnation above `stored` that membership announces on `changes` next to the
/// key at `key`, until `shutdown` or until the sender goes away. A failed write is logged and
/// retried with the next change.
pub async fn persist_changes(
    mut changes: watch::Receiver<u64>,
    key: PathBuf,
    mut stored: u64,
    shutdown: CancellationToken,
) {
    let path = incarnation_path(&key);
    changes.mark_changed();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let incarnation = *changes.borrow_and_update();
        if incarnation <= stored {
            continue;
        }
        let (write_path, value) = (path.clone(), incarnation.min(MAX_STORED - 1));
        match tokio::task::spawn_blocking(move || store(&write_path, value)).await {
            Ok(Ok(())) => {
                tracing::info!(incarnation, "incarnation raised (a peer held a newer one); stored");
                stored = incarnation;
            }
            Ok(Err(e)) => tracing::warn!("cannot store the new incarnation {incarnation}: {e:#}"),
            Err(e) => tracing::warn!("storing the incarnation failed: {e}"),
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let result = (|| {
        let _ = fs::remove_file(&temporary);
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increases_even_when_the_clock_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = incarnation_path(&dir.path().join("node.key"));
        assert!(path.ends_with("node.key.incarnation"));
        let first = advance(&path, 1_000).unwrap();
        assert_eq!(first, 1_000);
        let second = advance(&path, 1_000).unwrap();
        let third = advance(&path, 5).unwrap();
        assert!(first < second && second < third, "{first} {second} {third}");
        assert_eq!(advance(&path, 9_000).unwrap(), 9_000);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn next_incarnation_persists_and_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.key");
        let a = next_incarnation(&key);
        let b = next_incarnation(&key);
        assert!(a < b);
        let unwritable = dir.path().join("missing-dir").join("node.key");
        let c = next_incarnation(&unwritable);
        assert!(c > 0);
    }

    #[test]
    fn corrupt_huge_and_unsafe_files_are_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.incarnation");
        fs::write(&path, "garbage").unwrap();
        assert_eq!(advance(&path, 1_000).unwrap(), 1_000);
        assert_eq!(fs::read_to_string(&path).unwrap(), "1000\n");

        for huge in [u64::MAX, MAX_STORED] {
            store(&path, huge).unwrap();
            assert_eq!(advance(&path, 2_000).unwrap(), 2_000, "{huge} repaired");
            assert_eq!(advance(&path, 2_000).unwrap(), 2_001, "and counting again from there");
        }
        store(&path, MAX_STORED - 1).unwrap();
        assert_eq!(advance(&path, 5).unwrap(), MAX_STORED, "the largest kept value still grows");
        assert_eq!(advance(&path, 5).unwrap(), 5, "and is repaired on the next start");

        // A link is never followed, nor written through.
        let target = dir.path().join("elsewhere");
        fs::write(&target, "7\n").unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert_eq!(advance(&path, 3_000).unwrap(), 3_000);
        assert!(!fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&target).unwrap(), "7\n");
    }

    #[tokio::test]
    async fn raised_incarnations_are_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.key");
        let first = next_incarnation(&key);
        let (tx, rx) = watch::channel(first);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(persist_changes(rx, key.clone(), first, shutdown.clone()));
        let raised = first + 1_000_000_000;
        tx.send_replace(raised);
        let path = incarnation_path(&key);
        for _ in 0..100 {
            if fs::read_to_string(&path).unwrap().trim() == raised.to_string() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(fs::read_to_string(&path).unwrap().trim(), raised.to_string());
        assert!(next_incarnation(&key) > raised, "the next start is above the raised value");
        shutdown.cancel();
        task.await.unwrap();
    }
}
