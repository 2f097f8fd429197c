//! `rkubelet runtime`: a runc-compatible command line on OCI bundles
//! (`create|start|state|kill|delete|run|exec|list`, global `--root`, `--log`, `--log-format`).
//!
//! rkubelet's own global `--log` (its log filter) shares the name with runc's `--log FILE`; when
//! a `--log` value follows the `runtime` word on the command line it is taken as the runc log
//! file (containerd and podman put it there).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;

use crate::runtime::tty::{Console, WindowSize};
use crate::runtime::{CreateRequest, ExecRequest, Runtime};

/// Arguments of `rkubelet runtime`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding container state.
    #[arg(long, default_value = "/run/rkube/runtime")]
    root: PathBuf,
    /// Format of the --log file: text or json.
    #[arg(long = "log-format", default_value = "text")]
    log_format: String,
    /// Accepted for compatibility; cgroups are managed directly.
    #[arg(long = "systemd-cgroup")]
    systemd_cgroup: bool,
    /// Accepted for compatibility.
    #[arg(long)]
    debug: bool,
    /// cgroup hierarchy root.
    #[arg(long = "cgroup-root", env = "RKUBE_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// cgroup parent for specs without linux.cgroupsPath (under the hierarchy root). Without it,
    /// runc's placement: `<id>` under the caller's own cgroup, as relative cgroupsPaths are.
    #[arg(long = "cgroup-parent", env = "RKUBE_CGROUP_PARENT")]
    cgroup_parent: Option<String>,
    #[command(subcommand)]
    command: Box<Command>,
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write the container's pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the terminal master (required with process.terminal).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted for compatibility.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for compatibility.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass this many of our descriptors after stdio (3, 4, …) to the container's process at
    /// the same numbers; those not open are skipped.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Write stdout/stderr to this file in the CRI log format instead of inheriting them.
    #[arg(long = "cri-log")]
    cri_log: Option<PathBuf>,
    /// Container id.
    id: String,
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// process.json with the process to run.
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Working directory.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Environment variables (KEY=value).
    #[arg(short, long)]
    env: Vec<String>,
    /// User (uid[:gid] or name).
    #[arg(short, long)]
    user: Option<String>,
    /// Allocate a terminal: sent to --console-socket, or relayed to our own terminal.
    #[arg(short, long)]
    tty: bool,
    /// Unix socket that receives the terminal master (with --tty).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Return once the process runs instead of waiting for it.
    #[arg(short, long)]
    detach: bool,
    /// Write the process's pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Add a capability to the process's bounding, effective and permitted sets (repeatable).
    #[arg(short = 'c', long = "cap")]
    cap: Vec<String>,
    /// Set no_new_privs for the process (setuid binaries and file capabilities stop working).
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    /// Supplementary group ids of the process, replacing the container's (repeatable).
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    /// Pass this many of our descriptors after stdio (3, 4, …) at the same numbers.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Run the process even in a paused container (it starts frozen).
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    /// Container id.
    id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a container from a bundle; it waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Freeze every process of a running container (the cgroup freezer).
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Print the OCI state as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal (name or number, default SIGTERM).
    Kill {
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
        /// Container id.
        id: String,
        /// Signal.
        signal: Option<String>,
    },
    /// Delete a container (with --force, kill it first).
    Delete {
        /// Kill a running container.
        #[arg(short, long)]
        force: bool,
        /// Container id.
        id: String,
    },
    /// Create, start, wait and delete (or only create and start with --detach).
    Run {
        /// Do not wait for the container.
        #[arg(short, long)]
        detach: bool,
        #[command(flatten)]
        create: CreateArgs,
    },
    /// Run a process in a running container.
    Exec(ExecArgs),
    /// List containers.
    List,
    /// Test helper run inside containers: tries one operation and prints the errno name.
    #[command(name = "__probe", hide = true)]
    Probe {
        /// `write-exe` or a system call from the probe list.
        what: String,
    },
}

/// System calls the probe may call with zero arguments (harmless: they fail or do nothing).
const PROBE_SYSCALLS: [&str; 10] = [
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "kexec_load",
    "init_module",
    "delete_module",
    "unshare",
    "userfaultfd",
    "clone3",
];

/// Runs the probe; prints `OK` or the errno name (e.g. `EPERM`).
fn probe(what: &str) -> anyhow::Result<i32> {
    let errno = if what == "write-exe" {
        match std::fs::OpenOptions::new().write(true).truncate(true).open("/proc/self/exe") {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(-1),
        }
    } else if PROBE_SYSCALLS.contains(&what) {
        let nr = crate::runtime::syscalls::number(what).context("unknown syscall")?;
        crate::sys::container::probe_syscall_with_zero_args(nr)
    } else {
        anyhow::bail!("unknown probe {what}");
    };
    if errno == 0 {
        println!("OK");
    } else {
        println!("{}", nix::errno::Errno::from_raw(errno));
    }
    Ok(0)
}

