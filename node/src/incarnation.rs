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

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

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
                "cannot persist the incarnation ({e:#}); using the clock ({now}): \
                 if the clock steps back, peers ignore this node until its old observations expire"
            );
            now
        }
    }
}

/// Reads `path` (absent counts as 0), stores `max(stored + 1, now)` there and returns it.
pub fn advance(path: &Path, now: u64) -> anyhow::Result<u64> {
    let stored = match fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{}: not an incarnation number", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let next = stored.saturating_add(1).max(now);
    write_atomically(path, &format!("{next}\n"))?;
    Ok(next)
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
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.incarnation");
        fs::write(&path, "garbage").unwrap();
        assert!(advance(&path, 1).is_err());
    }
}
