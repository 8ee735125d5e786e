//! A cluster of real `spdu run` processes on one machine, for the demo (`spdu-demo`) and the
//! integration tests. A crate of its own so that `spdu run` never links it (nor `tempfile`).
//!
//! [`LocalCluster`] gives site `i` its own loopback address (`base_ip + i`, e.g. 127.0.0.11,
//! .12, .13: Linux routes all of 127/8 to `lo`, no root needed), so every site uses the same
//! ports, generates a key in a temporary directory, writes a config whose roster lists every
//! other site, and runs `<binary> run --config <site>.toml` as a child process with its output
//! in `<site>.log`. Children are killed (SIGKILL: an honest site loss) by [`LocalCluster::stop`]
//! and on drop, and the directory is removed on drop.
//!
//! Two clusters running at once need distinct base addresses (e.g. 127.0.1.11 and 127.0.2.11).
//!
//! Configs are generated: every site serves `api` ([`POOL_NAME`]) with TTL 5; text given to
//! [`LocalCluster::create`] goes into every config (e.g. `[timing]`, `[[zone.record]]`);
//! [`LocalCluster::create_with`] also describes each site the same way in every config (its own
//! `[node]` table and the `[[peers]]` entries naming it: e.g. `priority`, `weight`), and
//! [`LocalCluster::edit_config`] rewrites one site's config before it starts.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use spdu_cluster::{LocalCluster, Ports};
//! // In an integration test: env!("CARGO_BIN_EXE_spdu").
//! let binary = std::path::PathBuf::from("target/debug/spdu");
//! let mut cluster = LocalCluster::start(&binary, 3, "127.0.0.11".parse()?, Ports::default())?;
//! cluster.wait_ready(std::time::Duration::from_secs(10)).await?;
//! let answer = spdu_cluster::query_addresses(cluster.dns_addr(0), "api.pool.example.test").await?;
//! cluster.stop(2)?;
//! cluster.restart(2)?;
//! # Ok(()) }
//! ```

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};
use spdu_keys::SecretKey;

pub mod demo;

/// Names given to the sites, in order; at most this many sites.
pub const SITE_NAMES: [&str; 9] =
    ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"];

/// The pool zone every local cluster serves.
pub const ZONE_ORIGIN: &str = "pool.example.test";

/// The one pool name (`api.pool.example.test`).
pub const POOL_NAME: &str = "api.pool.example.test";

/// How long to wait for one DNS answer.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// The ports every site listens on (each on its own address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// QUIC gossip (UDP).
    pub gossip: u16,
    /// DNS (UDP and TCP).
    pub dns: u16,
    /// HTTP control endpoint.
    pub control: u16,
}

impl Default for Ports {
    /// The demo's ports: 17946 gossip, 15353 DNS, 17947 control (no root needed).
    fn default() -> Self {
        Self { gossip: 17946, dns: 15353, control: 17947 }
    }
}

/// One site of a [`LocalCluster`].
#[derive(Debug)]
struct Site {
    name: String,
    ip: Ipv4Addr,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// `n` `spdu run` processes on 127.0.0.x, with their keys, configs and logs in a temporary
/// directory. Dropping it kills the processes and removes the directory.
#[derive(Debug)]
pub struct LocalCluster {
    binary: PathBuf,
    ports: Ports,
    sites: Vec<Site>,
    // Declared last: dropped after the children are killed.
    dir: tempfile::TempDir,
}

impl LocalCluster {
    /// Writes keys and configs for `n` sites (1..=9) at `base_ip`, `base_ip + 1`, … without
    /// starting anything. `extra_toml` is added to every config (e.g. `"[timing]\nheartbeat_ms = 200"`).
    pub fn create(
        binary: &Path,
        n: usize,
        base_ip: Ipv4Addr,
        ports: Ports,
        extra_toml: &str,
    ) -> anyhow::Result<Self> {
        Self::create_with(binary, n, base_ip, ports, extra_toml, |_| String::new())
    }