/// The name under which the `rkubelet` binary is `rkubelet runtime` (a link installed beside it).
pub const RUNC_NAME: &str = "rkube-runc";

/// Runs `rkubelet runtime`, returning the process exit code. `argv` is the command line as
/// parsed (with `rkubelet runtime` in front when invoked as [`RUNC_NAME`]).
pub fn run(args: Args, argv: &[String]) -> anyhow::Result<i32> {
    let log_file = log_file_from_argv(argv.iter().cloned());
    let json = args.log_format == "json";
    let result = dispatch(args);
    if let (Err(e), Some(path)) = (&result, &log_file) {
        write_log(path, json, &format!("{e:#}"));
    }
    result
}

/// Finds `--log FILE` / `--log=FILE` after the `runtime` word.
fn log_file_from_argv(argv: impl Iterator<Item = String>) -> Option<PathBuf> {
    let args: Vec<String> = argv.skip_while(|a| a != "runtime").collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--log" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--log=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

fn write_log(path: &Path, json: bool, msg: &str) {
    let time = crate::runtime::logfmt::rfc3339_nanos(std::time::SystemTime::now());
    let line = if json {
        serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
    } else {
        format!("time={time} level=error msg={msg:?}")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("unknown signal {s}"));
    }
    let name = s.to_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    Signal::from_str(&name).with_context(|| format!("unknown signal {s}"))
}

/// Where a new container's terminal goes.
enum TerminalPlan {
    /// No terminal (`process.terminal` false).
    None,
    /// Sent to the connected `--console-socket`.
    Socket(Console),
    /// Relayed to our own terminal (a foreground `run` without a socket, as runc does).
    Relay,
}

/// How a create request is used.
#[derive(Clone, Copy, PartialEq)]
enum Use {
    /// `create`: the container waits for `start`.
    Create,
    /// `run -d`: started at once.
    RunDetached,
    /// `run`: started at once and waited for; may relay the terminal itself.
    RunForeground,
}

/// The create request and where its terminal goes. Re-execs from a sealed binary first when the
/// container needs it (before connecting the console socket: a re-exec would drop the
/// connection the peer has already accepted).
fn create_request(
    runtime: &Runtime,
    c: &CreateArgs,
    usage: Use,
) -> anyhow::Result<(CreateRequest, TerminalPlan)> {
    // First: nothing of ours is open yet that could take one of their numbers.
    let preserved_fds = preserved_fds(c.preserve_fds);
    let bundle =
        std::fs::canonicalize(&c.bundle).with_context(|| format!("bundle {}", c.bundle.display()))?;
    let config = bundle.join("config.json");
    let spec = load_spec(&config)?;
    if usage == Use::Create || runtime.run_needs_sealed_caller(&spec) {
        crate::runtime::exe_seal::ensure_sealed()?;
    }
    let process = spec.process().as_ref();
    let terminal = process.and_then(|p| p.terminal()).unwrap_or(false);
    let plan = match &c.console_socket {
        None if terminal && usage == Use::RunForeground => TerminalPlan::Relay,
        _ => {
            crate::runtime::tty::check_console_flags(terminal, c.console_socket.is_some())?;
            match &c.console_socket {
                Some(path) => TerminalPlan::Socket(Console::connect(path, process.and_then(console_size))?),
                None => TerminalPlan::None,
            }
        }
    };
    let req = CreateRequest {
        id: c.id.clone(),
        bundle,
        spec,
        rootfs: None,
        log_path: c.cri_log.clone(),
        pid_file: c.pid_file.clone(),
        preserved_fds,
    };
    Ok((req, plan))
}

/// `process.consoleSize` as a window size.
fn console_size(process: &oci_spec::runtime::Process) -> Option<WindowSize> {
    let size = process.console_size()?;
    let cells = |n: u64| u16::try_from(n).unwrap_or(u16::MAX);
    Some(WindowSize { rows: cells(size.height()), cols: cells(size.width()) })
}

