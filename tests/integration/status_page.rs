//! The status page (`GET /` on the control endpoint) in a real browser: headless Chromium loads
//! it from a running 3-node cluster, runs its script (which reads `/v1/peers`, `/v1/explain` and
//! `/v1/events`), and the test reads the rendered DOM (`--dump-dom`): every site, the 3×3
//! reachability matrix, each name's answer and priorities; then a site is killed and the page
//! must show it unreachable and out of the answer. A screenshot is saved under
//! `<target>/test-artifacts/status-page.png`.
//!
//! Alpha's config calls gamma by a name holding markup (config names may hold anything but
//! whitespace and control characters): the page must show it as text, never as an element.
//! The timeline is read through a server in front of a real node that adds `/v1/events` (or
//! answers it 404, as a node without the route does).
//!
//! Chromium runs headless with a fresh profile, in its own process group, killed on timeout
//! or failure. Skips, saying so, when `chromium` is not installed (CI installs it). Blocks
//! 127.0.147.0/24, 127.0.148.0/24, 127.0.149.0/24.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spdu_cluster::{LocalCluster, Ports};

use crate::testing::{spdu, wait_until};

/// Longest wait for the cluster to settle.
const CONVERGE: Duration = Duration::from_secs(15);

/// Longest one Chromium run may take (it takes about 2 s here).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// What alpha's config calls gamma: an element with a handler, if it were ever parsed as markup.
const HOSTILE: &str = "<img/src=x/onerror=document.body.dataset.pwned=1>";

/// The Chromium binary, if installed; else says that `test` is skipped.
fn chromium(test: &str) -> Option<&'static str> {
    let found =
        Command::new("chromium").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !found.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED {test}: chromium is not installed (apt-get install chromium)");
        return None;
    }
    Some("chromium")
}

/// A Chromium process (in its own process group), killed with its children on drop.
struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs headless Chromium on `url` with `args` (a fresh profile each time, so nothing is
/// cached) and returns what it printed; bounded by [`BROWSER_TIMEOUT`].
fn run_chromium(binary: &str, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let stdout = profile.path().join("stdout");
    let stderr = profile.path().join("stderr");
    let child = Command::new(binary)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
        // Let the script fetch and render (several 2 s refreshes) before the dump.
        .arg("--virtual-time-budget=5000")
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0)
        .spawn()
        .expect("chromium starts");
    let mut browser = Browser { child };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = browser.child.try_wait().expect("waiting for chromium") {
            break status;
        }
        assert!(
            start.elapsed() < BROWSER_TIMEOUT,
            "chromium did not finish {url} within {BROWSER_TIMEOUT:?}; stderr:\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(browser);
    assert!(
        status.success(),
        "chromium failed on {url} ({status}); stderr:\n{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    std::fs::read_to_string(&stdout).expect("chromium's output")
}

/// One cell of the rendered matrix.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Cell {
    observer: String,
    site: String,
    state: String,
}

/// The page as Chromium rendered it.
struct Dom(String);

impl Dom {
    /// Loads `http://<control>/` in Chromium and dumps the DOM once the script has run.
    fn load(browser: &str, control: SocketAddr) -> Dom {
        let dom = Dom(run_chromium(browser, &format!("http://{control}/"), &["--dump-dom"]));
        assert!(
            dom.0.contains("<body data-state=\"ok\""),
            "the page's script did not render a view of {control}:\n{}",
            dom.0
        );
        // It refreshes itself: several rounds ran within the browser's 5 s of virtual time.
        let refreshes = dom.0.split("data-refreshes=\"").nth(1).and_then(|r| r.split('"').next());
        let refreshes: u32 = refreshes.and_then(|r| r.parse().ok()).unwrap_or(0);
        assert!(refreshes >= 2, "the page read {control} {refreshes} time(s) in 5 s");
        dom
    }

    /// The attributes (name, unescaped value) of every `<element …>` that has attribute `name`.
    fn attrs(&self, element: &str, name: &str) -> Vec<Vec<(String, String)>> {
        let mut out = Vec::new();
        for tag in self.0.split(&format!("<{element} ")).skip(1) {
            let attrs = parse_attrs(tag);
            if attrs.iter().any(|(k, _)| k == name) {
                out.push(attrs);
            }
        }
        out
    }

    /// The matrix cells, sorted by observer and site.
    fn cells(&self) -> Vec<Cell> {
        let mut cells: Vec<Cell> = self
            .attrs("td", "data-state")
            .into_iter()
            .map(|attrs| {
                let get = |k: &str| attrs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
                Cell { observer: get("data-observer"), site: get("data-site"), state: get("data-state") }
            })
            .collect();
        cells.sort();
        cells
    }

    /// Attribute `name` of the element of type `element` whose `key` is `value`.
    fn attr_of(&self, element: &str, key: &str, value: &str, name: &str) -> String {
        let all = self.attrs(element, key);
        let found = all.iter().find(|attrs| attrs.iter().any(|(k, v)| k == key && v == value));
        let attrs = found.unwrap_or_else(|| panic!("no <{element} {key}={value:?}> in:\n{}", self.0));
        attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    }

    /// The row of the sites table of `site`: `(attribute, value)` pairs.
    fn site_row(&self, site: &str, name: &str) -> String {
        self.attr_of("tr", "data-site", site, name)
    }

    /// The names in the answer block of pool name `name`.
    fn answer_sites(&self, name: &str) -> Vec<String> {
        let sites = self.attr_of("div", "data-name", name, "data-sites");
        sites.split_whitespace().map(str::to_owned).collect()
    }
}

/// The attributes at the start of `tag` (the text after `<name `), up to the tag's `>`: as the
/// DOM serializer writes them, `key="value"` with `"` escaped in values.
fn parse_attrs(tag: &str) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    let mut rest = tag.trim_start();
    while !rest.is_empty() && !rest.starts_with('>') && !rest.starts_with('/') {
        let key_end = rest.find(|c: char| c == '=' || c == '>' || c.is_whitespace()).unwrap_or(rest.len());
        let key = rest[..key_end].to_owned();
        rest = &rest[key_end..];
        let mut value = String::new();
        if let Some(quoted) = rest.strip_prefix("=\"") {
            let end = quoted.find('"').expect("closing quote of an attribute value");
            value = unescape(&quoted[..end]);
            rest = &quoted[end + 1..];
        }
        attrs.push((key, value));
        rest = rest.trim_start();
    }
    attrs
}

