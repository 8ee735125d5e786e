//! Running under systemd: the real `spdu` binary talking `sd_notify` to a real unix datagram
//! socket (as systemd's `NOTIFY_SOCKET`), the unit file checked by `systemd-analyze`, the example
//! config by `spdu check`, the man page by `man` and the bash completion by bash.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spdu_cluster::{LocalCluster, POOL_NAME, Ports};

use crate::testing::{run_spdu, spdu};

/// The repository's `packaging/` directory.
fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

/// A `spdu run` started by the test; killed (SIGKILL) and reaped on drop if still running.
struct Node {
    child: Child,
}

impl Node {
    fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.child.id() as i32).expect("a child's pid is positive")
    }

    fn signal(&self, signal: rustix::process::Signal) {
        rustix::process::kill_process(self.pid(), signal).expect("the node runs");
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The socket systemd would listen on, and the notifications that arrive on it with their
/// arrival times.
struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
    start: Instant,
    seen: Vec<(Duration, String)>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Self { path, socket, start: Instant::now(), seen: Vec::new() }
    }

    /// Receives notifications until one satisfies `wanted` (returned) or `timeout` passes (None).
    fn until(&mut self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buffer = [0; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let Ok(n) = self.socket.recv(&mut buffer) else { continue };
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            self.seen.push((self.start.elapsed(), message.clone()));
            if wanted(&message) {
                return Some(message);
            }
        }
        None
    }

    /// Arrival times of the messages that contain `line` as one of their lines.
    fn times_of(&self, line: &str) -> Vec<Duration> {
        self.seen.iter().filter(|(_, m)| m.lines().any(|l| l == line)).map(|(t, _)| *t).collect()
    }

    fn log(&self) -> String {
        self.seen.iter().map(|(t, m)| format!("{t:?}: {m:?}\n")).collect()
    }
}

/// A two-site cluster on 127.0.`block`.11–12 whose site beta runs; alpha is started by the test
/// under systemd's notification environment.
async fn cluster_with_beta_running(block: u8) -> LocalCluster {
    let mut cluster =
        LocalCluster::create(spdu(), 2, [127, 0, block, 11].into(), Ports::default(), "").unwrap();
    cluster.start_site(1).unwrap();
    cluster.wait_site_ready(1, Duration::from_secs(20)).await.unwrap();
    cluster
}

fn start_alpha(cluster: &LocalCluster, notify: &NotifySocket) -> Node {
    let log = std::fs::File::create(cluster.dir().join("alpha-systemd.log")).unwrap();
    let child = Command::new(spdu())
        .args(["run", "--config"])
        .arg(cluster.config_path(0))
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "2000000")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Node { child }
}

