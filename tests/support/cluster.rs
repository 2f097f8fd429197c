//! A real cluster on this host for end-to-end tests: `hack/cluster.sh up N` (rkube-master, a
//! registry with the demo images, N `rkubelet join` nodes in network namespaces of their own),
//! driven with the real kubectl; `down` on drop, even when the test panics.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/cluster.sh")
}

impl Cluster {
    /// Brings up `nodes` nodes; `master_flags` go to rkube-master.
    pub fn up(nodes: usize, master_flags: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let mut c = Cluster { dir, env: HashMap::new() };
        let out = c.script(&["up", &nodes.to_string()], master_flags);
        if !out.status.success() {
            let logs = c.logs();
            panic!("hack/cluster.sh up failed: {}\n{logs}", String::from_utf8_lossy(&out.stderr));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.split_once('=') {
                c.env.insert(k.into(), v.trim_matches('"').into());
            }
        }
        c
    }

    fn script(&self, args: &[&str], master_flags: &str) -> Output {
        let bin = Path::new(env!("CARGO_BIN_EXE_rkubelet")).parent().unwrap();
        Command::new("bash")
            .arg(script())
            .args(args)
            .env("RKUBE_BIN_DIR", bin)
            .env("RKUBE_CLUSTER_DIR", self.dir.path().join("cluster"))
            .env("RKUBE_BUILD_DIR", self.dir.path().join("build"))
            .env("RKUBE_MASTER_FLAGS", master_flags)
            .env("RKUBE_NODE_FLAGS", "--backoff-initial-ms 1000")
            .output()
            .expect("run hack/cluster.sh")
    }

    /// `hack/cluster.sh stop-node I` / `start-node I`.
    pub fn node_agent(&self, action: &str, node: usize) {
        let out = self.script(&[action, &node.to_string()], "");
        assert!(out.status.success(), "cluster.sh {action} {node}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn cluster_dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    /// The state root of node `i`.
    pub fn node_root(&self, i: usize) -> PathBuf {
        self.cluster_dir().join(format!("node{i}/root"))
    }

    /// `rkubelet SUB ARGS` on node `i`, in its network namespace with its node flags.
    pub fn rkubelet(&self, i: usize, sub: &str, args: &[&str]) -> Output {
        let flags = [
            format!("--root={}", self.node_root(i).display()),
            format!("--run-dir=/run/rkube-cluster/node{i}"),
            format!("--cgroup-parent=rkube-node{i}"),
            format!(
                "--registries-config={}",
                self.cluster_dir().join(format!("node{i}/registries.yaml")).display()
            ),
        ];
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/rkube-node{i}"))
            .arg(env!("CARGO_BIN_EXE_rkubelet"))
            .arg(sub)
            .args(args)
            .args(flags)
            .output()
            .expect("run rkubelet")
    }

    /// The last lines of every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for entry in std::fs::read_dir(self.cluster_dir()).into_iter().flatten().flatten() {
            let p = entry.path();
            let log = if p.is_dir() { p.join("agent.log") } else { p.clone() };
            if log.extension().is_some_and(|e| e == "log")
                && let Ok(text) = std::fs::read_to_string(&log)
            {
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                s += &format!(
                    "--- {}\n{}\n",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        s
    }

    pub fn kubeconfig(&self) -> &str {
        &self.env["KUBECONFIG"]
    }

    pub fn node_ips(&self) -> Vec<String> {
        self.env["NODE_IPS"].split_whitespace().map(str::to_string).collect()
    }

    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new("/usr/bin/kubectl")
            .args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("KUBECONFIG", kubeconfig)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed"))
            .output()
            .expect("run kubectl")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(Path::new(self.kubeconfig()), args)
    }

    /// Runs kubectl and returns stdout; panics with stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Polls `kubectl args` until `pred(stdout)` holds.
    pub fn eventually(&self, args: &[&str], timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(args);
            let last = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && pred(&last) {
                return last;
            }
            if Instant::now() >= deadline {
                panic!("kubectl {args:?}: condition not met; last output:\n{last}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.script(&["down"], "");
        if !out.status.success() {
            eprintln!("hack/cluster.sh down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// GET http://ip/ from the host (pod IPs are routed to their nodes).
pub fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-s", "-m", "5", url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `url` until its body contains `want` (a fresh pod may take a moment to listen).
pub fn wait_page(url: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = http_get(url).unwrap_or_default();
        if page.contains(want) || Instant::now() >= deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `f` until it holds.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
