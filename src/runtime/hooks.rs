//! OCI hooks (`hooks` in the spec): the six kinds, their checks, and running one list.
//!
//! Where each kind runs (after the spec and runc):
//! - `prestart` and `createRuntime`: in the runtime's namespaces, by the creator, once init has
//!   built the mounts and before it pivots (init waits for them); status `creating`, host pid.
//! - `createContainer`: by init, in the container's namespaces, before `pivot_root` (so its path
//!   resolves on the host tree); status `creating`, the pid as the container sees it.
//! - `startContainer`: by init once `start` opened and was answered on the exec fifo, just before
//!   the program's `execve`, with the container's user and capabilities; status `created`. As in
//!   runc, `start` does not wait for them: a failing one stops the container (init exits with the
//!   error on the container's stderr) while `start` runs the poststart hooks.
//! - `poststart`: by `start`, once the program runs; status `running`. A failure is a warning.
//! - `poststop`: by `delete` (and a failed `create`) after everything is removed; status
//!   `stopped`. A failure is a warning.
//!
//! Each hook gets the state JSON on stdin, its own `args` (with `args[0]` as argv[0]) and `env`
//! (none given: the caller's environment, as Go's os/exec does; for the two init runs, the
//! container process's environment, as in runc's init), and is killed after `timeout`
//! seconds. A list stops at the first failing hook. Output is kept and quoted in the error.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One hook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hook {
    /// Absolute path of the program.
    pub path: PathBuf,
    /// argv (argv[0] included); empty = the path.
    pub args: Vec<String>,
    /// Environment; `None` inherits the caller's.
    pub env: Option<Vec<String>>,
    /// Seconds before the hook is killed.
    pub timeout: Option<u64>,
}

/// The hooks of a container, by kind, each list in spec order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hooks {
    /// `prestart` (deprecated; runs with `createRuntime`).
    pub prestart: Vec<Hook>,
    /// `createRuntime`.
    pub create_runtime: Vec<Hook>,
    /// `createContainer`.
    pub create_container: Vec<Hook>,
    /// `startContainer`.
    pub start_container: Vec<Hook>,
    /// `poststart`.
    pub poststart: Vec<Hook>,
    /// `poststop`.
    pub poststop: Vec<Hook>,
}

impl Hooks {
    /// Whether init must stop after its mounts for the creator's `prestart`/`createRuntime`.
    pub fn runtime_hooks_at_create(&self) -> bool {
        !self.prestart.is_empty() || !self.create_runtime.is_empty()
    }
}

/// Errors of a hook, naming its kind, position and program.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A hook field is invalid.
    #[error("hooks.{kind}[{index}]: {reason}")]
    Invalid {
        /// Kind.
        kind: &'static str,
        /// Position in the list.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The hook could not be started or waited for.
    #[error("hooks.{kind}[{index}] {path}: {source}")]
    Run {
        /// Kind.
        kind: &'static str,
        /// Position.
        index: usize,
        /// Program.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The hook failed or timed out.
    #[error("hooks.{kind}[{index}] {path}: {outcome}{output}")]
    Failed {
        /// Kind.
        kind: &'static str,
        /// Position.
        index: usize,
        /// Program.
        path: String,
        /// Exit status or timeout.
        outcome: String,
        /// Its output, quoted (empty when none).
        output: String,
    },
}

/// Converts and checks the spec's hooks: absolute paths, timeouts above zero.
pub fn from_oci(hooks: Option<&oci_spec::runtime::Hooks>) -> Result<Hooks, HookError> {
    let Some(h) = hooks else { return Ok(Hooks::default()) };
    let list =
        |kind: &'static str, list: &Option<Vec<oci_spec::runtime::Hook>>| -> Result<Vec<Hook>, HookError> {
            list.iter()
                .flatten()
                .enumerate()
                .map(|(index, hook)| {
                    let invalid = |reason: &str| HookError::Invalid { kind, index, reason: reason.into() };
                    if !hook.path().is_absolute() {
                        return Err(invalid("path must be absolute"));
                    }
                    let timeout = match hook.timeout() {
                        Some(t) if t <= 0 => return Err(invalid("timeout must be greater than zero")),
                        Some(t) => Some(t as u64),
                        None => None,
                    };
                    Ok(Hook {
                        path: hook.path().clone(),
                        args: hook.args().clone().unwrap_or_default(),
                        env: hook.env().clone(),
                        timeout,
                    })
                })
                .collect()
        };
    #[allow(deprecated)]
    let prestart = list("prestart", h.prestart())?;
    Ok(Hooks {
        prestart,
        create_runtime: list("createRuntime", h.create_runtime())?,
        create_container: list("createContainer", h.create_container())?,
        start_container: list("startContainer", h.start_container())?,
        poststart: list("poststart", h.poststart())?,
        poststop: list("poststop", h.poststop())?,
    })
}

/// The state a hook reads on stdin.
pub fn state_json(
    id: &str,
    status: &str,
    pid: Option<i32>,
    bundle: &Path,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut state = serde_json::json!({
        "ociVersion": "1.2.0",
        "id": id,
        "status": status,
        "bundle": bundle,
        "annotations": annotations,
    });
    if let Some(pid) = pid {
        state["pid"] = pid.into();
    }
    state.to_string().into_bytes()
}