fn dispatch(args: Args) -> anyhow::Result<i32> {
    // Invoked as `rkube-runc`: runc's process model for containers that outlive the command
    // (a foreground `run` waits for its container, so it keeps the monitor).
    let as_runc = std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|n| n == RUNC_NAME))
        .unwrap_or(false);
    let foreground = matches!(&*args.command, Command::Run { detach: false, .. });
    let runtime = Runtime {
        root: args.root.clone(),
        cgroup_root: args.cgroup_root.clone(),
        cgroup_parent: args.cgroup_parent.clone().unwrap_or_default(),
        monitor_binary: crate::runtime::monitor::installed_binary(),
        reparent_init: as_runc && !foreground,
        cgroups_relative_to_caller: true,
    };
    match *args.command {
        Command::Create(c) => {
            let (req, plan) = create_request(&runtime, &c, Use::Create)?;
            let console = match plan {
                TerminalPlan::Socket(console) => Some(console),
                TerminalPlan::None | TerminalPlan::Relay => None,
            };
            runtime.create_with_console(&req, console)?;
            Ok(0)
        }
        Command::Start { id } => {
            runtime.start(&id)?;
            Ok(0)
        }
        Command::Pause { id } => {
            runtime.pause(&id)?;
            Ok(0)
        }
        Command::Resume { id } => {
            runtime.resume(&id)?;
            Ok(0)
        }
        Command::State { id } => {
            crate::sys::container::default_sigpipe();
            println!("{}", serde_json::to_string_pretty(&runtime.state(&id)?)?);
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let sig = parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            runtime.kill(&id, sig, all)?;
            Ok(0)
        }
        Command::Delete { force, id } => {
            runtime.delete(&id, force)?;
            Ok(0)
        }
        Command::Run { detach, create } => {
            let (req, plan) = create_request(
                &runtime,
                &create,
                if detach { Use::RunDetached } else { Use::RunForeground },
            )?;
            // Takes the console by value: it is closed once create has handed it on (or failed).
            let run = |console: Option<Console>| -> anyhow::Result<i32> {
                runtime.create_with_console(&req, console)?;
                if let Err(e) = runtime.start(&req.id) {
                    let _ = runtime.delete(&req.id, true);
                    return Err(e.into());
                }
                if detach {
                    return Ok(0);
                }
                let exit = runtime.wait(&req.id, None);
                runtime.delete(&req.id, true)?;
                Ok(exit?.code)
            };
            match plan {
                TerminalPlan::None => run(None),
                TerminalPlan::Socket(console) => run(Some(console)),
                TerminalPlan::Relay => crate::cli::terminal::run_attached(|console| run(Some(console))),
            }
        }
        Command::Exec(e) => {
            let (mut req, tty, size) = exec_request(&runtime, &e)?;
            let (id, console_socket) = (e.id, e.console_socket);
            // runc's rules, except that -t without a socket relays to our own terminal.
            let relay_here = tty && console_socket.is_none() && !req.detach;
            if !relay_here {
                crate::runtime::tty::check_console_flags(tty, console_socket.is_some())?;
            }
            crate::runtime::exe_seal::ensure_sealed()?;
            match console_socket {
                Some(path) => {
                    req.terminal = Some(Console::connect(&path, size)?);
                    Ok(runtime.exec(&id, &req)?)
                }
                // `move`: the request (holding the console) must be dropped when exec returns.
                None if tty => crate::cli::terminal::run_attached(move |console| {
                    req.terminal = Some(console);
                    Ok(runtime.exec(&id, &req)?)
                }),
                None => Ok(runtime.exec(&id, &req)?),
            }
        }
        Command::Probe { what } => probe(&what),
        Command::List => {
            crate::sys::container::default_sigpipe();
            for s in runtime.list()? {
                println!("{}\t{}\t{:?}\t{}", s.id, s.pid, s.status, s.bundle.display());
            }
            Ok(0)
        }
    }
}

/// Reads a bundle's config.json; a field that does not decode is named by its path
/// (`load …/config.json: process.capabilities.bounding[0]: no variant for TEST_CAP …`).
fn load_spec(path: &Path) -> anyhow::Result<Spec> {
    let bytes = std::fs::read(path).with_context(|| format!("load {}", path.display()))?;
    let mut decoder = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut decoder).map_err(|e| {
        let at = e.path().to_string();
        let field = if at == "." { String::new() } else { format!("{at}: ") };
        anyhow::anyhow!("load {}: {field}{}", path.display(), e.inner())
    })
}

/// `--preserve-fds N`: which of the descriptors 3 … 3+N-1 are open.
fn preserved_fds(n: u32) -> Vec<std::os::fd::RawFd> {
    // No descriptor can be at or above the open-files limit.
    let limit =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1 << 20, |l| l.0);
    let end = i32::try_from(u64::from(n).saturating_add(3).min(limit)).unwrap_or(i32::MAX);
    crate::sys::container::open_fds(3..end)
}