/// Undoes HTML serialization's escapes of attribute values and text.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Every `(observer, site)` pair of `names` with the state `state(observer, site)`, sorted.
fn matrix(names: &[&str], state: impl Fn(&str, &str) -> &'static str) -> Vec<Cell> {
    let mut cells = Vec::new();
    for observer in names {
        for site in names {
            cells.push(Cell {
                observer: (*observer).into(),
                site: (*site).into(),
                state: state(observer, site).into(),
            });
        }
    }
    cells.sort();
    cells
}

/// All up: every observer sees every other site reachable.
fn all_reachable(observer: &str, site: &str) -> &'static str {
    if observer == site { "self" } else { "reachable" }
}

/// Where test artifacts go: `<target dir>/test-artifacts` (CARGO_TARGET_DIR aware: the test
/// binary lives in `<target>/<profile>/deps`).
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// Saves a 1280×900 screenshot of `control`'s page as `file` under [`artifacts_dir`].
fn screenshot(browser: &str, control: SocketAddr, file: &str) -> PathBuf {
    let shot = artifacts_dir().join(file);
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://{control}/");
    run_chromium(browser, &url, &[&format!("--screenshot={}", shot.display()), "--window-size=1280,900"]);
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a real screenshot: {} bytes",
        png.len()
    );
    shot
}

/// The status line and headers of `GET path` at `control`, over a plain socket (bounded).
fn response_head(control: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&control, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {control}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    let response = String::from_utf8_lossy(&response);
    response.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

/// A node's `/v1/peers`, parsed.
fn view(control: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&spdu_cluster::fetch_view(control).expect("view")).expect("view JSON")
}

