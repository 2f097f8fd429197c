//! Seccomp: a profile model, Docker's default profile, translation from the OCI spec, and
//! compilation into classic BPF programs (with `seccompiler`, pure Rust) installed in order.
//!
//! A profile with several actions compiles into one program per action: the allow-list program
//! (match → allow, otherwise the default action) first, then one program per other action
//! (match → that action, otherwise allow). The kernel applies the most restrictive result, and
//! between equal ones (two errnos) the last installed program wins, so `clone3` → ENOSYS works.
//! The allow-list program also lets through what the other actions' rules match, so a rule less
//! restrictive than the default (a notification under an errno default) still decides its call.

use std::collections::{BTreeMap, BTreeSet};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use crate::runtime::syscalls;
use crate::sys::container::{BpfInstruction, install_seccomp_filter, install_seccomp_listener};

/// Errors while building or installing a seccomp filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile could not be compiled to BPF.
    #[error("compile seccomp profile: {0}")]
    Compile(String),
    /// The profile uses an action this runtime does not support.
    #[error("seccomp action {0:?} is not supported")]
    UnsupportedAction(String),
    /// The kernel rejected the filter.
    #[error("install seccomp filter: {0}")]
    Install(#[source] std::io::Error),
    /// The profile is malformed.
    #[error("linux.seccomp: {0}")]
    Invalid(String),
}

/// What the kernel does when a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// Let the call through.
    Allow,
    /// Fail the call with this errno.
    Errno(u32),
    /// Kill the calling thread.
    KillThread,
    /// Kill the whole process.
    KillProcess,
    /// Send SIGSYS.
    Trap,
    /// Allow and log.
    Log,
    /// Hand the call to the seccomp agent (`SCMP_ACT_NOTIFY`): the program is installed with a
    /// listener whose fd goes to the profile's [`Listener`].
    Notify,
}

/// A comparison on one argument of a system call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArgCheck {
    /// Argument index (0-5).
    pub index: u8,
    /// Comparison.
    pub op: ArgOp,
    /// Value compared against.
    pub value: u64,
}

/// Comparison operators for [`ArgCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ArgOp {
    /// `arg == value`
    Eq,
    /// `arg != value`
    Ne,
    /// `arg < value`
    Lt,
    /// `arg <= value`
    Le,
    /// `arg > value`
    Gt,
    /// `arg >= value`
    Ge,
    /// `arg & mask == value`
    MaskedEq(u64),
}

/// One rule: a system call, the action, and argument checks that must all hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    /// System call name.
    pub syscall: String,
    /// Action when the rule matches.
    pub action: Action,
    /// Argument checks (all must hold; empty = unconditional).
    pub args: Vec<ArgCheck>,
}

/// A complete seccomp profile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// Action for calls no rule matches.
    pub default: Action,
    /// The rules.
    pub rules: Vec<Rule>,
    /// The seccomp agent that receives the listener fd of [`Action::Notify`] rules.
    #[serde(default)]
    pub listener: Option<Listener>,
}

/// A seccomp agent (`linux.seccomp.listenerPath`/`listenerMetadata`): once the filter is
/// installed, the runtime connects to `path` and sends the container process state with the
/// listener fd (the OCI "container process state" message, one per connection).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listener {
    /// AF_UNIX stream socket of the agent.
    pub path: std::path::PathBuf,
    /// Opaque string passed to the agent as `metadata`.
    pub metadata: String,
}

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const AF_VSOCK: u64 = 40;

/// System calls Docker's profile never allows.
const NEVER_ALLOWED: &[&str] = &[
    "add_key",
    "keyctl",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "swapon",
    "swapoff",
    "settimeofday",
    "clock_settime",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "vhangup",
    "iopl",
    "ioperm",
    "pivot_root",
    "modify_ldt",
    "memfd_secret",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "clone3",
];

/// System calls Docker allows only when the container holds the named capability.
const NEEDS_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount2",
            "unshare",
            "name_to_handle_at",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["init_module", "finit_module", "delete_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYS_TIME", &["clock_adjtime"]),
    ("CAP_SYS_NICE", &["mbind", "set_mempolicy", "get_mempolicy", "move_pages", "migrate_pages"]),
];

