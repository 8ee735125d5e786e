//! The `spdu` command line: parses arguments and calls into `spdu_node`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use spdu_keys::SecretKey;
use spdu_node::config::{Config, load_control_address};

/// Multi-site DNS failover: each site's node probes its peers, gossips signed observations and
/// serves the pool zone's DNS.
#[derive(Parser)]
#[command(name = "spdu", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate this node's private key (mode 0600) and print its public key.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the public key of a private-key file, for the peers' rosters.
    Pubkey {
        /// The private-key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Run the node until SIGINT or SIGTERM.
    Run {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show the running node's signed view of the cluster.
    Peers {
        /// The config file (only `node.control` is read).
        #[arg(long, value_name = "FILE", required_unless_present = "control")]
        config: Option<PathBuf>,
        /// The control endpoint, instead of reading it from the config.
        #[arg(long, value_name = "ADDR", conflicts_with = "config")]
        control: Option<SocketAddr>,
        /// Print the view as JSON, as the node sent it (keys, signed observations).
        #[arg(long)]
        json: bool,
    },
    /// Explain what the running node answers for a pool name, and why (each site: qualifies or
    /// not and why, priority, weight, latency, in the answer or not and why).
    Explain {
        /// The pool name as configured ("api", "@" for the apex).
        name: String,
        /// The config file (only `node.control` is read).
        #[arg(long, value_name = "FILE", required_unless_present = "control")]
        config: Option<PathBuf>,
        /// The control endpoint, instead of reading it from the config.
        #[arg(long, value_name = "ADDR", conflicts_with = "config")]
        control: Option<SocketAddr>,
        /// Print the explanation as JSON, as the node sent it.
        #[arg(long)]
        json: bool,
    },
    /// Print the running node's pool zone, as DNS serves it now, as an RFC 1035 master file
    /// (SOA, NS, every name's addresses and TTL).
    Zone {
        /// The config file (only `node.control` is read).
        #[arg(long, value_name = "FILE", required_unless_present = "control")]
        config: Option<PathBuf>,
        /// The control endpoint, instead of reading it from the config.
        #[arg(long, value_name = "ADDR", conflicts_with = "config")]
        control: Option<SocketAddr>,
    },
    /// Nagios / Icinga plugin: one status line with performance data; exit 0 OK, 1 WARNING (a
    /// peer out or unreachable, sites disagree on roster or policies), 2 CRITICAL (this site out
    /// of its own answer or its service check failing), 3 UNKNOWN (node not reachable).
    CheckHealth {
        /// The config file (only `node.control` is read).
        #[arg(long, value_name = "FILE", required_unless_present = "control")]
        config: Option<PathBuf>,
        /// The control endpoint, instead of reading it from the config.
        #[arg(long, value_name = "ADDR", conflicts_with = "config")]
        control: Option<SocketAddr>,
    },
    /// Check a config file and its key file, then exit.
    Check {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Generate this site's DNSSEC zone-signing key (a CSK, mode 0600) and print its DNSKEY.
    DnssecKeygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// 13 (ECDSAP256SHA256) or 15 (Ed25519).
        #[arg(long, default_value_t = 13, value_parser = clap::value_parser!(u8).range(13..=15))]
        algorithm: u8,
        /// The pool zone: print the DNSKEY record with it as owner instead of `@`.
        #[arg(long, value_name = "ZONE")]
        zone: Option<String>,
    },
    /// Print the DS record (SHA-256) of every site's DNSSEC key, for the parent zone.
    Ds {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the manual page (roff), e.g. `spdu man | man -l -`.
    Man,
    /// Print the completion script for a shell, e.g. `spdu completions bash`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A monitoring system reads any exit code but 0-3 as CRITICAL: a plugin's usage error
        // is UNKNOWN.
        Err(e) if e.use_stderr() && std::env::args_os().nth(1).is_some_and(|a| a == "check-health") => {
            let _ = e.print();
            println!("SPDU UNKNOWN - usage error, see `spdu check-health --help`");
            return ExitCode::from(spdu_node::check_health::State::Unknown.code());
        }
        Err(e) => e.exit(),
    };
    if let Command::CheckHealth { config, control } = cli.command {
        return check_health(control, config);
    }
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", spdu_node::text::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Keygen { out } => {
            let key = SecretKey::generate_file(&out)?;
            println!("{}", key.public());
            Ok(())
        }
        Command::Pubkey { key } => {
            println!("{}", SecretKey::load_file(&key)?.public());
            Ok(())
        }
        Command::Run { config } => {
            init_logging();
            spdu_node::limits::raise_open_files();
            runtime()?.block_on(spdu_node::run::run(&config))
        }
        Command::Peers { config, control, json } => {
            let control = control_address(control, config)?;
            client_runtime()?.block_on(spdu_node::peers::print_view(control, json))
        }
        Command::Explain { name, config, control, json } => {
            let control = control_address(control, config)?;
            client_runtime()?.block_on(spdu_node::explain::print_explanation(control, &name, json))
        }
        Command::Zone { config, control } => {
            let control = control_address(control, config)?;
            client_runtime()?.block_on(spdu_node::zone::print_zone(control))
        }
        Command::Check { config } => check(&config),
        Command::DnssecKeygen { out, algorithm, zone } => {
            spdu_node::dnssec_keys::keygen(&out, algorithm, zone.as_deref())
        }
        Command::Ds { config } => spdu_node::dnssec_keys::print_ds(&config),
        Command::CheckHealth { .. } => unreachable!("main runs check-health"),
        Command::Man => spdu_node::manual::render(Cli::command(), &mut std::io::stdout().lock()),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "spdu", &mut std::io::stdout().lock());
            Ok(())
        }
    }
}

/// `spdu check-health`: prints the plugin's line; its state is the exit code.
fn check_health(control: Option<SocketAddr>, config: Option<PathBuf>) -> ExitCode {
    use spdu_node::check_health::{Verdict, check};
    let verdict = match control_address(control, config) {
        Ok(control) => match client_runtime() {
            Ok(runtime) => runtime.block_on(check(control)),
            Err(e) => Verdict::unknown(&spdu_node::text::error_chain(&e)),
        },
        Err(e) => Verdict::unknown(&spdu_node::text::error_chain(&e)),
    };
    println!("{}", verdict.line);
    ExitCode::from(verdict.state.code())
}

fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let key = config.load_key()?;
    if let Some(dnssec) = &config.dnssec {
        let zone_key = dnssec.load_key(path)?;
        println!(
            "{}: dnssec: key tag {} algorithm {}, {} peer keys",
            path.display(),
            zone_key.public().key_tag(),
            zone_key.public().algorithm(),
            dnssec.peers.len()
        );
    }
    let names: Vec<String> =
        config.protocol.policy.rules.iter().map(|rule| format!("{} ({})", rule.name, rule.policy)).collect();
    println!(
        "{}: ok: node {} ({}), cluster {}, {} peers, zone {}, names {}",
        path.display(),
        config.node.name,
        key.public(),
        config.cluster,
        config.peers.len(),
        config.zone.origin,
        names.join(", ")
    );
    Ok(())
}

/// `--control`, or `node.control` read from `--config`.
fn control_address(control: Option<SocketAddr>, config: Option<PathBuf>) -> anyhow::Result<SocketAddr> {
    match (control, config) {
        (Some(control), _) => Ok(control),
        (None, Some(config)) => load_control_address(&config),
        (None, None) => unreachable!("clap requires --config or --control"),
    }
}

/// A runtime for one request to the control endpoint.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn,quinn=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
