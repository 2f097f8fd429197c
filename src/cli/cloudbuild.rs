//! `rkubelet build --config cloudbuild.yaml [--substitutions K=V,...] [SOURCE_DIR]`: runs the plan of
//! [`crate::build::cloudbuild`] with rkube's own build, tag and push; `images:` are pushed last.
//!
//! Steps run concurrently as their `waitFor` allows ([`cloudbuild::ready`]). Each step is a child
//! `rkubelet build` process (the same binary, the step's action passed with a hidden flag), so
//! concurrent RUNs and containers share no process state; its stderr is relayed line by line with
//! a `step N:` prefix. After a failure no new step starts, the running ones are waited for, and
//! the build fails naming the failed step. An interrupt (SIGINT, SIGTERM) is passed on to the
//! running steps once; they stop and clean up as a failed step does, and are waited for. A step
//! does not outlive a killed parent: it asks for SIGTERM on the parent's death
//! (`PR_SET_PDEATHSIG`) and exits if it was already reparented.

use crate::build::cloudbuild::{self, Action};
use crate::cli::build::{Args, build_one};
use crate::cli::image::{local_name, run_push};
use crate::image::config::RegistriesConfig;
use crate::image::store::Store;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One step handed to a child process (`--cloudbuild-step`).
#[derive(Debug, Serialize, Deserialize)]
struct StepJob {
    /// 1-based, as in messages.
    number: usize,
    action: Action,
    /// The pid of the parent `rkubelet build --config`: a step whose parent is gone exits at once.
    parent: u32,
}

/// Runs a Cloud Build config against the source directory.
pub fn run(args: &Args, config: &Path, source: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let parsed = cloudbuild::parse(&text)?;
    let mut given = BTreeMap::new();
    for kv in args.substitutions.iter().filter(|s| !s.is_empty()) {
        let (k, v) =
            kv.split_once('=').with_context(|| format!("--substitutions {kv:?}: KEY=VALUE expected"))?;
        given.insert(k.to_string(), v.to_string());
    }
    given.entry("BUILD_ID".to_string()).or_insert_with(|| uuid::Uuid::new_v4().to_string());
    let values = cloudbuild::values(&parsed, &given)?;
    let plan = cloudbuild::plan(&parsed, &values)?;
    let source =
        std::fs::canonicalize(source).with_context(|| format!("source directory {}", source.display()))?;
    let store = Store::open(&args.root)
        .with_context(|| format!("opening the image store at {}", args.root.display()))?;
    if !args.quiet {
        let waves = cloudbuild::waves(&plan.waits);
        let shown: Vec<String> = waves
            .iter()
            .map(|w| w.iter().map(|i| (i + 1).to_string()).collect::<Vec<_>>().join(" "))
            .collect();
        eprintln!("cloudbuild: {} steps, by waitFor: [{}]", plan.actions.len(), shown.join("] ["));
    }
    run_steps(args, &plan, &source)?;
    // images: pushed only after every step succeeded; each must exist.
    for image in &plan.images {
        if store.tag(&local_name(image)?)?.is_none() {
            bail!("images: {image} was not built by any step (PUSH_IMAGE_NOT_FOUND)");
        }
    }
    let registries = RegistriesConfig::load(&args.registries_config)?;
    for image in &plan.images {
        run_push(&store, registries.clone(), image, None).with_context(|| format!("pushing {image}"))?;
    }
    Ok(0)
}

/// What a finished child reported.
struct Finished {
    step: usize,
    /// `None` on success, else the failure as one line.
    error: Option<String>,
}

/// The running steps' pids, and whether the build was interrupted; a step is signalled under the
/// lock, so each gets exactly one SIGTERM however its start and the interrupt interleave.
#[derive(Default)]
struct Steps {
    pids: std::sync::Mutex<BTreeSet<u32>>,
    interrupted: AtomicBool,
}

impl Steps {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn started(&self, pid: u32) {
        let mut pids = self.lock();
        pids.insert(pid);
        if self.interrupted.load(Ordering::SeqCst) {
            terminate(pid);
        }
    }

    fn interrupt(&self) {
        let pids = self.lock();
        self.interrupted.store(true, Ordering::SeqCst);
        for pid in pids.iter() {
            terminate(*pid);
        }
    }
}

fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
}

/// The first SIGINT or SIGTERM stops the build: no step starts any more, and each running one gets
/// one SIGTERM (it stops and removes what it made, as a failed step does) and is waited for. A
/// second signal ends the process at once (the steps then get their parent-death SIGTERM).
fn interrupt_steps_on_signals(steps: Arc<Steps>) {
    let first = move || {
        eprintln!(
            "interrupted: stopping the running steps, which remove what they made (again to stop at once)"
        );
        steps.interrupt();
    };
    super::signals::on_interrupt(first, super::signals::Then::ExitOnSecond { grace: None });
}

