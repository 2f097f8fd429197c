//! `rkubelet runtime` subcommands.

/// Arguments of `rkubelet runtime`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rkubelet runtime`, returning the process exit code.
pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("rkubelet runtime: not built yet")
}