/// Docker's default profile for a container whose bounding set is `caps` (names like
/// `CAP_SYS_ADMIN`): deny by EPERM, allow the usual calls, gate privileged ones by capability,
/// `clone` only without namespace flags, `clone3` → ENOSYS, filtered `personality` and `socket`.
pub fn default_profile(caps: &BTreeSet<String>) -> Profile {
    let has_sys_admin = caps.contains("CAP_SYS_ADMIN");
    let gated: BTreeSet<&str> = NEEDS_CAPABILITY
        .iter()
        .filter(|(cap, _)| !caps.contains(*cap))
        .flat_map(|(_, calls)| calls.iter().copied())
        .collect();
    let special = ["clone", "personality", "socket"];
    let mut rules: Vec<Rule> = syscalls::names()
        .filter(|n| !NEVER_ALLOWED.contains(n) && !gated.contains(n) && !special.contains(n))
        .map(|n| Rule { syscall: n.to_string(), action: Action::Allow, args: vec![] })
        .collect();
    let allow =
        |syscall: &str, args: Vec<ArgCheck>| Rule { syscall: syscall.into(), action: Action::Allow, args };
    if has_sys_admin {
        rules.push(allow("clone", vec![]));
    } else {
        rules.push(allow(
            "clone",
            vec![ArgCheck { index: 0, op: ArgOp::MaskedEq(CLONE_NAMESPACE_FLAGS), value: 0 }],
        ));
    }
    for persona in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(allow("personality", vec![ArgCheck { index: 0, op: ArgOp::Eq, value: persona }]));
    }
    rules.push(allow("socket", vec![ArgCheck { index: 0, op: ArgOp::Ne, value: AF_VSOCK }]));
    rules.push(Rule { syscall: "clone3".into(), action: Action::Errno(ENOSYS), args: vec![] });
    Profile { default: Action::Errno(EPERM), rules, listener: None }
}

/// Translates the OCI `linux.seccomp` section. Unknown system call names are skipped (as runc does).
pub fn from_oci(spec: &LinuxSeccomp) -> Result<Profile, SeccompError> {
    let errno_default = spec.default_errno_ret().unwrap_or(EPERM);
    let default = action_from_oci(spec.default_action(), errno_default)?;
    let mut rules = Vec::new();
    for entry in spec.syscalls().iter().flatten() {
        let action = action_from_oci(entry.action(), entry.errno_ret().unwrap_or(EPERM))?;
        let args: Vec<ArgCheck> = entry
            .args()
            .iter()
            .flatten()
            .map(|a| ArgCheck {
                index: a.index() as u8,
                op: match a.op() {
                    LinuxSeccompOperator::ScmpCmpNe => ArgOp::Ne,
                    LinuxSeccompOperator::ScmpCmpLt => ArgOp::Lt,
                    LinuxSeccompOperator::ScmpCmpLe => ArgOp::Le,
                    LinuxSeccompOperator::ScmpCmpEq => ArgOp::Eq,
                    LinuxSeccompOperator::ScmpCmpGe => ArgOp::Ge,
                    LinuxSeccompOperator::ScmpCmpGt => ArgOp::Gt,
                    LinuxSeccompOperator::ScmpCmpMaskedEq => ArgOp::MaskedEq(a.value()),
                },
                value: match a.op() {
                    LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
                    _ => a.value(),
                },
            })
            .collect();
        for name in entry.names() {
            rules.push(Rule { syscall: name.clone(), action, args: args.clone() });
        }
    }
    // SCMP_ACT_NOTIFY (runc's rules): never the default action (every call, the agent's own
    // included, would wait on it), never `write` (the runtime's own sync would), and only with
    // an agent to hand the listener to.
    if default == Action::Notify {
        return Err(SeccompError::Invalid("SCMP_ACT_NOTIFY cannot be the defaultAction".into()));
    }
    let notified: Vec<&str> =
        rules.iter().filter(|r| r.action == Action::Notify).map(|r| r.syscall.as_str()).collect();
    if notified.contains(&"write") {
        return Err(SeccompError::Invalid("SCMP_ACT_NOTIFY cannot be used for the write syscall".into()));
    }
    let listener = match spec.listener_path() {
        Some(path) if !notified.is_empty() => {
            if !path.is_absolute() {
                return Err(SeccompError::Invalid(format!(
                    "listenerPath {} is not absolute",
                    path.display()
                )));
            }
            Some(Listener {
                path: path.clone(),
                metadata: spec.listener_metadata().clone().unwrap_or_default(),
            })
        }
        None if !notified.is_empty() => {
            return Err(SeccompError::Invalid("SCMP_ACT_NOTIFY needs a listenerPath".into()));
        }
        // A listener without notify rules is never contacted (as runc).
        _ => None,
    };
    Ok(Profile { default, rules, listener })
}

