//! Seccomp: a profile model, Docker's default profile, translation from the OCI spec, and
//! compilation into classic BPF programs (with `seccompiler`, pure Rust) installed in order.
//!
//! A profile with several actions compiles into one program per action: the allow-list program
//! (match → allow, otherwise the default action) first, then one program per other action
//! (match → that action, otherwise allow). The kernel applies the most restrictive result, and
//! between equal ones (two errnos) the last installed program wins, so `clone3` → ENOSYS works.

use std::collections::{BTreeMap, BTreeSet};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use crate::runtime::syscalls;
use crate::sys::container::{BpfInstruction, install_seccomp_filter};

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
    Profile { default: Action::Errno(EPERM), rules }
}

/// Translates the OCI `linux.seccomp` section. Unknown system call names are skipped (as runc does).
pub fn from_oci(spec: &LinuxSeccomp) -> Result<Profile, SeccompError> {
    // The seccomp agent protocol (SCMP_ACT_NOTIFY handed to `listenerPath`) is not implemented:
    // refuse at once, before anything exists, so no agent waits for a connection.
    if spec.listener_path().is_some() || spec.listener_metadata().is_some() {
        return Err(SeccompError::UnsupportedAction(
            "listenerPath (the seccomp agent protocol, SCMP_ACT_NOTIFY)".into(),
        ));
    }
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
    Ok(Profile { default, rules })
}

fn action_from_oci(action: LinuxSeccompAction, errno: u32) -> Result<Action, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActErrno => Action::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => Action::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActLog => Action::Log,
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
pub struct CompiledFilter(Vec<Vec<BpfInstruction>>);

impl CompiledFilter {
    /// Number of BPF programs.
    pub fn programs(&self) -> usize {
        self.0.len()
    }

    /// Installs every program on the calling thread.
    pub fn install(&self) -> Result<(), SeccompError> {
        for program in &self.0 {
            install_seccomp_filter(program).map_err(SeccompError::Install)?;
        }
        Ok(())
    }
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
    let mut programs = Vec::new();
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
        programs.push(
            bpf.into_iter().map(|i| BpfInstruction { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect(),
        );
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
    Ok(CompiledFilter(programs))
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
        assert!(compiled.0[0].len() < 4096);
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
}
