//! Test helpers: a real rkube-master process (embedded or etcd store), a throwaway etcd, and the
//! real kubectl pointed at it with a private HOME. Everything is killed and removed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A throwaway etcd on free loopback ports, killed by PID on drop.
pub struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        wait_for("etcd to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", client)).ok()
        });
        Etcd { child, _dir: dir, endpoint }
    }

    /// Kills etcd (the store becomes unreachable); its data dir stays until drop.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which store the master uses.
pub enum Backend {
    Embedded,
    Etcd(Etcd),
}

impl Backend {
    pub fn embedded() -> Backend {
        Backend::Embedded
    }
    pub fn etcd() -> Backend {
        Backend::Etcd(Etcd::start())
    }
}

/// A running rkube-master with its own data dir, port and kubectl HOME.
pub struct Master {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub backend: Backend,
    pub extra: Vec<String>,
}

/// Directory holding the seed YAML.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed")
}

impl Master {
    /// Starts a master (HTTPS, LB pool 10.200.0.10-10.200.0.20) with extra flags.
    pub fn start(backend: Backend, extra: &[&str]) -> Master {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let mut m = Master {
            child: None,
            dir,
            port: free_port(),
            backend,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        m.spawn();
        m
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data/admin.kubeconfig")
    }

    /// The master's `pki` directory (CA, tokens).
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("data/pki")
    }

    /// The CA certificate nodes pin.
    pub fn ca_path(&self) -> PathBuf {
        self.pki().join("ca.crt")
    }

    /// The full node join token (`RK1<ca sha256>::<id>.<secret>`).
    pub fn join_token(&self) -> String {
        std::fs::read_to_string(self.pki().join("join.token")).unwrap().trim().to_string()
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.pki().join("admin.token")).unwrap().trim().to_string()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rkube-master"));
        cmd.arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--lb-pool", "10.200.0.10-10.200.0.20"])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Backend::Etcd(e) = &self.backend {
            cmd.args(["--etcd-servers", &e.endpoint]);
        }
        let mut child = cmd.spawn().expect("start rkube-master");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(line.contains("serving"), "rkube-master did not start: {line:?}");
        self.child = Some(child);
        let port = self.port;
        wait_for("rkube-master to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    /// Stops the master (SIGKILL) and starts it again on the same data dir and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A kubectl command for this master, run in the fixtures directory.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("/usr/bin/kubectl");
        cmd.args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("KUBECONFIG", self.kubeconfig())
            .current_dir(fixtures());
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
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

    /// Runs kubectl expecting failure and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
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
            assert!(Instant::now() < deadline, "kubectl {args:?}: condition not met; last output:\n{last}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Writes a YAML file into the master's temp dir and returns its path.
    pub fn write(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop();
    }
}
