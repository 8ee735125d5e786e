//! One delivery attempt of one event to one hook. The caller bounds it with the hook's timeout.
//!
//! - URL: `POST` of the event's JSON with `X-Spdu-Event`, `X-Spdu-Seq` and, with a secret,
//!   `X-Spdu-Signature: sha256=<hex HMAC-SHA256(secret, body)>`; any 2xx status is delivered.
//!   Redirects are not followed (a POST would turn into a GET elsewhere) and no proxy is used.
//!   Error texts name the URL without its path or query, which may hold a token.
//! - Command: argv run without a shell in a process group of its own, the body on stdin, the
//!   event in `SPDU_EVENT_*` variables (and the signature in `SPDU_EVENT_SIGNATURE`); exit status
//!   0 is delivered. When the attempt is dropped (timeout, shutdown), the whole group is killed.

use std::process::Stdio;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{HookTarget, NotifyHook};
use crate::events::Event;

/// The `User-Agent` of webhook requests.
pub fn user_agent() -> &'static str {
    concat!("spdu-notify/", env!("CARGO_PKG_VERSION"))
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`: the `X-Spdu-Signature` value.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The one HTTP client of every webhook (timeouts are per request).
pub(super) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(user_agent())
        .pool_max_idle_per_host(1)
        .build()
        .unwrap_or_else(|e| {
            tracing::error!("notify: cannot build the HTTP client ({e}); using the default one");
            reqwest::Client::new()
        })
}

/// Delivers `event` (encoded as `body`) to `hook` once.
pub(super) async fn attempt(
    hook: &NotifyHook,
    client: &reqwest::Client,
    event: &Event,
    body: &[u8],
) -> Result<(), String> {
    let signed = hook.secret.as_ref().map(|s| signature(s.bytes(), body));
    match &hook.target {
        HookTarget::Url(url) => post(client, url, event, body, signed, hook).await,
        HookTarget::Command(argv) => run(argv, event, body, signed).await,
    }
}

/// `scheme://host:port` of `url`: enough to tell which hook failed, without its token.
fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    event: &Event,
    body: &[u8],
    signed: Option<String>,
    hook: &NotifyHook,
) -> Result<(), String> {
    let mut request = client
        .post(url.clone())
        .timeout(hook.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Spdu-Event", event.event.as_str())
        .header("X-Spdu-Seq", event.seq.to_string())
        .body(body.to_vec());
    if let Some(signed) = signed {
        request = request.header("X-Spdu-Signature", signed);
    }
    let response = request.send().await.map_err(|e| {
        // reqwest's Display only repeats the URL; the cause (refused, reset, TLS) is in the chain.
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        let what = if e.is_timeout() { "timed out".to_owned() } else { causes.join(": ") };
        format!("POST {}: {what}", origin(url))
    })?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("POST {}: {status}", origin(url))) }
}

/// Kills a command's whole process group when dropped (a shell's children too).
struct Group(Option<rustix::process::Pid>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // The group may be gone already (ESRCH): nothing to do then.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

async fn run(argv: &[String], event: &Event, body: &[u8], signed: Option<String>) -> Result<(), String> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env("SPDU_EVENT_SEQ", event.seq.to_string())
        .env("SPDU_EVENT_KIND", event.event.as_str())
        .env("SPDU_EVENT_NODE", &event.node)
        .env("SPDU_EVENT_CLUSTER", &event.cluster)
        .env("SPDU_EVENT_TIME", &event.time)
        .env("SPDU_EVENT_SUMMARY", &event.summary)
        .env("SPDU_EVENT_JSON", String::from_utf8_lossy(body).as_ref())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(signed) = signed {
        command.env("SPDU_EVENT_SIGNATURE", signed);
    }
    let mut child = command.spawn().map_err(|e| format!("{}: {e}", argv[0]))?;
    let _group = Group(child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)));
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that does not read its stdin is fine (broken pipe).
            let _ = stdin.write_all(body).await;
        }
    };
    let stderr = child.stderr.take();
    let collect = async move {
        let mut kept = Vec::new();
        if let Some(mut pipe) = stderr {
            let mut chunk = [0u8; 1024];
            while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
                if kept.len() < 4096 {
                    kept.extend_from_slice(&chunk[..n]);
                }
            }
        }
        kept
    };
    let (_, stderr, status) = tokio::join!(feed, collect, child.wait());
    let status = status.map_err(|e| format!("{}: {e}", argv[0]))?;
    if status.success() {
        return Ok(());
    }
    Err(crate::health::check::command_failure(&argv[0], status, &stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
