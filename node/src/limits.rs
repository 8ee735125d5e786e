//! Process limits: at start, the soft limit on open files is raised to the hard limit; and
//! [`RateLimitedLog`], so that a limit that bites is logged without flooding the log.
//!
//! Every DNS-over-TCP client, control connection, peer connection and health check holds a file
//! descriptor; service managers often start a process with a soft limit of 1024 although the hard
//! limit allows far more. Raising it costs nothing and moves the point where a flood of
//! connections turns into accept errors (which the listeners then survive, capped and logged).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// A warning logged at most once per interval (the first at once).
pub struct RateLimitedLog {
    interval: Duration,
    last: Mutex<Option<Instant>>,
}

impl RateLimitedLog {
    /// At most one line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self { interval, last: Mutex::new(None) }
    }

    /// Logs `message` as a warning unless one was logged within the interval.
    pub fn warn(&self, message: std::fmt::Arguments<'_>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= self.interval) {
            *last = Some(Instant::now());
            tracing::warn!("{message}");
        }
    }
}

/// What [`raise_open_files`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit before (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit now.
    pub now: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the result; a failure is logged
/// and changes nothing (the node runs with the limit it was given).
pub fn raise_open_files() -> OpenFiles {
    let limit = getrlimit(Resource::Nofile);
    let mut result = OpenFiles { before: limit.current, now: limit.current, hard: limit.maximum };
    if limit.current == limit.maximum {
        tracing::info!(open_files = ?limit.current, "open-files limit already at its hard limit");
        return result;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum }) {
        Ok(()) => {
            result.now = getrlimit(Resource::Nofile).current;
            tracing::info!(before = ?result.before, now = ?result.now, "raised the open-files limit");
        }
        Err(e) => tracing::warn!(
            soft = ?limit.current,
            hard = ?limit.maximum,
            "cannot raise the open-files limit: {e}"
        ),
    }
    result
}