    /// Like [`create`](Self::create), and `site_toml(i)` (TOML key/value lines, e.g.
    /// `"priority = 2\nweight = 50"`) describes site `i` everywhere: it is added to site `i`'s own
    /// `[node]` table and to the `[[peers]]` entry naming site `i` in every other site's config,
    /// so that every operator configures the same attributes for it. An empty string adds
    /// nothing. To give one site's config something the others lack, see
    /// [`edit_config`](Self::edit_config).
    pub fn create_with(
        binary: &Path,
        n: usize,
        base_ip: Ipv4Addr,
        ports: Ports,
        extra_toml: &str,
        site_toml: impl Fn(usize) -> String,
    ) -> anyhow::Result<Self> {
        if !(1..=SITE_NAMES.len()).contains(&n) {
            bail!("a local cluster has 1 to {} sites, not {n}", SITE_NAMES.len());
        }
        let base = u32::from(base_ip);
        if base.checked_add(n as u32 - 1).is_none_or(|last| last & 0xff < base & 0xff) {
            bail!("{base_ip}: {n} consecutive addresses do not fit in its /24");
        }
        let dir = tempfile::Builder::new()
            .prefix("spdu-cluster-")
            .tempdir()
            .context("creating a temporary directory")?;
        let mut keys = Vec::with_capacity(n);
        for name in &SITE_NAMES[..n] {
            keys.push(SecretKey::generate_file(&dir.path().join(format!("{name}.key")))?.public());
        }
        let ips: Vec<Ipv4Addr> = (0..n as u32).map(|i| Ipv4Addr::from(base + i)).collect();
        let attrs: Vec<String> = (0..n)
            .map(|i| {
                let text = site_toml(i);
                let text = text.trim();
                if text.is_empty() { String::new() } else { format!("{text}\n") }
            })
            .collect();
        let mut sites = Vec::with_capacity(n);
        for (i, name) in SITE_NAMES[..n].iter().enumerate() {
            let ip = ips[i];
            let mut text = format!(
                "[node]\nname = \"{name}\"\nkey = \"{name}.key\"\ngossip = \"{ip}:{}\"\ndns = [\"{ip}:{}\"]\n\
                 control = \"{ip}:{}\"\naddresses = [\"{ip}\"]\n{}\n\
                 [zone]\norigin = \"{ZONE_ORIGIN}\"\nnames = [\"api\"]\nttl = 5\nnameservers = [{}]\n\n{extra_toml}\n",
                ports.gossip,
                ports.dns,
                ports.control,
                attrs[i],
                SITE_NAMES[..n]
                    .iter()
                    .map(|s| format!("\"{s}.example.test\""))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            for (j, peer) in SITE_NAMES[..n].iter().enumerate().filter(|&(j, _)| j != i) {
                text.push_str(&format!(
                    "\n[[peers]]\nname = \"{peer}\"\nkey = \"{}\"\ngossip = \"{}:{}\"\n{}",
                    keys[j], ips[j], ports.gossip, attrs[j]
                ));
            }
            let config = dir.path().join(format!("{name}.toml"));
            fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
            let log = dir.path().join(format!("{name}.log"));
            sites.push(Site { name: (*name).to_owned(), ip, config, log, child: None });
        }
        Ok(Self { binary: binary.to_owned(), ports, sites, dir })
    }

    /// [`create`](Self::create)s `n` sites with default settings and starts them all.
    pub fn start(binary: &Path, n: usize, base_ip: Ipv4Addr, ports: Ports) -> anyhow::Result<Self> {
        let mut cluster = Self::create(binary, n, base_ip, ports, "")?;
        for i in 0..n {
            cluster.start_site(i)?;
        }
        Ok(cluster)
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// Whether the cluster has no site (never, once created).
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// The directory holding keys, configs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Site `i`'s name (`alpha`, `beta`, …).
    pub fn name(&self, i: usize) -> &str {
        &self.sites[i].name
    }

    /// Site `i`'s address, also its service address.
    pub fn ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.sites[i].ip)
    }

