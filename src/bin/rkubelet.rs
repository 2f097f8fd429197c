//! `rkubelet`: the node agent and its container runtime. A thin main: parse, set up logging, dispatch.

use clap::{Parser, Subcommand};
use rkube::cli;

/// rkubelet — run Kubernetes Pods on this Linux host with a built-in container runtime.
#[derive(Parser)]
#[command(name = "rkubelet", version, about, long_about = None)]
struct Cli {
    /// Log filter (e.g. `info`, `rkube=debug`); also read from RUST_LOG.
    #[arg(long, global = true, env = "RKUBE_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Pull, push, tag, list, remove, inspect and import images.
    Image(cli::image::Args),
    /// A runc-compatible runtime interface on OCI bundles.
    Runtime(cli::runtime::Args),
    #[command(flatten)]
    Pod(cli::pod::Command),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| cli.log.clone().into()),
        )
        .with_writer(std::io::stderr)
        // At debug level each stage of a command prints its duration when it ends.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();
    let result = match cli.command {
        Command::Image(args) => cli::image::run(args),
        Command::Runtime(args) => cli::runtime::run(args),
        Command::Pod(command) => cli::pod::run(command),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rkubelet: {e:#}");
            std::process::exit(1);
        }
    }
}
