//! `[[notify]]`: the hooks that receive the node's events.
//!
//! Each hook is exactly one of `url` (an `http://` or `https://` URL the event is POSTed to as
//! JSON) or `command` (argv, run without a shell, the event on stdin and in `SPDU_EVENT_*`
//! variables), with the event kinds it wants (`events`, default all four), an optional
//! `secret_file` whose content signs each body (read here, at load, only if nobody else may read
//! it; its content is never logged or printed), `timeout_ms`, `retries` and `queue`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Checked, FieldError, bounded_count, bounded_ms};
use crate::events::EventKind;

/// Default time one delivery attempt may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);
/// `notify[].timeout_ms`: 10 ms to 2 min.
pub const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 10..=120_000;
/// Default number of retries after a failed attempt.
pub const DEFAULT_RETRIES: u32 = 3;
/// `notify[].retries`: 0 to 10.
pub const RETRIES: std::ops::RangeInclusive<u32> = 0..=10;
/// Default number of events waiting per hook.
pub const DEFAULT_QUEUE: u32 = 256;
/// `notify[].queue`: 1 to 65536.
pub const QUEUE: std::ops::RangeInclusive<u32> = 1..=65_536;
/// Longest secret file read.
const MAX_SECRET_BYTES: u64 = 4096;

/// One `[[notify]]` hook, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyHook {
    /// `notify[i]`: its name in logs and metrics.
    pub label: String,
    /// Where events go.
    pub target: HookTarget,
    /// `events`: the kinds it receives, in [`EventKind::ALL`] order.
    pub events: Vec<EventKind>,
    /// `secret_file`'s content: signs each body (`X-Spdu-Signature`).
    pub secret: Option<Secret>,
    /// `timeout_ms`: one attempt (request or command run) may take this long.
    pub timeout: Duration,
    /// `retries`: attempts after the first failed one, with exponential backoff.
    pub retries: u32,
    /// `queue`: events waiting for delivery; more are dropped and counted.
    pub queue: usize,
}

/// Where a hook delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookTarget {
    /// `url`: POST the event as JSON.
    Url(reqwest::Url),
    /// `command`: run argv (no shell), the event on stdin and in the environment.
    Command(Vec<String>),
}

/// A hook's HMAC key. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    url: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    events: Option<Spanned<Vec<Spanned<String>>>>,
    secret_file: Option<Spanned<String>>,
    timeout_ms: Option<Spanned<u64>>,
    retries: Option<Spanned<u32>>,
    queue: Option<Spanned<u32>>,
}

/// Checks every `[[notify]]` entry; a relative `secret_file` is relative to `base`.
pub(super) fn validate(raw: &[Spanned<RawNotify>], base: &Path) -> Checked<Vec<NotifyHook>> {
    raw.iter().enumerate().map(|(i, raw)| validate_one(i, raw, base)).collect()
}