/// The exec request from `exec`'s arguments and its `--process` file: (request, terminal wanted,
/// initial terminal size).
fn exec_request(runtime: &Runtime, e: &ExecArgs) -> anyhow::Result<(ExecRequest, bool, Option<WindowSize>)> {
    // First: nothing of ours is open yet that could take one of their numbers.
    let preserved_fds = preserved_fds(e.preserve_fds);
    let mut req = ExecRequest {
        args: e.command.clone(),
        cwd: e.cwd.clone(),
        user: e.user.clone(),
        detach: e.detach,
        pid_file: e.pid_file.clone(),
        preserved_fds,
        ignore_paused: e.ignore_paused,
        ..Default::default()
    };
    let mut tty = e.tty;
    let mut size = None;
    if let Some(path) = &e.process {
        let p: oci_spec::runtime::Process =
            serde_json::from_slice(&std::fs::read(path).with_context(|| format!("read {}", path.display()))?)
                .with_context(|| format!("parse {}", path.display()))?;
        let mut alone = Spec::default();
        alone.set_process(Some(p.clone()));
        if let Some((field, reason)) =
            crate::runtime::fields::first_unsupported(&alone, crate::runtime::fields::HostFeatures::detect)
        {
            anyhow::bail!("{}: {field} {reason}", path.display());
        }
        req.args = p.args().clone().unwrap_or_default();
        req.env = p.env().clone();
        req.cwd = Some(p.cwd().clone());
        req.user = Some(format!("{}:{}", p.user().uid(), p.user().gid()));
        tty |= p.terminal().unwrap_or(false);
        // Its security settings too (containerd's shim passes the whole process).
        if let Some(c) = p.capabilities() {
            req.overrides.caps = Some(crate::runtime::caps::CapPlan::from_oci(c)?);
        }
        req.overrides.no_new_privileges = p.no_new_privileges();
        req.overrides.additional_gids = p.user().additional_gids().clone();
        req.overrides.cpu_affinity = p
            .exec_cpu_affinity()
            .as_ref()
            .map(|a| crate::runtime::config::cpu_affinity_from(a, "execCPUAffinity"))
            .transpose()?;
        size = console_size(&p);
    }
    // The flags after the file, as runc applies them.
    for name in &e.cap {
        let upper = name.to_uppercase();
        let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
        full.parse::<caps::Capability>()
            .map_err(|_| anyhow::anyhow!("exec --cap: unknown capability {name:?}"))?;
        req.overrides.add_caps.push(full);
    }
    if e.no_new_privs {
        req.overrides.no_new_privileges = Some(true);
    }
    if !e.additional_gids.is_empty() {
        req.overrides.additional_gids = Some(e.additional_gids.clone());
    }
    if !e.env.is_empty() {
        let base = match req.env.take() {
            Some(env) => env,
            None => runtime.record(&e.id)?.config.process.env,
        };
        req.env = Some(override_env(base, e.env.clone()));
    }
    if req.args.is_empty() {
        anyhow::bail!("exec: no command given");
    }
    Ok((req, tty, size))
}

/// `exec --env K=V`: each variable replaces the one of that name (as runc), or is added.
fn override_env(mut base: Vec<String>, overrides: Vec<String>) -> Vec<String> {
    fn name(var: &str) -> &str {
        var.split_once('=').map_or(var, |(k, _)| k)
    }
    for var in overrides {
        base.retain(|b| name(b) != name(&var));
        base.push(var);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_runc_log_flag_after_runtime_word() {
        let argv = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>().into_iter();
        assert_eq!(
            log_file_from_argv(argv("rkubelet runtime --log /x/log.json create a")),
            Some("/x/log.json".into())
        );
        assert_eq!(log_file_from_argv(argv("rkubelet runtime --log=/y create a")), Some("/y".into()));
        assert_eq!(log_file_from_argv(argv("rkubelet --log debug runtime state a")), None);
    }

    #[test]
    fn console_size_comes_from_the_process_spec() {
        let process: oci_spec::runtime::Process =
            serde_json::from_value(serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0},
                "consoleSize": {"height": 30, "width": 100000}}))
            .unwrap();
        assert_eq!(console_size(&process), Some(WindowSize { rows: 30, cols: u16::MAX }));
        let plain: oci_spec::runtime::Process =
            serde_json::from_value(serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0}})).unwrap();
        assert_eq!(console_size(&plain), None);
    }

    #[test]
    fn parses_signals_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("BOGUS").is_err());
    }

    #[test]
    fn exec_env_replaces_variables_of_the_same_name() {
        let base = vec!["PATH=/bin".to_string(), "MY_VAR=from_spec".to_string(), "A=1".to_string()];
        let merged = override_env(base, vec!["MY_VAR=from_cli".into(), "B=2".into()]);
        assert_eq!(merged, ["PATH=/bin", "A=1", "MY_VAR=from_cli", "B=2"]);
    }
}