/// Runs `hooks` (of `kind`) in order, each with `state` on stdin; stops at the first failure.
pub fn run_all(kind: &'static str, hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    for (index, hook) in hooks.iter().enumerate() {
        run_one(kind, index, hook, state)?;
    }
    Ok(())
}

/// Runs the hooks init runs (createContainer, startContainer) as [`run_all`] does; one without an
/// `env` of its own gets `process_env`, the container process's (runc's init has already made its
/// environment the process's when it runs them).
pub fn run_all_with_env(
    kind: &'static str,
    hooks: &[Hook],
    state: &[u8],
    process_env: &[String],
) -> Result<(), HookError> {
    for (index, hook) in hooks.iter().enumerate() {
        let env = Some(hook.env.clone().unwrap_or_else(|| process_env.to_vec()));
        run_one(kind, index, &Hook { env, ..hook.clone() }, state)?;
    }
    Ok(())
}

fn run_one(kind: &'static str, index: usize, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let path = hook.path.display().to_string();
    let run_err = |source: std::io::Error| HookError::Run { kind, index, path: path.clone(), source };
    let mut cmd = std::process::Command::new(&hook.path);
    if let Some((first, rest)) = hook.args.split_first() {
        cmd.arg0(first).args(rest);
    }
    if let Some(env) = &hook.env {
        cmd.env_clear();
        for entry in env {
            match entry.split_once('=') {
                Some((k, v)) => cmd.env(k, v),
                None => cmd.env(entry, ""),
            };
        }
    }
    // Output goes to one file (a pipe could fill up while we wait, and the hook's children may
    // keep it open after it exits); read back for the error.
    let mut output = std::fs::File::from(
        nix::sys::memfd::memfd_create(c"rkube-hook-output", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| run_err(e.into()))?,
    );
    cmd.stdin(std::process::Stdio::piped())
        .stdout(output.try_clone().map_err(run_err)?)
        .stderr(output.try_clone().map_err(run_err)?);
    let mut child = cmd.spawn().map_err(run_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine (EPIPE).
        let _ = stdin.write_all(state);
    }
    let deadline = hook.timeout.map(|t| Instant::now() + Duration::from_secs(t));
    let mut pause = Duration::from_micros(200);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(run_err)? {
            break Some(status);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    if status.is_some_and(|s| s.success()) {
        return Ok(());
    }
    let outcome = match status {
        None => format!("ran past its timeout of {}s", hook.timeout.unwrap_or_default()),
        Some(s) => format!("failed: {s}"),
    };
    let mut text = String::new();
    use std::io::Seek;
    let _ = output.seek(std::io::SeekFrom::Start(0));
    let _ = output.take(4096).read_to_string(&mut text);
    let text = text.trim();
    let output = if text.is_empty() { String::new() } else { format!(": {text:?}") };
    Err(HookError::Failed { kind, index, path, outcome, output })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout: Option<u64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: Some(vec!["ONLY=1".into()]),
            timeout,
        }
    }

    #[test]
    fn runs_in_order_with_state_env_and_args() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("read s; echo \"$0 $ONLY ${{HOME:-nohome}} $s\" >> {}", out.display());
        let state = state_json("c1", "creating", Some(42), Path::new("/b"), &BTreeMap::new());
        run_all("prestart", &[hook(&script, None), hook(&script, Some(5))], &state).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("sh 1 nohome {"), "{text}");
        let json: serde_json::Value = serde_json::from_str(lines[0].splitn(4, ' ').nth(3).unwrap()).unwrap();
        assert_eq!(
            (json["id"].as_str(), json["status"].as_str(), json["pid"].as_i64()),
            (Some("c1"), Some("creating"), Some(42))
        );
    }

    #[test]
    fn stops_at_the_first_failure_and_quotes_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("second");
        let second = hook(&format!("touch {}", marker.display()), None);
        let err =
            run_all("createRuntime", &[hook("echo oops >&2; exit 3", None), second], b"{}").unwrap_err();
        assert_eq!(err.to_string(), "hooks.createRuntime[0] /bin/sh: failed: exit status: 3: \"oops\"");
        assert!(!marker.exists());
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed() {
        let start = Instant::now();
        let err = run_all("poststop", &[hook("sleep 30", Some(1))], b"{}").unwrap_err();
        assert!(err.to_string().contains("ran past its timeout of 1s"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn checks_paths_and_timeouts() {
        let parse = |v: serde_json::Value| from_oci(Some(&serde_json::from_value(v).unwrap()));
        let err = parse(serde_json::json!({"poststart": [{"path": "rel"}]})).unwrap_err();
        assert_eq!(err.to_string(), "hooks.poststart[0]: path must be absolute");
        let err = parse(serde_json::json!({"createRuntime": [{"path": "/x", "timeout": 0}]})).unwrap_err();
        assert!(err.to_string().contains("timeout must be greater than zero"));
        let ok = parse(serde_json::json!({"prestart": [{"path": "/x", "args": ["x", "1"]}]})).unwrap();
        assert!(ok.runtime_hooks_at_create());
    }
}