/// Runs the plan's steps as child processes, each as soon as the steps it waits for are done.
fn run_steps(args: &Args, plan: &cloudbuild::Plan, source: &Path) -> anyhow::Result<()> {
    let n = plan.actions.len();
    let (mut done, mut started) = (vec![false; n], vec![false; n]);
    let (tx, rx) = std::sync::mpsc::channel::<Finished>();
    let steps = Arc::new(Steps::default());
    interrupt_steps_on_signals(steps.clone());
    let mut running = 0;
    let mut failed: Option<String> = None;
    loop {
        if failed.is_none() && !steps.interrupted.load(Ordering::SeqCst) {
            for i in cloudbuild::ready(&plan.waits, &done, &started) {
                let number = i + 1;
                if !args.quiet {
                    eprintln!("cloudbuild step {number}: {:?}", plan.actions[i]);
                }
                started[i] = true;
                match spawn_step(args, number, &plan.actions[i], source, tx.clone(), &steps) {
                    Ok(()) => running += 1,
                    Err(e) => {
                        failed = Some(format!("step {number}: {e:#}"));
                        break;
                    }
                }
            }
        }
        if running == 0 {
            break;
        }
        let f = rx.recv().context("waiting for the steps")?;
        running -= 1;
        match f.error {
            None => done[f.step - 1] = true,
            Some(e) => {
                if failed.is_none() {
                    failed = Some(e);
                }
            }
        }
    }
    if steps.interrupted.load(Ordering::SeqCst) {
        bail!("interrupted: the running steps stopped and removed what they made");
    }
    if let Some(e) = failed {
        bail!(e);
    }
    if let Some(i) = started.iter().position(|s| !s) {
        bail!("step {}: never started (waitFor cycle)", i + 1);
    }
    Ok(())
}

/// Starts `rkubelet build --cloudbuild-step` for one step; a thread relays its stderr and reports
/// its end on `tx`.
fn spawn_step(
    args: &Args,
    number: usize,
    action: &Action,
    source: &Path,
    tx: std::sync::mpsc::Sender<Finished>,
    steps: &Arc<Steps>,
) -> anyhow::Result<()> {
    let job = serde_json::to_string(&StepJob { number, action: action.clone(), parent: std::process::id() })?;
    let mut argv: Vec<OsString> = vec![
        "build".into(),
        format!("--root={}", args.root.display()).into(),
        format!("--registries-config={}", args.registries_config.display()).into(),
        format!("--run-root={}", args.run_root.display()).into(),
        format!("--cgroup-root={}", args.cgroup_root.display()).into(),
        format!("--bridge={}", args.bridge).into(),
    ];
    if let Some(cidr) = args.pod_cidr {
        argv.push(format!("--pod-cidr={cidr}").into());
    }
    if let Some(ns) = &args.node_netns {
        argv.push(format!("--node-netns={}", ns.display()).into());
    }
    if args.no_cache {
        argv.push("--no-cache".into());
    }
    if args.quiet {
        argv.push("--quiet".into());
    }
    argv.push(format!("--cloudbuild-step={job}").into());
    argv.push(source.into());
    // The running binary (already sealed, see runtime::exe_seal) under its own name.
    // In a process group of its own: a terminal's Ctrl-C reaches only us, and we pass it on once.
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg0("rkubelet")
        .args(&argv)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("starting the step")?;
    steps.started(child.id());
    let stderr = child.stderr.take().context("the step's stderr")?;
    let steps = steps.clone();
    std::thread::spawn(move || {
        let mut last_error = None;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // The child's own error line becomes ours; everything else is relayed.
            match line.strip_prefix("rkubelet: ") {
                Some(e) => last_error = Some(e.to_string()),
                None => eprintln!("step {number}: {line}"),
            }
        }
        let waited = child.wait();
        steps.lock().remove(&child.id());
        let error = match waited {
            Ok(s) if s.success() => None,
            Ok(s) => Some(last_error.unwrap_or_else(|| format!("step {number}: {s}"))),
            Err(e) => Some(format!("step {number}: waiting for it: {e}")),
        };
        let _ = tx.send(Finished { step: number, error });
    });
    Ok(())
}

/// Runs one step in this process (the child side of [`spawn_step`]).
pub fn run_step(args: &Args, job: &str, source: &Path) -> anyhow::Result<i32> {
    let job: StepJob = serde_json::from_str(job).context("--cloudbuild-step")?;
    let n = job.number;
    // A killed parent takes its steps along: SIGTERM when it dies from now on, and if it died before
    // the prctl (we were reparented already), stop here.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).context("prctl(PR_SET_PDEATHSIG)")?;
    if nix::unistd::getppid().as_raw() as u32 != job.parent {
        bail!("step {n}: the parent build (pid {}) is gone", job.parent);
    }
    let store = Store::open(&args.root)
        .with_context(|| format!("opening the image store at {}", args.root.display()))?;
    match &job.action {
        Action::Build(b) => {
            let mut step = args.clone();
            step.config = None;
            step.tags = b.tags.clone();
            step.file = b.file.as_ref().map(|f| source.join(f));
            step.build_args = b.build_args.clone();
            step.target = b.target.clone();
            step.no_cache = b.no_cache || args.no_cache;
            step.platform = b.platform.clone();
            step.push = false;
            step.quiet = true;
            let context = source.join(&b.context);
            let digest = build_one(&step, &context).with_context(|| format!("step {n}"))?;
            if !args.quiet {
                eprintln!("built {} {digest}", b.tags.join(" "));
            }
        }
        Action::Container(c) => {
            let code = crate::cli::build::run_step_container(args, c, source)
                .with_context(|| format!("step {n} ({})", c.image))?;
            if code != 0 {
                bail!("step {n} ({}): exit code {code}", c.image);
            }
        }
        Action::Tag { source: from, target } => {
            let digest =
                store.tag(&local_name(from)?)?.with_context(|| format!("step {n}: no such image: {from}"))?;
            store.set_tag(&local_name(target)?, &digest)?;
        }
        Action::Push { image } => {
            let registries = RegistriesConfig::load(&args.registries_config)?;
            run_push(&store, registries, image, None).with_context(|| format!("step {n}"))?;
        }
    }
    Ok(0)
}
