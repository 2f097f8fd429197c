//! Shared helpers for pod integration tests: a whole node in temp dirs (its own node network
//! namespace with bridge `rkt<n>` and CIDR 10.77.<n>.0/24 from `support/network.rs`, its own
//! state/run dirs and cgroup parent `rkube/test-<pid>-<n>`), a busybox image imported from the
//! host's busybox-static, and the `rkubelet` binary run with the node's flags. Drop removes every
//! pod, stops the agent it started and removes the cgroup parent, even when the test failed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::network::TestNode;

pub const IMAGE: &str = "busybox:test";

/// A one-container pod `name` (container `c`, the test image, grace period 0) whose spec gets
/// `spec_lines` and whose container gets `container_lines`, each already indented (2 and 4
/// spaces), e.g. `pod_yaml("p", "  hostPID: true", "    command: [sleep, \"60\"]")`.
pub fn pod_yaml(name: &str, spec_lines: &str, container_lines: &str) -> String {
    let spec = if spec_lines.is_empty() { String::new() } else { format!("{}\n", spec_lines.trim_end()) };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n{spec}  \
         containers:\n  - name: c\n    image: {IMAGE}\n    imagePullPolicy: Never\n{}\n",
        container_lines.trim_end()
    )
}

pub struct PodNode {
    pub net: TestNode,
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
}

impl PodNode {
    pub fn new(n: u8) -> Self {
        let net = TestNode::new(n);
        let dir = tempfile::tempdir().expect("temp dir");
        let node = PodNode { net, dir, cgroup_parent: format!("rkube/test-{}-{n}", std::process::id()) };
        node.import_busybox();
        node
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn flags(&self) -> Vec<String> {
        vec![
            format!("--root={}", self.root().display()),
            format!("--run-dir={}", self.run_dir().display()),
            format!("--pod-cidr=10.77.{}.0/24", self.net.n),
            format!("--bridge=rkt{}", self.net.n),
            format!("--node-netns={}", self.net.node_ns.display()),
            format!("--cgroup-parent={}", self.cgroup_parent),
            "--nameserver=10.96.0.10".into(),
            format!("--registries-config={}", self.dir.path().join("registries.yaml").display()),
        ]
    }

    fn import_busybox(&self) {
        let rootfs = self.dir.path().join("rootfs");
        for d in ["bin", "tmp", "etc", "proc", "sys", "dev", "root"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        // Copied by a child process: a write fd to the binary held open here could leak into a container
        // forked meanwhile by a parallel test and make its exec fail with ETXTBSY.
        let copied =
            std::process::Command::new("cp").arg("/bin/busybox").arg(rootfs.join("bin/busybox")).status();
        assert!(copied.is_ok_and(|s| s.success()), "busybox-static at /bin/busybox");
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
            }
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
            .args(["image", "import", "--root"])
            .arg(self.root())
            .arg(&rootfs)
            .arg(IMAGE)
            .output()
            .unwrap();
        assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The node's settings as the library sees them (the same as `flags`).
    pub fn config(&self) -> rkube::kubelet::node::NodeConfig {
        rkube::kubelet::node::NodeConfig {
            root: self.root(),
            run_dir: self.run_dir(),
            pod_cidr: format!("10.77.{}.0/24", self.net.n).parse().unwrap(),
            cluster_cidr: None,
            bridge: format!("rkt{}", self.net.n),
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_parent: self.cgroup_parent.clone(),
            node_netns: Some(self.net.node_ns.clone()),
            veth_prefix: "rkv".into(),
            chain_prefix: "RKUBE".into(),
            dns: Default::default(),
            seccomp_default: true,
        }
    }

    /// Runs `rkubelet <sub> <args…> <node flags> [-- <tail…>]`; killed (and the test failed)
    /// if it takes more than a minute, so a hang cannot stall the suite.
    pub fn rk(&self, sub: &str, args: &[&str], tail: &[&str]) -> Output {
        self.rk_with(sub, args, tail, &[])
    }

    /// [`PodNode::rk`] with extra environment variables for rkubelet.
    pub fn rk_env(&self, sub: &str, args: &[&str], tail: &[&str], env: &[(&str, &str)]) -> Output {
        self.rk_with(sub, args, tail, env)
    }

    fn rk_with(&self, sub: &str, args: &[&str], tail: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rkubelet"));
        cmd.arg(sub).args(args).args(self.flags()).envs(env.iter().copied());
        if !tail.is_empty() {
            cmd.arg("--").args(tail);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run rkubelet");
        // Readers hand their bytes over a channel: a stray grandchild keeping a pipe open must not
        // block the test after rkubelet itself exited.
        let read = |mut pipe: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut b = Vec::new();
                let _ = pipe.read_to_end(&mut b);
                let _ = tx.send(b);
            });
            rx
        };
        let out_rx = read(Box::new(child.stdout.take().unwrap()));
        let err_rx = read(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait rkubelet") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rkubelet {sub} {args:?} did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let grace = Duration::from_secs(5);
        Output {
            status,
            stdout: out_rx.recv_timeout(grace).unwrap_or_default(),
            stderr: err_rx.recv_timeout(grace).unwrap_or_default(),
        }
    }

    /// Like `rk` but asserts success and returns stdout.
    pub fn ok(&self, sub: &str, args: &[&str], tail: &[&str]) -> String {
        let out = self.rk(sub, args, tail);
        assert!(
            out.status.success(),
            "rkubelet {sub} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `yaml` to a file and runs it (`--no-agent` unless `agent`).
    pub fn run_yaml(&self, name: &str, yaml: &str, agent: bool) -> Output {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let p = path.to_str().unwrap();
        if agent { self.rk("run", &[p], &[]) } else { self.rk("run", &[p, "--no-agent"], &[]) }
    }

    pub fn exec(&self, pod: &str, container: &str, cmd: &[&str]) -> String {
        self.ok("exec", &[pod, "-c", container], cmd)
    }

    /// The pod's state as JSON.
    pub fn inspect(&self, pod: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok("inspect", &[pod], &[])).unwrap()
    }

    pub fn pod_ip(&self, pod: &str) -> String {
        self.inspect(pod)["ip"].as_str().unwrap().to_string()
    }

    pub fn agent_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.run_dir().join("agent.pid")).ok()?.trim().parse().ok()
    }