fn validate_one(i: usize, spanned: &Spanned<RawNotify>, base: &Path) -> Checked<NotifyHook> {
    let raw = spanned.get_ref();
    let field = format!("notify[{i}]");
    let target = match (&raw.url, &raw.command) {
        (Some(url), None) => HookTarget::Url(url_of(&field, url)?),
        (None, Some(command)) => {
            let argv = command.get_ref();
            if argv.is_empty() || argv[0].is_empty() {
                return Err(FieldError::at(
                    command,
                    format!("{field}.command: needs a program: command = [\"program\", \"arg\", …]"),
                ));
            }
            if argv.iter().any(|a| a.contains('\0')) {
                return Err(FieldError::at(command, format!("{field}.command: holds a NUL character")));
            }
            HookTarget::Command(argv.clone())
        }
        (Some(url), Some(_)) => {
            return Err(FieldError::at(url, format!("{field}: set url or command, not both")));
        }
        (None, None) => {
            return Err(FieldError::at(
                spanned,
                format!("{field}: needs url = \"https://…\" or command = [\"program\", …]"),
            ));
        }
    };
    let events = match &raw.events {
        None => EventKind::ALL.to_vec(),
        Some(list) => {
            let mut kinds = Vec::new();
            for name in list.get_ref() {
                let kind = EventKind::parse(name.get_ref()).ok_or_else(|| {
                    FieldError::at(
                        name,
                        format!(
                            "{field}.events: {:?} is not one of \"answer\", \"peer\", \"health\", \"roster\"",
                            name.get_ref()
                        ),
                    )
                })?;
                kinds.push(kind);
            }
            if kinds.is_empty() {
                return Err(FieldError::at(
                    list,
                    format!("{field}.events: empty (leave it out for every kind)"),
                ));
            }
            EventKind::ALL.into_iter().filter(|k| kinds.contains(k)).collect()
        }
    };
    let secret = raw.secret_file.as_ref().map(|path| secret_of(&field, path, base)).transpose()?;
    let timeout = bounded_ms(&format!("{field}.timeout_ms"), &raw.timeout_ms, DEFAULT_TIMEOUT, TIMEOUT_MS)?;
    let retries = bounded_count(&format!("{field}.retries"), &raw.retries, DEFAULT_RETRIES, RETRIES)?;
    let queue = bounded_count(&format!("{field}.queue"), &raw.queue, DEFAULT_QUEUE, QUEUE)? as usize;
    Ok(NotifyHook { label: field, target, events, secret, timeout, retries, queue })
}

