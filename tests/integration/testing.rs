//! Shared fixtures: the binary under test, `dig`, and bounded waiting.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use spdu_cluster::{LocalCluster, POOL_NAME, Ports};

/// The `spdu` binary built for this test run.
pub fn spdu() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_spdu"))
}

/// Runs `spdu` with `args`.
pub fn run_spdu(args: &[&str]) -> Output {
    Command::new(spdu()).args(args).output().expect("spdu runs")
}

/// Starts `n` sites at 127.0.`block`.11 and waits until all are serving.
pub async fn start_cluster(n: usize, block: u8, extra_toml: &str) -> LocalCluster {
    let mut cluster =
        LocalCluster::create(spdu(), n, Ipv4Addr::new(127, 0, block, 11), Ports::default(), extra_toml)
            .expect("cluster config");
    for i in 0..n {
        cluster.start_site(i).expect("site starts");
    }
    cluster.wait_ready(Duration::from_secs(20)).await.expect("all sites ready");
    cluster
}

/// Asks `server` with dig (a real, independent DNS client) and returns its full output.
///
/// # Panics
/// If dig is not installed: the test says how to get it rather than passing silently.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=1", "+tries=2"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("dig is needed for this test (apt-get install dnsutils): {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The A addresses `server` answers for the pool name, asked with `dig +short`, sorted.
pub fn dig_pool(server: SocketAddr) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> =
        dig(server, &["+short", POOL_NAME, "A"]).lines().filter_map(|l| l.trim().parse().ok()).collect();
    addrs.sort();
    addrs
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes; returns the time taken.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sorted IPs of the given sites of `cluster`.
pub fn ips(cluster: &LocalCluster, sites: &[usize]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = sites.iter().map(|i| cluster.ip(*i)).collect();
    v.sort();
    v
}

/// A minimal HTTP service: answers every request `200 ok` after `delay` and closes the
/// connection, so that a stopped service is really gone (no kept-alive connection keeps
/// answering). Stops on abort.
pub fn http_service(addr: SocketAddr, delay: Duration) -> JoinHandle<()> {
    let listener = std::net::TcpListener::bind(addr).expect("service address free");
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut buffer = [0; 2048];
                let _ = stream.read(&mut buffer).await;
                tokio::time::sleep(delay).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n")
                    .await;
            });
        }
    })
}

/// libfaketime's library, to preload into `spdu` itself (the `faketime` program forks, so its
/// pid would not be the node's).
///
/// # Panics
/// If the faketime package is not installed.
pub fn libfaketime() -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|d| d.ok())
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is needed for this test (apt-get install faketime)")
}