    /// Kills the agent started for this node (by its pid), if any, and waits for it to go.
    pub fn kill_agent(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.agent_pid() {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, signal).is_ok() {
                wait_for(Duration::from_secs(10), || {
                    !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid.as_raw())
                });
            }
        }
    }

    /// Every cgroup directory of this node's parent (all v1 controllers).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        ["cpu", "cpuacct", "memory", "pids", "devices"]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c).join(&self.cgroup_parent))
            .collect()
    }

    /// Asserts nothing of pod `name` is left: pod dir, container state, netns/ipc pins, mounts,
    /// veth, IP, hostPort rules, cgroups.
    pub fn assert_pod_gone(&self, name: &str) {
        assert!(!self.root().join("pods").join(name).exists(), "pod dir left");
        let runtime_dir = self.run_dir().join("runtime");
        let left: Vec<_> =
            std::fs::read_dir(&runtime_dir).into_iter().flatten().flatten().map(|e| e.file_name()).collect();
        assert!(
            left.iter().all(|f| !f.to_string_lossy().starts_with(&format!("{name}_"))),
            "containers left: {left:?}"
        );
        assert!(!self.run_dir().join("netns").join(name).exists(), "netns pin left");
        assert!(!self.run_dir().join("ipc").join(name).exists(), "ipc pin left");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let base = self.dir.path().to_string_lossy().into_owned();
        let ours = [
            format!("{base}/root/pods/{name}/"),
            format!("{base}/run/netns/{name} "),
            format!("{base}/run/ipc/{name} "),
        ];
        let left: Vec<&str> =
            mounts.lines().filter(|l| ours.iter().any(|o| l.contains(o.as_str()))).collect();
        assert!(left.is_empty(), "mounts left: {left:?}");
        let veth = rkube::network::pod::veth_name("rkv", name);
        assert!(!self.net.link_exists(&veth), "veth {veth} left");
        let ipam = self.root().join("network").join("ipam");
        let held: Vec<_> = std::fs::read_dir(&ipam)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.parse::<std::net::Ipv4Addr>().is_ok())
            .filter(|f| std::fs::read_to_string(ipam.join(f)).unwrap_or_default().trim() == name)
            .collect();
        assert!(held.is_empty(), "IPs still allocated: {held:?}");
        let rules = self.net.saved_rules();
        assert!(!rules.lines().any(|l| l.contains(&format!("\"{name} hostPort"))), "rules left:\n{rules}");
        for d in self.cgroup_dirs() {
            let pod_cg = d.join(format!("pod-{name}"));
            assert!(!pod_cg.exists(), "cgroup {} left", pod_cg.display());
        }
    }
}

impl Drop for PodNode {
    fn drop(&mut self) {
        self.kill_agent(nix::sys::signal::Signal::SIGKILL);
        let pods = self.root().join("pods");
        for e in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let _ = self.rk("rm", &[&name, "--time=0"], &[]);
        }
        // Leftover pins or tmpfs mounts of a failed test.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let base = self.dir.path().to_string_lossy().into_owned();
        let mut points: Vec<String> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&base))
            .map(str::to_string)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for d in self.cgroup_dirs() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten().filter(|e| e.path().is_dir()) {
                    for sub in std::fs::read_dir(e.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|s| s.path().is_dir())
                    {
                        let _ = std::fs::remove_dir(sub.path());
                    }
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&d);
            // The shared `rkube` parent too, when no one else uses it (rmdir fails otherwise).
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// A `rkubelet serve` started by a test; killed (SIGKILL) and reaped on drop.
pub struct AgentGuard(pub std::process::Child);

impl AgentGuard {
    /// Kills the agent with SIGKILL now (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

impl PodNode {
    /// Starts `rkubelet serve` for this node with a CrashLoopBackOff base of `backoff_ms` and
    /// waits until it holds the node's agent lock.
    pub fn spawn_agent(&self, backoff_ms: u64) -> AgentGuard {
        let child = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
            .arg("serve")
            .arg(format!("--backoff-initial-ms={backoff_ms}"))
            .args(self.flags())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rkubelet serve");
        let guard = AgentGuard(child);
        let pid = guard.0.id() as i32;
        assert!(wait_for(Duration::from_secs(5), || self.agent_pid() == Some(pid)), "agent did not start");
        guard
    }
}

pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
