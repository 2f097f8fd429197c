//! `rkubelet image` subcommands.

/// Arguments of `rkubelet image`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rkubelet image`, returning the process exit code.
pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("rkubelet image: not built yet")
}