    /// Site `i`'s DNS address.
    pub fn dns_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.ip(i), self.ports.dns)
    }

    /// Site `i`'s control endpoint.
    pub fn control_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.ip(i), self.ports.control)
    }

    /// Site `i`'s gossip address.
    pub fn gossip_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.ip(i), self.ports.gossip)
    }

    /// Site `i`'s config file.
    pub fn config_path(&self, i: usize) -> &Path {
        &self.sites[i].config
    }

    /// Rewrites site `i`'s config with `edit` (given the current text, returns the new one), e.g.
    /// to give one site a setting the others lack. Takes effect at the site's next start.
    pub fn edit_config(&self, i: usize, edit: impl FnOnce(String) -> String) -> anyhow::Result<()> {
        let path = self.config_path(i);
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        fs::write(path, edit(text)).with_context(|| format!("writing {}", path.display()))
    }

    /// Site `i`'s log (stdout and stderr of every run, appended).
    pub fn log_path(&self, i: usize) -> &Path {
        &self.sites[i].log
    }

    /// Starts site `i` (it must not be running).
    pub fn start_site(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_site_under(i, &[], &[])
    }

    /// Starts site `i` as `wrapper… <binary> run --config …` with `env` added, e.g. with
    /// libfaketime preloaded to give it a clock a day behind (it must not be running). A wrapper
    /// must exec the binary, not fork it: the harness kills the process it started.
    pub fn start_site_under(
        &mut self,
        i: usize,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        let site = &mut self.sites[i];
        if site.child.is_some() {
            bail!("{} is already running", site.name);
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&site.log)
            .with_context(|| format!("opening {}", site.log.display()))?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&site.config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} for {}", binary.display(), site.name))?;
        site.child = Some(child);
        Ok(())
    }

    /// Kills site `i` with SIGKILL (a sudden site loss) and reaps it. No-op if it is not running.
    pub fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.sites[i].child.take() {
            // An error means it already exited; `wait` reaps it either way.
            let _ = child.kill();
            child.wait().with_context(|| format!("waiting for {}", self.sites[i].name))?;
        }
        Ok(())
    }

    /// Stops site `i` if it runs, then starts it again (with a new incarnation).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop(i)?;
        self.start_site(i)
    }

    /// Kills every site.
    pub fn stop_all(&mut self) {
        for i in 0..self.sites.len() {
            let _ = self.stop(i);
        }
    }

    /// Site `i`'s process id while it runs (e.g. to send it SIGHUP).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.sites[i].child.as_ref().map(Child::id)
    }

    /// Whether site `i`'s process is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.sites[i].child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until every running site accepts connections on its control endpoint, which it binds
    /// last, after QUIC and DNS. Fails early, with the end of its log, if a site exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for i in 0..self.sites.len() {
            if self.sites[i].child.is_some() {
                self.wait_site_ready(i, timeout).await?;
            }
        }
        Ok(())
    }

    /// Waits until site `i` accepts connections on its control endpoint.
    pub async fn wait_site_ready(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running(i) {
                bail!(
                    "{} exited during start-up; its log ends with:\n{}",
                    self.name(i),
                    self.log_tail(i, 15)
                );
            }
            if tokio::net::TcpStream::connect(self.control_addr(i)).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start within {timeout:?}; its log ends with:\n{}",
                    self.name(i),
                    self.log_tail(i, 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of site `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Asks the DNS server at `server` for the A records of `name` (UDP) and returns them sorted.
pub async fn query_addresses(server: SocketAddr, name: &str) -> anyhow::Result<Vec<IpAddr>> {
    let name = Name::from_ascii(name).with_context(|| format!("{name:?}"))?;
    let response =
        tokio::time::timeout(QUERY_TIMEOUT, spdu_node::dns_client::ask(server, &name, RecordType::A))
            .await
            .map_err(|_| anyhow::anyhow!("no DNS answer from {server}"))??;
    if response.metadata.response_code != ResponseCode::NoError {
        bail!("{server} answered {}", response.metadata.response_code);
    }
    let mut addrs: Vec<IpAddr> = response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    addrs.sort();
    Ok(addrs)
}

/// GETs `url` and returns the body of a 2xx answer; usable from any context, async tests
/// included (it runs its own runtime on its own thread). For tests and the demo.
pub fn http_get(url: &str) -> anyhow::Result<String> {
    let url = url.to_owned();
    on_own_runtime(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).no_proxy().build()?;
        let response = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("reading {url}"))?;
        if !status.is_success() {
            bail!("{url} answered HTTP {}: {text}", status.as_u16());
        }
        Ok(text)
    })
}

/// The view of the node whose control endpoint is `control`, as `spdu peers --json` gets it;
/// usable from any context, like [`http_get`].
pub fn fetch_view(control: SocketAddr) -> anyhow::Result<String> {
    on_own_runtime(spdu_node::peers::fetch_view(control))
}

fn on_own_runtime<T: Send + 'static>(
    task: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(task)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the HTTP client thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of the `nth` table (or array-of-tables entry) opened by `header`.
    fn section<'a>(text: &'a str, header: &str, nth: usize) -> Vec<&'a str> {
        let mut blocks: Vec<(&str, Vec<&str>)> = Vec::new();
        for line in text.lines() {
            if line.starts_with('[') {
                blocks.push((line, Vec::new()));
            } else if let Some((_, lines)) = blocks.last_mut() {
                lines.push(line);
            }
        }
        blocks.into_iter().filter(|(h, _)| *h == header).nth(nth).map(|(_, lines)| lines).unwrap_or_default()
    }

    #[test]
    fn configs_are_valid_and_describe_each_site_alike_everywhere() {
        let cluster = LocalCluster::create_with(
            Path::new("spdu"),
            3,
            Ipv4Addr::new(127, 0, 99, 11),
            Ports::default(),
            "[timing]\nheartbeat_ms = 500\n",
            |i| if i == 1 { String::new() } else { format!("weight = {}\n", 10 + i) },
        )
        .unwrap();
        for i in 0..3 {
            let text = fs::read_to_string(cluster.config_path(i)).unwrap();
            let node = section(&text, "[node]", 0);
            assert!(node.contains(&format!("name = \"{}\"", cluster.name(i)).as_str()), "{text}");
            assert_eq!(node.iter().any(|l| l.starts_with("weight")), i != 1, "{text}");
            if i != 1 {
                assert!(node.contains(&format!("weight = {}", 10 + i).as_str()), "{text}");
            }
            for p in 0..2 {
                let peer = section(&text, "[[peers]]", p);
                let j = SITE_NAMES
                    .iter()
                    .position(|n| peer.contains(&format!("name = \"{n}\"").as_str()))
                    .unwrap();
                assert_ne!(i, j);
                let weights: Vec<&&str> = peer.iter().filter(|l| l.starts_with("weight")).collect();
                match j {
                    1 => assert!(weights.is_empty(), "{text}"),
                    _ => assert_eq!(weights, [&format!("weight = {}", 10 + j).as_str()], "{text}"),
                }
            }
            assert!(section(&text, "[timing]", 0).contains(&"heartbeat_ms = 500"), "{text}");
        }

        // Without attributes, every config is one the node accepts.
        let plain =
            LocalCluster::create(Path::new("spdu"), 2, Ipv4Addr::new(127, 0, 99, 21), Ports::default(), "")
                .unwrap();
        for i in 0..2 {
            spdu_node::config::Config::load(plain.config_path(i)).unwrap();
        }
        plain.edit_config(1, |text| text.replace("ttl = 5", "ttl = 7")).unwrap();
        assert!(fs::read_to_string(plain.config_path(1)).unwrap().contains("ttl = 7\n"));
        assert_eq!(spdu_node::config::Config::load(plain.config_path(1)).unwrap().zone.ttl, 7);
    }
}