fn action_from_oci(action: LinuxSeccompAction, errno: u32) -> Result<Action, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActErrno => Action::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => Action::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActLog => Action::Log,
        LinuxSeccompAction::ScmpActNotify => Action::Notify,
        other => return Err(SeccompError::UnsupportedAction(format!("{other:?}"))),
    })
}

fn to_seccompiler(action: Action) -> SeccompAction {
    match action {
        Action::Allow => SeccompAction::Allow,
        Action::Errno(e) => SeccompAction::Errno(e),
        Action::KillThread => SeccompAction::KillThread,
        Action::KillProcess => SeccompAction::KillProcess,
        Action::Trap => SeccompAction::Trap,
        Action::Log => SeccompAction::Log,
        // seccompiler has no user-notification action: compiled as a trap, then patched (see
        // `compile`).
        Action::Notify => SeccompAction::Trap,
    }
}

fn condition(check: &ArgCheck) -> Result<SeccompCondition, SeccompError> {
    let op = match check.op {
        ArgOp::Eq => SeccompCmpOp::Eq,
        ArgOp::Ne => SeccompCmpOp::Ne,
        ArgOp::Lt => SeccompCmpOp::Lt,
        ArgOp::Le => SeccompCmpOp::Le,
        ArgOp::Gt => SeccompCmpOp::Gt,
        ArgOp::Ge => SeccompCmpOp::Ge,
        ArgOp::MaskedEq(mask) => SeccompCmpOp::MaskedEq(mask),
    };
    SeccompCondition::new(check.index, SeccompCmpArgLen::Qword, op, check.value)
        .map_err(|e| SeccompError::Compile(e.to_string()))
}

/// Compiled BPF programs, in installation order.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    programs: Vec<Vec<BpfInstruction>>,
    /// The index of the program with the `SCMP_ACT_NOTIFY` rules (installed with a listener).
    notify: Option<usize>,
}

/// `SECCOMP_RET_TRAP`, as seccompiler emits it for [`Action::Notify`] placeholders.
const RET_TRAP: u32 = 0x0003_0000;
/// `SECCOMP_RET_USER_NOTIF`.
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// `BPF_RET | BPF_K`.
const BPF_RET_K: u16 = 0x06;

impl CompiledFilter {
    /// Number of BPF programs.
    pub fn programs(&self) -> usize {
        self.programs.len()
    }

    /// Whether a program reports to a seccomp agent (installing returns its listener).
    pub fn notifies(&self) -> bool {
        self.notify.is_some()
    }

    /// Installs every program on the calling thread; returns the listener fd of the
    /// `SCMP_ACT_NOTIFY` program, if there is one.
    pub fn install(&self) -> Result<Option<std::os::fd::OwnedFd>, SeccompError> {
        let mut listener = None;
        for (i, program) in self.programs.iter().enumerate() {
            if self.notify == Some(i) {
                listener = Some(install_seccomp_listener(program).map_err(SeccompError::Install)?);
            } else {
                install_seccomp_filter(program).map_err(SeccompError::Install)?;
            }
        }
        Ok(listener)
    }
}

/// The message for a seccomp agent (the OCI "container process state"): the container's state
/// (`state`, a JSON object as hooks get it), the process pid as the runtime sees it, the
/// listener's metadata, and the name of the one fd passed with it.
pub fn agent_message(listener: &Listener, pid: i32, state: &[u8]) -> Vec<u8> {
    let mut state: serde_json::Value = serde_json::from_slice(state).unwrap_or_default();
    // youki's agent library (`ContainerProcessState`) requires this field of its own state; it is
    // true of this runtime (cgroups are never delegated to systemd).
    state["useSystemd"] = false.into();
    serde_json::json!({
        "ociVersion": "1.2.0",
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": listener.metadata,
        "state": state,
    })
    .to_string()
    .into_bytes()
}

/// Connects to the agent and sends `message` with the listener fd (SCM_RIGHTS) in one
/// `sendmsg`, then closes the connection (one state per connection, as the spec asks).
pub fn send_to_agent(
    listener: &Listener,
    fd: std::os::fd::BorrowedFd<'_>,
    message: &[u8],
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let stream = std::os::unix::net::UnixStream::connect(&listener.path)?;
    stream.set_write_timeout(Some(std::time::Duration::from_secs(10)))?;
    let fds = [fd.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(message)];
    let sent = nix::sys::socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != message.len() {
        return Err(std::io::Error::other(format!("sent {sent} of {} bytes", message.len())));
    }
    Ok(())
}