fn url_of(field: &str, url: &Spanned<String>) -> Checked<reqwest::Url> {
    let parsed = reqwest::Url::parse(url.get_ref())
        .map_err(|e| FieldError::at(url, format!("{field}.url: not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FieldError::at(
            url,
            format!("{field}.url: scheme {:?} is not http or https", parsed.scheme()),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(FieldError::at(url, format!("{field}.url: has no host")));
    }
    Ok(parsed)
}

/// Reads the secret file (refused if others may read or replace it), trailing newline removed.
fn secret_of(field: &str, path: &Spanned<String>, base: &Path) -> Checked<Secret> {
    use std::io::Read;
    let at = |message: String| FieldError::at(path, format!("{field}.secret_file: {message}"));
    let full: PathBuf = base.join(path.get_ref());
    let file = spdu_keys::private_file::open_private(&full).map_err(|e| match e {
        spdu_keys::private_file::OpenError::Io(e) => at(format!("cannot read {}: {e}", full.display())),
        spdu_keys::private_file::OpenError::Unsafe(e) => at(format!("{}: {e}", full.display())),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| at(format!("cannot read {}: {e}", full.display())))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(at(format!("{} is longer than {MAX_SECRET_BYTES} bytes", full.display())));
    }
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(at(format!("{} is empty", full.display())));
    }
    Ok(Secret(bytes))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    /// A valid config (no key needed to parse) followed by `notify`.
    fn config(notify: &str) -> String {
        format!("{}\n{notify}", crate::config::tests::valid())
    }

    /// The line of `notify`'s line `n` (from 1) in [`config`].
    fn line(n: usize) -> usize {
        config("").lines().count() + n
    }

    fn parse_in(dir: &Path, notify: &str) -> anyhow::Result<Config> {
        Config::parse(&dir.join("spdu.toml"), &config(notify))
    }

    fn error(dir: &Path, notify: &str) -> String {
        format!("{:#}", parse_in(dir, notify).expect_err("config accepted"))
    }

    fn secret(dir: &Path, name: &str, content: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn hooks_get_defaults_and_read_their_secret() {
        let dir = tempfile::tempdir().unwrap();
        secret(dir.path(), "hook.secret", "s3cret\n", 0o600);
        let config = parse_in(
            dir.path(),
            r#"
[[notify]]
url = "http://127.0.0.1:9000/hook"
secret_file = "hook.secret"

[[notify]]
command = ["/usr/local/bin/page", "--team", "dns"]
events = ["roster", "answer"]
timeout_ms = 250
retries = 0
queue = 8
"#,
        )
        .unwrap();
        let [web, page] = config.notify.as_slice() else { panic!("{:?}", config.notify) };
        assert_eq!(web.label, "notify[0]");
        assert_eq!(web.target, HookTarget::Url("http://127.0.0.1:9000/hook".parse().unwrap()));
        assert_eq!(web.events, EventKind::ALL.to_vec());
        assert_eq!(web.secret.as_ref().unwrap().bytes(), b"s3cret");
        assert!(!format!("{web:?}").contains("s3cret"));
        assert_eq!((web.timeout, web.retries, web.queue), (DEFAULT_TIMEOUT, DEFAULT_RETRIES, 256));
        assert_eq!(
            page.target,
            HookTarget::Command(vec!["/usr/local/bin/page".into(), "--team".into(), "dns".into()])
        );
        assert_eq!(page.events, vec![EventKind::Answer, EventKind::Roster]);
        assert_eq!(
            (page.timeout, page.retries, page.queue, page.secret.is_none()),
            (Duration::from_millis(250), 0, 8, true)
        );
        assert!(parse_in(dir.path(), "").unwrap().notify.is_empty());
    }

    #[test]
    fn hook_mistakes_name_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spdu.toml").display().to_string();
        for (notify, at, expected) in [
            ("[[notify]]\nevents = [\"answer\"]", line(1), "notify[0]: needs url = \"https://…\" or command"),
            (
                "[[notify]]\nurl = \"http://a.test/\"\ncommand = [\"x\"]",
                line(2),
                "notify[0]: set url or command, not both",
            ),
            (
                "[[notify]]\nurl = \"ftp://a.test/\"",
                line(2),
                "notify[0].url: scheme \"ftp\" is not http or https",
            ),
            ("[[notify]]\nurl = \"not a url\"", line(2), "notify[0].url: not a URL"),
            ("[[notify]]\ncommand = []", line(2), "notify[0].command: needs a program"),
            (
                "[[notify]]\ncommand = [\"x\"]\nevents = [\"answer\", \"dns\"]",
                line(3),
                "notify[0].events: \"dns\" is not one of",
            ),
            ("[[notify]]\ncommand = [\"x\"]\nevents = []", line(3), "notify[0].events: empty"),
            ("[[notify]]\ncommand = [\"x\"]\ntimeout_ms = 0", line(3), "notify[0].timeout_ms"),
            ("[[notify]]\ncommand = [\"x\"]\nretries = 11", line(3), "notify[0].retries"),
            ("[[notify]]\ncommand = [\"x\"]\nqueue = 0", line(3), "notify[0].queue"),
            (
                "[[notify]]\ncommand = [\"x\"]\n[[notify]]\ncommand = [\"x\"]\nsecret_file = \"none\"",
                line(5),
                "notify[1].secret_file: cannot read",
            ),
            ("[[notify]]\ncommand = [\"x\"]\nheaders = 1", line(3), "unknown field `headers`"),
        ] {
            let e = error(dir.path(), notify);
            assert!(e.starts_with(&format!("{file}:{at}:")), "{notify}: {e}");
            assert!(e.contains(expected), "{notify}: {e}");
        }
    }

    #[test]
    fn a_secret_others_can_read_or_an_empty_one_is_refused_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        secret(dir.path(), "open.secret", "hunter2", 0o644);
        secret(dir.path(), "empty.secret", "\n", 0o600);
        let e = error(dir.path(), "[[notify]]\ncommand = [\"x\"]\nsecret_file = \"open.secret\"");
        assert!(e.contains("notify[0].secret_file:") && e.contains("mode 0644"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = error(dir.path(), "[[notify]]\ncommand = [\"x\"]\nsecret_file = \"empty.secret\"");
        assert!(e.contains("notify[0].secret_file:") && e.ends_with("is empty"), "{e}");
    }
}
