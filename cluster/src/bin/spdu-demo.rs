//! `spdu-demo`: runs a local cluster on 127.0.0.x, loses a site and brings it back, live.
//!
//! It runs the `spdu` binary next to it, or the one named by `--spdu`. Started by `cargo run`
//! (`cargo run --release --bin spdu-demo`), it first has cargo build that binary with the same
//! profile, so the demo always runs the `spdu` of the current source.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use spdu_cluster::demo::{DemoOptions, run_demo};

/// Run a local cluster on 127.0.0.x, lose a site and bring it back, live.
#[derive(Parser)]
#[command(name = "spdu-demo", version)]
struct Cli {
    /// Number of sites.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=9))]
    sites: u8,
    /// Leave the sites running after the demo, until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// The `spdu` binary to run (default: the one next to this program).
    #[arg(long, value_name = "FILE")]
    spdu: Option<PathBuf>,
}

fn main() -> ExitCode {
    match demo(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", spdu_node::text::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Builds the `spdu` binary with the profile this program was built with (its directory's name).
fn build_spdu(cargo: &std::ffi::OsStr, me: &std::path::Path) -> anyhow::Result<()> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "--quiet", "-p", "spdu-node", "--bin", "spdu", "--manifest-path"]).arg(&manifest);
    if me.parent().and_then(|d| d.file_name()).is_some_and(|d| d == "release") {
        build.arg("--release");
    }
    let status = build.status().context("running cargo to build spdu")?;
    if !status.success() {
        bail!("building spdu failed ({status})");
    }
    Ok(())
}

fn demo(cli: Cli) -> anyhow::Result<()> {
    let binary = match cli.spdu {
        Some(path) => path,
        None => {
            let me = std::env::current_exe().context("finding this program")?;
            if let Some(cargo) = std::env::var_os("CARGO") {
                build_spdu(&cargo, &me)?;
            }
            me.with_file_name("spdu")
        }
    };
    if !binary.is_file() {
        bail!(
            "{}: no spdu binary there; run the demo with `cargo run --release --bin spdu-demo`, \
             build both with `cargo build --release`, or name the binary with --spdu",
            binary.display()
        );
    }
    let options =
        DemoOptions { sites: cli.sites.into(), keep_running: cli.keep_running, ..DemoOptions::default() };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run_demo(&binary, &options))
}