/// Whether `control`'s view has every roster node live and in the answer, and `www` is `site`.
fn settled(control: SocketAddr, live: usize, www: &str) -> bool {
    let view = view(control);
    let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
    let live_nodes =
        nodes.iter().filter(|n| n["observation"]["fresh"] == true && n["in_answer"] == true).count();
    let www_sites: Vec<&str> = view["answer"]["names"]
        .as_array()
        .and_then(|names| names.iter().find(|n| n["name"] == "www"))
        .and_then(|n| n["sites"].as_array())
        .map(|sites| sites.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    live_nodes == live && www_sites == [www]
}

/// What `observer`'s live observation in `view` reports of `site`'s reachability (none
/// without a live observation).
fn reports(view: &serde_json::Value, observer: &str, site: &str) -> Option<bool> {
    let nodes = view["nodes"].as_array()?;
    let key = &nodes.iter().find(|n| n["name"] == site)?["key"];
    let observation = &nodes.iter().find(|n| n["name"] == observer)?["observation"];
    if observation["fresh"] != true {
        return None;
    }
    let reports = observation["reports"].as_array()?;
    reports.iter().find(|r| r["key"] == *key)?["reachable"].as_bool()
}

/// Alpha, beta, gamma with priorities 2, 3, 1: `www` (policy priority) answers gamma, `api`
/// everyone. Each page is read in Chromium before and after gamma is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_the_cluster_in_chromium() {
    let Some(browser) = chromium("status_page_renders_the_cluster_in_chromium") else { return };
    let records = "[[zone.record]]\nname = \"www\"\npolicy = \"priority\"\nttl = 30\n";
    let priorities = [2, 3, 1];
    let mut cluster = LocalCluster::create_with(
        spdu(),
        3,
        Ipv4Addr::new(127, 0, 147, 11),
        Ports::default(),
        records,
        |i| format!("priority = {}", priorities[i]),
    )
    .expect("cluster config");
    cluster
        .edit_config(0, |text| text.replace("name = \"gamma\"", &format!("name = '{HOSTILE}'")))
        .expect("alpha's config");
    for i in 0..3 {
        cluster.start_site(i).expect("site starts");
    }
    cluster.wait_ready(Duration::from_secs(20)).await.expect("all sites ready");
    let (alpha, beta) = (cluster.control_addr(0), cluster.control_addr(1));
    wait_until(CONVERGE, "alpha and beta to see all three sites live, www on gamma", || {
        settled(alpha, 3, HOSTILE) && settled(beta, 3, "gamma")
    });

    // Beta's page: every site, the full matrix, priorities, both names' answers.
    let dom = Dom::load(browser, beta);
    assert_eq!(dom.cells(), matrix(&["alpha", "beta", "gamma"], all_reachable), "beta's matrix");
    for (site, priority) in [("alpha", 2), ("beta", 3), ("gamma", 1)] {
        assert_eq!(dom.site_row(site, "data-in-answer"), "true", "{site} in beta's answer");
        assert_eq!(dom.site_row(site, "data-healthy"), "true", "{site} healthy");
        let row = dom.0.split(&format!("<tr data-site=\"{site}\"")).nth(1).unwrap();
        let cell = row.split("<td class=\"priority\">").nth(1).unwrap();
        assert!(cell.starts_with(&format!("{priority}</td>")), "{site}'s priority {priority}: {cell:.40}");
    }
    let mut api = dom.answer_sites("api");
    api.sort();
    assert_eq!(api, ["alpha", "beta", "gamma"]);
    assert_eq!(dom.answer_sites("www"), ["gamma"]);
    assert!(dom.0.contains("127.0.147.13"), "gamma's address");

    // Served as HTML that may only run its own script and reach this endpoint.
    let head = response_head(beta, "/");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    for header in [
        "content-type: text/html; charset=utf-8",
        "x-content-type-options: nosniff",
        "content-security-policy: default-src 'none'; script-src 'sha256-",
    ] {
        assert!(head.to_ascii_lowercase().contains(header), "{header} missing:\n{head}");
    }
    assert!(!head.contains("unsafe-inline") && head.contains("connect-src 'self'"), "{head}");
    assert_eq!(response_head(beta, "/index.html").lines().next(), Some("HTTP/1.1 200 OK"));
    assert_eq!(response_head(beta, "/favicon.ico").lines().next(), Some("HTTP/1.1 204 No Content"));

    // Alpha's page shows gamma's hostile name as text: no element, no handler run.
    let dom = Dom::load(browser, alpha);
    assert_eq!(dom.cells(), matrix(&["alpha", "beta", HOSTILE], all_reachable), "alpha's matrix");
    assert_eq!(dom.answer_sites("www"), [HOSTILE]);
    assert!(dom.0.contains("&lt;img/src=x/onerror=document.body.dataset.pwned=1&gt;"), "the name as text");
    assert!(
        !dom.0.contains("<img ") && !dom.0.contains("onerror=\""),
        "the name became an element:\n{}",
        dom.0
    );
    assert!(!dom.0.contains("data-pwned"), "the name's handler ran");

    let shot = screenshot(browser, beta, "status-page.png");
    eprintln!("status page screenshot (all up): {}", shot.display());

    // Gamma is lost: beta's page shows it unreachable from alpha and beta, its row without a
    // live observation, out of both answers; www fails over to alpha (priority 2).
    cluster.stop(2).unwrap();
    let lost = Instant::now();
    // Gamma's last observation counts until `stale_after` (3.5 s) passes without news of it.
    wait_until(CONVERGE, "beta to drop gamma, answer www with alpha, and hear so from alpha", || {
        let view = view(beta);
        settled(beta, 2, "alpha")
            && reports(&view, "alpha", "gamma") == Some(false)
            && reports(&view, "gamma", "alpha").is_none()
    });
    eprintln!("gamma left beta's view after {:?}", lost.elapsed());
    let dom = Dom::load(browser, beta);
    let states = |o: &str, s: &str| match (o, s) {
        _ if o == s => "self",
        ("gamma", _) => "unknown",
        (_, "gamma") => "unreachable",
        _ => "reachable",
    };
    assert_eq!(dom.cells(), matrix(&["alpha", "beta", "gamma"], states), "beta's matrix without gamma");
    assert_eq!(dom.attr_of("tr", "data-observer", "gamma", "data-live"), "false");
    assert_eq!(dom.site_row("gamma", "data-in-answer"), "false");
    assert_eq!(dom.site_row("gamma", "data-reachable"), "false");
    let mut api = dom.answer_sites("api");
    api.sort();
    assert_eq!(api, ["alpha", "beta"]);
    assert_eq!(dom.answer_sites("www"), ["alpha"]);

    // The timeline: the node's events when it serves them, else what the page saw itself.
    match spdu_cluster::http_get(&format!("http://{beta}/v1/events")) {
        Ok(_) => {
            assert!(dom.0.contains("data-events=\"available\""), "the timeline reads /v1/events");
            assert!(dom.0.contains("<li data-event=\"answer\""), "an answer change in the timeline");
        }
        Err(e) => {
            assert!(e.to_string().contains("HTTP 404"), "{e}");
            assert!(dom.0.contains("data-events=\"unavailable\""), "the timeline says events are not served");
        }
    }

    let shot = screenshot(browser, beta, "status-page-site-lost.png");
    eprintln!("status page screenshot (gamma lost): {}", shot.display());
}