fn alpha_log(cluster: &LocalCluster) -> String {
    std::fs::read_to_string(cluster.dir().join("alpha-systemd.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_follow_the_node_from_ready_to_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let mut cluster = cluster_with_beta_running(154).await;
    let mut alpha = start_alpha(&cluster, &notify);

    // READY=1 comes first, with a status line, and only once DNS answers: asked right then,
    // alpha's DNS answers.
    let first = notify.until(Duration::from_secs(20), |_| true);
    let first = first.unwrap_or_else(|| panic!("no notification; log:\n{}", alpha_log(&cluster)));
    assert!(first.lines().any(|l| l == "READY=1"), "first notification: {first:?}");
    assert!(first.lines().any(|l| l.starts_with("STATUS=serving pool.example.test on ")), "{first:?}");
    let answer = spdu_cluster::query_addresses(cluster.dns_addr(0), POOL_NAME).await;
    assert!(answer.as_ref().is_ok_and(|a| !a.is_empty()), "DNS right after READY=1: {answer:?}");

    // The status line follows what the node answers and sees: both sites, beta reachable...
    let both = notify
        .until(Duration::from_secs(15), |m| m.contains("STATUS=answering api: 2 sites; peers reachable 1/1"));
    assert!(both.is_some(), "no status with both sites:\n{}", notify.log());
    // ...and beta's loss.
    cluster.stop(1).unwrap();
    let alone = notify
        .until(Duration::from_secs(15), |m| m.contains("STATUS=answering api: 1 site; peers reachable 0/1"));
    assert!(alone.is_some(), "no status without beta:\n{}", notify.log());

    // WATCHDOG=1 at half of WATCHDOG_USEC (2 s), never a gap systemd would act on.
    notify.until(Duration::from_secs(4), |_| false);
    let pings = notify.times_of("WATCHDOG=1");
    assert!(pings.len() >= 6, "{} pings:\n{}", pings.len(), notify.log());
    let longest = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(longest < Duration::from_secs(2), "a {longest:?} gap between pings:\n{}", notify.log());
    let ready_at = notify.times_of("READY=1")[0];
    assert!(pings[0] >= ready_at, "a ping before READY=1:\n{}", notify.log());

    // SIGTERM: STOPPING=1, then a clean exit.
    alpha.signal(rustix::process::Signal::TERM);
    let stopping = notify.until(Duration::from_secs(5), |m| m.lines().any(|l| l == "STOPPING=1"));
    assert!(stopping.is_some(), "no STOPPING=1:\n{}", notify.log());
    let status = alpha.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "exit after SIGTERM: {status:?}\n{}", alpha_log(&cluster));
}

/// `systemctl reload spdu` sends SIGHUP (`ExecReload=`): the node says RELOADING=1, then READY=1
/// again, and keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_announced_as_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let cluster = cluster_with_beta_running(155).await;
    let mut alpha = start_alpha(&cluster, &notify);
    let ready = notify.until(Duration::from_secs(20), |m| m.lines().any(|l| l == "READY=1"));
    assert!(ready.is_some(), "no READY=1; log:\n{}", alpha_log(&cluster));

    alpha.signal(rustix::process::Signal::HUP);
    let reloading = notify.until(Duration::from_secs(5), |m| m.lines().any(|l| l == "RELOADING=1"));
    let reloading = reloading.unwrap_or_else(|| panic!("no RELOADING=1:\n{}", notify.log()));
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading:?}");
    let again = notify.until(Duration::from_secs(5), |m| m.lines().any(|l| l == "READY=1"));
    assert!(again.is_some(), "no READY=1 after the reload:\n{}", notify.log());
    assert!(alpha.wait_exit(Duration::from_secs(1)).is_none(), "the node exited on SIGHUP");
}

/// Runs a tool; None (after saying so) when it is not installed.
fn tool(program: &str, args: &[&str], dir: &Path) -> Option<std::process::Output> {
    match Command::new(program).args(args).current_dir(dir).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Straight to stderr, which the harness does not capture: the skip shows.
            let line =
                format!("SKIPPED: {program} is not installed (Debian: apt-get install systemd / man-db)");
            let _ = writeln!(std::io::stderr().lock(), "{line}");
            None
        }
        Err(e) => panic!("{program}: {e}"),
    }
}

