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
    /// Build an image from a Dockerfile (RUN steps in rkube's runtime), or run a cloudbuild.yaml.
    Build(cli::build::Args),
    #[command(flatten)]
    Pod(cli::pod::Command),
}

fn main() {
    // A container monitor exec'd by a creator that had other threads (see runtime::monitor):
    // straight to it, before argument parsing or logging.
    let entry = std::env::args_os().nth(1);
    let hidden = |name: &str| entry.as_ref().is_some_and(|a| a == name);
    if hidden(rkube::runtime::monitor::EXEC_ARG) || hidden(rkube::runtime::exec::HELPER_ARG) {
        let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
        if hidden(rkube::runtime::exec::HELPER_ARG) {
            rkube::runtime::exec::helper_entry(&argv);
        }
        rkube::runtime::monitor::exec_entry(&argv);
    }
    rkube::runtime::monitor::enable_exec_entry();
    // Run as `rkube-runc` (by that program, or through a link), it is the runc-compatible runtime
    // other tools name (`podman --runtime rkube-runc`, containerd's runc shim `BinaryName`).
    let mut argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let as_runc = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == cli::runtime::RUNC_NAME);
    if as_runc {
        if argv.get(1).is_some_and(|a| a == "--version" || a == "-v") {
            println!("{} version {}\nspec: 1.2.0", cli::runtime::RUNC_NAME, env!("CARGO_PKG_VERSION"));
            std::process::exit(0);
        }
        argv.splice(0..1, ["rkubelet".to_string(), "runtime".to_string()]);
    }
    let cli = Cli::parse_from(&argv);
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
        Command::Runtime(args) => cli::runtime::run(args, &argv),
        Command::Build(args) => cli::build::run(args),
        Command::Pod(command) => cli::pod::run(command),
    };
    match result {
        Ok(code) => std::process::exit(code),
        // Under runc's name, as runc prints it (logrus text), for the callers that read it.
        Err(e) if as_runc => {
            let now = k8s_openapi::chrono::Utc::now()
                .to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Secs, true);
            eprintln!("time={now:?} level=error msg={:?}", format!("{e:#}"));
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("rkubelet: {e:#}");
            std::process::exit(1);
        }
    }
}
