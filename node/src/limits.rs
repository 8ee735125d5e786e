//! Process limits: at start, the soft limit on open files is raised to the hard limit.
//!
//! Every DNS-over-TCP client, control connection, peer connection and health check holds a file
//! descriptor; service managers often start a process with a soft limit of 1024 although the hard
//! limit allows far more. Raising it costs nothing and moves the point where a flood of
//! connections turns into accept errors (which the listeners then survive, capped and logged).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

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