/// packaging/spdu.service with `ExecStart=` pointing at the binary under test, in `dir`.
fn unit_for_built_binary(dir: &Path, binary: &Path) -> PathBuf {
    let text = std::fs::read_to_string(packaging().join("spdu.service")).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/spdu run --config /etc/spdu/spdu.toml\n"), "{text}");
    let path = dir.join("spdu.service");
    std::fs::write(&path, text.replace("/usr/bin/spdu", binary.to_str().unwrap())).unwrap();
    path
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_built_binary(dir.path(), spdu());
    let unit = unit.to_str().unwrap();
    // The man page is checked once installed (tests/package.sh); here it is not.
    let Some(out) = tool("systemd-analyze", &["verify", "--man=no", unit], dir.path()) else { return };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");

    // The same check refuses a unit whose binary is missing: it does look at ExecStart.
    let missing = unit_for_built_binary(dir.path(), Path::new("/nonexistent/spdu"));
    let out =
        tool("systemd-analyze", &["verify", "--man=no", missing.to_str().unwrap()], dir.path()).unwrap();
    assert!(!out.status.success(), "verify accepted a missing binary");

    // systemd's own exposure score (0 = fully locked down, 10 = none): "OK" is below 4.5;
    // everything a DNS server can do without is taken away.
    let out = tool("systemd-analyze", &["security", "--offline=yes", unit], dir.path()).unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let score: f64 = (report.lines())
        .find_map(|l| l.split("Overall exposure level for spdu.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(score <= 2.0, "exposure {score}:\n{report}");
    for hardened in ["NoNewPrivileges=", "ProtectSystem=", "ProtectHome=", "PrivateTmp=", "PrivateDevices="] {
        let line = report.lines().find(|l| l.contains(hardened));
        assert!(line.is_some_and(|l| l.contains('✓')), "{hardened}: {line:?}");
    }
}

#[test]
fn the_example_config_is_accepted_by_spdu_check() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(packaging().join("spdu.toml.example")).unwrap();
    assert!(text.contains("key = \"/var/lib/spdu/node.key\"\n"), "{text}");
    let key = dir.path().join("node.key");
    let keygen = run_spdu(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(keygen.status.success());
    let config = dir.path().join("spdu.toml");
    std::fs::write(&config, text.replace("/var/lib/spdu/node.key", key.to_str().unwrap())).unwrap();
    let out = run_spdu(&["check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 peers") && stdout.contains("names api (all), admin (priority)"), "{stdout}");
}

#[test]
fn the_man_page_renders_without_warnings_and_names_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_spdu(&["man"]);
    assert!(out.status.success());
    let page = dir.path().join("spdu.1");
    std::fs::write(&page, &out.stdout).unwrap();
    let args = ["--warnings=all", "-l", page.to_str().unwrap()];
    let Some(rendered) = tool("man", &args, dir.path()) else { return };
    let warnings = String::from_utf8_lossy(&rendered.stderr);
    assert!(rendered.status.success() && warnings.trim().is_empty(), "man: {warnings}");
    let text = String::from_utf8_lossy(&rendered.stdout);
    // The header and footer: the manual's name, then the version and the date.
    let header = text.lines().next().unwrap_or_default();
    assert!(header.starts_with("spdu(1)") && header.contains("spdu manual"), "header: {header:?}");
    let footer = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(footer.contains(&format!("spdu {}", env!("CARGO_PKG_VERSION"))), "footer: {footer:?}");
    for command in
        ["keygen", "pubkey", "run", "peers", "explain", "check", "check-health", "zone", "man", "completions"]
    {
        assert!(text.contains(&format!("spdu {command}")), "no {command} in:\n{text}");
    }
    for section in ["SYNOPSIS", "COMMANDS", "FILES", "SIGNALS", "ENVIRONMENT", "EXIT STATUS"] {
        assert!(text.contains(section), "no {section} in:\n{text}");
    }
}

#[test]
fn bash_completes_subcommands_and_options() {
    let out = run_spdu(&["completions", "bash"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("spdu.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // Complete as bash does on TAB: the completion function fills COMPREPLY.
    let complete = |words: &str| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _spdu spdu \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = tool("bash", &["-c", &program], dir.path()).expect("bash runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let mut commands: Vec<String> = complete("spdu ch").lines().map(str::to_owned).collect();
    commands.sort();
    assert_eq!(commands, ["check", "check-health"]);
    assert_eq!(complete("spdu pu").trim(), "pubkey");
    let options = complete("spdu peers --");
    assert!(options.contains("--control") && options.contains("--json"), "{options}");
    assert!(complete("spdu completions f").lines().any(|l| l == "fish"));
}