/// Compiles a profile into BPF programs (see the module doc for the layering).
pub fn compile(profile: &Profile) -> Result<CompiledFilter, SeccompError> {
    // action → syscall number → rules (None = unconditional)
    let mut by_action: BTreeMap<Action, BTreeMap<i64, Option<Vec<SeccompRule>>>> = BTreeMap::new();
    for rule in &profile.rules {
        if rule.action == profile.default {
            continue;
        }
        let Some(nr) = syscalls::number(&rule.syscall) else { continue };
        let slot = by_action.entry(rule.action).or_default().entry(nr).or_insert_with(|| Some(Vec::new()));
        if rule.args.is_empty() {
            *slot = None;
        } else if let Some(list) = slot {
            let conditions = rule.args.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
            list.push(SeccompRule::new(conditions).map_err(|e| SeccompError::Compile(e.to_string()))?);
        }
    }
    // A call that another action's rule matches must pass the allow-list program, or its default
    // (more restrictive than a notification or a log, or a kill over an errno) would decide.
    if profile.default != Action::Allow {
        let others: Vec<(i64, Option<Vec<SeccompRule>>)> = by_action
            .iter()
            .filter(|(action, _)| **action != Action::Allow)
            .flat_map(|(_, calls)| calls.iter().map(|(nr, rules)| (*nr, rules.clone())))
            .collect();
        let allowed = by_action.entry(Action::Allow).or_default();
        for (nr, rules) in others {
            let slot = allowed.entry(nr).or_insert_with(|| Some(Vec::new()));
            match (slot, rules) {
                (Some(list), Some(more)) => list.extend(more),
                (slot, None) => *slot = None,
                (None, Some(_)) => {}
            }
        }
    }
    let mut programs = Vec::new();
    let mut notify = None;
    // The allow list first, so later programs win among equal-precedence results.
    let mut ordered: Vec<(Action, _)> = by_action.into_iter().collect();
    ordered.sort_by_key(|(action, _)| *action != Action::Allow);
    for (action, calls) in ordered {
        let rules: BTreeMap<i64, Vec<SeccompRule>> =
            calls.into_iter().map(|(nr, rules)| (nr, rules.unwrap_or_default())).collect();
        let (mismatch, matched) =
            if action == Action::Allow { (profile.default, Action::Allow) } else { (Action::Allow, action) };
        let filter = SeccompFilter::new(
            rules,
            to_seccompiler(mismatch),
            to_seccompiler(matched),
            seccompiler::TargetArch::x86_64,
        )
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
        let bpf: seccompiler::BpfProgram =
            filter.try_into().map_err(|e: seccompiler::BackendError| SeccompError::Compile(e.to_string()))?;
        let mut program: Vec<BpfInstruction> =
            bpf.into_iter().map(|i| BpfInstruction { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
        if action == Action::Notify {
            // This program's only non-allow result is the placeholder trap: make it a notification.
            for insn in program.iter_mut().filter(|i| i.code == BPF_RET_K && i.k == RET_TRAP) {
                insn.k = RET_USER_NOTIF;
            }
            notify = Some(programs.len());
        }
        programs.push(program);
    }
    if programs.is_empty() && profile.default != Action::Allow {
        // Nothing allowed at all: a single program returning the default.
        let filter = SeccompFilter::new(
            BTreeMap::new(),
            to_seccompiler(profile.default),
            SeccompAction::Allow,
            seccompiler::TargetArch::x86_64,
        )
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
        let bpf: seccompiler::BpfProgram =
            filter.try_into().map_err(|e: seccompiler::BackendError| SeccompError::Compile(e.to_string()))?;
        programs.push(
            bpf.into_iter().map(|i| BpfInstruction { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect(),
        );
    }
    Ok(CompiledFilter { programs, notify })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_caps() -> BTreeSet<String> {
        crate::runtime::caps::DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_profile_denies_dangerous_calls() {
        let p = default_profile(&default_caps());
        let allowed: BTreeSet<&str> =
            p.rules.iter().filter(|r| r.action == Action::Allow).map(|r| r.syscall.as_str()).collect();
        for denied in ["mount", "unshare", "keyctl", "kexec_load", "bpf", "init_module", "setns", "add_key"] {
            assert!(!allowed.contains(denied), "{denied} must not be allowed");
        }
        for ok in ["read", "openat", "execve", "chroot", "clone", "socket", "exit_group"] {
            assert!(allowed.contains(ok), "{ok} must be allowed");
        }
        assert_eq!(p.default, Action::Errno(1));
        assert!(p.rules.iter().any(|r| r.syscall == "clone3" && r.action == Action::Errno(38)));
    }

    #[test]
    fn sys_admin_unlocks_mount() {
        let mut caps = default_caps();
        caps.insert("CAP_SYS_ADMIN".into());
        let p = default_profile(&caps);
        assert!(p.rules.iter().any(|r| r.syscall == "mount" && r.action == Action::Allow));
        let clone = p.rules.iter().find(|r| r.syscall == "clone").unwrap();
        assert!(clone.args.is_empty());
    }

    #[test]
    fn compiles_one_program_per_action() {
        let compiled = compile(&default_profile(&default_caps())).unwrap();
        assert_eq!(compiled.programs(), 2);
        assert!(compiled.programs[0].len() < 4096);
    }

    #[test]
    fn translates_oci_profile() {
        let json = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
            {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
            {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
            {"names":["bogus_call"],"action":"SCMP_ACT_ALLOW"}]}"#;
        let spec: LinuxSeccomp = serde_json::from_str(json).unwrap();
        let p = from_oci(&spec).unwrap();
        assert_eq!(p.default, Action::Errno(38));
        assert_eq!(p.rules.len(), 4);
        assert_eq!(p.rules[2].args, vec![ArgCheck { index: 0, op: ArgOp::Eq, value: 8 }]);
        assert_eq!(compile(&p).unwrap().programs(), 1);
    }

    fn notify_spec(default: &str) -> Result<Profile, SeccompError> {
        let json = format!(
            r#"{{"defaultAction":"{default}","listenerPath":"/run/agent.sock","listenerMetadata":"m",
            "syscalls":[{{"names":["getcwd"],"action":"SCMP_ACT_NOTIFY"}},
            {{"names":["mount"],"action":"SCMP_ACT_ERRNO"}}]}}"#
        );
        from_oci(&serde_json::from_str::<LinuxSeccomp>(&json).unwrap())
    }

    #[test]
    fn notify_rules_compile_to_a_user_notification_program_with_the_listener() {
        let p = notify_spec("SCMP_ACT_ALLOW").unwrap();
        assert_eq!(p.listener, Some(Listener { path: "/run/agent.sock".into(), metadata: "m".into() }));
        let compiled = compile(&p).unwrap();
        assert!(compiled.notifies());
        let notify = &compiled.programs[compiled.notify.unwrap()];
        let rets: Vec<u32> = notify.iter().filter(|i| i.code == BPF_RET_K).map(|i| i.k).collect();
        assert!(rets.contains(&RET_USER_NOTIF), "{rets:x?}");
        assert!(!rets.contains(&RET_TRAP), "{rets:x?}");
        // The errno program is untouched and installed without a listener.
        assert_eq!(compiled.programs(), 2);
        let message: serde_json::Value =
            serde_json::from_slice(&agent_message(p.listener.as_ref().unwrap(), 42, br#"{"id":"c"}"#))
                .unwrap();
        assert_eq!(message["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!((message["pid"].as_i64(), message["metadata"].as_str()), (Some(42), Some("m")));
        assert_eq!(message["state"]["id"], "c");
    }

    #[test]
    fn notify_is_refused_as_default_on_write_and_without_a_listener() {
        let default = notify_spec("SCMP_ACT_NOTIFY").unwrap_err();
        assert!(default.to_string().contains("defaultAction"), "{default}");
        let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getcwd"],"action":"SCMP_ACT_NOTIFY"}]}"#;
        let no_listener = from_oci(&serde_json::from_str(json).unwrap()).unwrap_err();
        assert!(no_listener.to_string().contains("needs a listenerPath"), "{no_listener}");
        let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/a","syscalls":[{"names":["write"],"action":"SCMP_ACT_NOTIFY"}]}"#;
        let write = from_oci(&serde_json::from_str(json).unwrap()).unwrap_err();
        assert!(write.to_string().contains("write"), "{write}");
        assert!(!compile(&default_profile(&default_caps())).unwrap().notifies());
    }
}