/// `count` events as `/v1/events` serves them (the events contract), seq 1..=count, one a minute
/// from `start_ms`; event 42's summary holds markup.
fn events_json(count: u64, start_ms: u64) -> String {
    let kinds = ["answer", "peer", "health", "roster"];
    let events: Vec<serde_json::Value> = (1..=count)
        .map(|seq| {
            let summary = if seq == 42 {
                format!("api: {HOSTILE} left the answer")
            } else {
                format!("event number {seq}")
            };
            serde_json::json!({
                "seq": seq,
                "time": "2026-12-07T19:01:02.345Z",
                "unix_ms": start_ms + seq * 60_000,
                "node": "alpha",
                "cluster": spdu_cluster::ZONE_ORIGIN,
                "event": kinds[seq as usize % kinds.len()],
                "summary": summary,
                "detail": {},
            })
        })
        .collect();
    serde_json::json!({ "events": events }).to_string()
}

/// What a [`front`] server serves in front of a real node.
struct FrontState {
    /// The node's control URL (`http://addr`).
    node: String,
    /// `/v1/events`' body; `None`: 404, as on a node without the route.
    events: Option<String>,
    /// Edits the node's `/v1/peers` before it is passed on, given how many came before.
    edit_view: fn(u32, &mut serde_json::Value),
    /// `/v1/peers` requests so far.
    views: std::sync::atomic::AtomicU32,
}

/// A server at `ip` (a free port) that passes a real node's page, `/v1/peers` (edited) and
/// `/v1/explain` through, without the page's Content-Security-Policy (so that only the page's
/// rendering keeps markup out), and serves `/v1/events` itself. Stops on abort.
async fn front(ip: Ipv4Addr, state: FrontState) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use std::sync::Arc;

    async fn fetch(node: &str, path: &str) -> anyhow::Result<String> {
        let url = format!("{node}{path}");
        tokio::task::spawn_blocking(move || spdu_cluster::http_get(&url)).await?
    }
    fn reply(content_type: &'static str, body: anyhow::Result<String>) -> Response {
        match body {
            Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        }
    }
    let app = axum::Router::new()
        .route(
            "/",
            get(|State(s): State<Arc<FrontState>>| async move {
                reply("text/html; charset=utf-8", fetch(&s.node, "/").await)
            }),
        )
        .route(
            "/v1/peers",
            get(|State(s): State<Arc<FrontState>>| async move {
                let n = s.views.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let view = fetch(&s.node, "/v1/peers").await.and_then(|json| {
                    let mut view: serde_json::Value = serde_json::from_str(&json)?;
                    (s.edit_view)(n, &mut view);
                    Ok(view.to_string())
                });
                reply("application/json", view)
            }),
        )
        .route(
            "/v1/explain/{name}",
            get(|State(s): State<Arc<FrontState>>, UrlPath(name): UrlPath<String>| async move {
                reply("application/json", fetch(&s.node, &format!("/v1/explain/{name}")).await)
            }),
        )
        .route(
            "/v1/events",
            get(|State(s): State<Arc<FrontState>>| async move {
                match &s.events {
                    Some(events) => reply("application/json", Ok(events.clone())),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .with_state(Arc::new(state));
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("front address");
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}

/// The timeline as the node's `/v1/events` will feed it (60 events of every kind, one summary
/// holding markup): the last 50, newest first, each summary as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_timeline_shows_the_last_events_newest_first() {
    let Some(browser) = chromium("status_page_timeline_shows_the_last_events_newest_first") else { return };
    let cluster = crate::testing::start_cluster(1, 148, "").await;
    let (addr, server) = front(
        Ipv4Addr::new(127, 0, 148, 20),
        FrontState {
            node: format!("http://{}", cluster.control_addr(0)),
            events: Some(events_json(60, 1_796_670_000_000)),
            edit_view: |_, _| {},
            views: Default::default(),
        },
    )
    .await;
    let dom = tokio::task::spawn_blocking(move || Dom::load(browser, addr)).await.unwrap();
    server.abort();
    assert!(dom.0.contains("data-events=\"available\""), "the timeline reads /v1/events");
    let seqs: Vec<u64> = dom
        .attrs("li", "data-seq")
        .iter()
        .filter_map(|a| a.iter().find(|(k, _)| k == "data-seq")?.1.parse().ok())
        .collect();
    assert_eq!(seqs, (11..=60).rev().collect::<Vec<u64>>(), "the last 50 events, newest first");
    for kind in ["answer", "peer", "health", "roster"] {
        assert!(dom.0.contains(&format!("<li data-event=\"{kind}\"")), "a {kind} event");
    }
    assert!(dom.0.contains("api: &lt;img/src=x/onerror=document.body.dataset.pwned=1&gt; left the answer"));
    assert!(
        !dom.0.contains("<img ") && !dom.0.contains("onerror=\""),
        "a summary became an element:\n{}",
        dom.0
    );
    assert!(!dom.0.contains("data-pwned"), "a summary's handler ran");
    assert_eq!(dom.cells(), matrix(&["alpha"], all_reachable), "the node's own view passed through");
}

/// A node without `/v1/events`: the timeline holds the answer changes the open page saw (here
/// the view passed on loses its one site from `api` after the first read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_timeline_without_events_shows_changes_the_page_saw() {
    let Some(browser) = chromium("status_page_timeline_without_events_shows_changes_the_page_saw") else {
        return;
    };
    let cluster = crate::testing::start_cluster(1, 149, "").await;
    let (addr, server) = front(
        Ipv4Addr::new(127, 0, 149, 20),
        FrontState {
            node: format!("http://{}", cluster.control_addr(0)),
            events: None,
            edit_view: |n, view| {
                if n >= 1 {
                    view["answer"]["names"][0]["sites"] = serde_json::json!([]);
                }
            },
            views: Default::default(),
        },
    )
    .await;
    let dom = tokio::task::spawn_blocking(move || Dom::load(browser, addr)).await.unwrap();
    server.abort();
    assert!(dom.0.contains("data-events=\"unavailable\""), "the timeline says events are not served");
    assert!(
        dom.0.contains("answer</span> api: now no site (was alpha)"),
        "the change in the timeline:\n{}",
        dom.0
    );
    assert!(dom.0.contains("no site: the answer is empty"), "api's answer now");
}
