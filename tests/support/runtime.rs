//! Shared helpers for the runtime integration tests: busybox bundles in temp dirs, a runtime
//! with a per-test cgroup parent, and Drop guards that remove containers, cgroups and dirs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use oci_spec::runtime::Spec;
use rkube::runtime::{CreateRequest, Runtime};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique name for this test process: `rkube-test-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// The rkubelet binary built for these tests.
pub fn rkubelet() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rkubelet"))
}

/// The default 14 capabilities.
pub const DEFAULT_CAPS: [&str; 14] = rkube::runtime::caps::DEFAULT_CAPABILITIES;

/// A bundle: `rootfs/` with busybox and its applets, `/etc/passwd|group`, and `config.json`.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub spec: serde_json::Value,
}

impl Bundle {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Writes `config.json` from `spec`.
    pub fn write(&self) {
        std::fs::write(self.path().join("config.json"), serde_json::to_vec_pretty(&self.spec).unwrap())
            .unwrap();
    }

    /// The spec as oci-spec types.
    pub fn oci_spec(&self) -> Spec {
        serde_json::from_value(self.spec.clone()).unwrap()
    }

    /// Adds read-only bind mounts of the host's libraries and `binary` at `/probe` so a
    /// dynamically linked probe can run inside.
    pub fn add_host_libs_and_probe(&mut self, binary: &Path) {
        let mounts = self.spec["mounts"].as_array_mut().unwrap();
        for dir in ["/lib", "/lib64", "/usr"] {
            if Path::new(dir).exists() {
                mounts.push(serde_json::json!({"destination": dir, "type": "bind", "source": dir,
                    "options": ["rbind", "ro", "nosuid", "nodev"]}));
            }
        }
        mounts.push(serde_json::json!({"destination": "/probe", "type": "bind", "source": binary,
            "options": ["bind", "ro", "nosuid", "nodev"]}));
    }
}

/// A busybox bundle running `args`, with Docker's defaults (14 caps, masked and read-only paths,
/// new pid/mount/uts/ipc/net namespaces) and cgroup path `<parent>/<id>`.
pub fn busybox_bundle(args: &[&str], cgroup_path: &str) -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    // Copied by a child process: a write fd to the binary held open here could leak into a container
    // forked meanwhile by a parallel test and make its exec fail with ETXTBSY.
    let copied =
        std::process::Command::new("cp").arg("/bin/busybox").arg(rootfs.join("bin/busybox")).status();
    assert!(copied.is_ok_and(|s| s.success()), "copy busybox");
    for applet in [
        "sh", "true", "false", "ls", "cat", "echo", "id", "hostname", "mount", "umount", "ps", "sleep",
        "grep", "unshare", "insmod", "touch", "head", "kill", "wc", "sed", "tr", "dd", "mkdir", "test",
        "stat", "readlink",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nweb:x:1000:1000::/tmp:/bin/sh\n").unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\nweb:x:1000:\naudio:x:29:web\n")
        .unwrap();
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "rkube-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "annotations": {"io.rkube.seccomp": "runtime/default"},
        "linux": {
            "cgroupsPath": cgroup_path,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    let bundle = Bundle { dir, spec };
    bundle.write();
    bundle
}

/// A runtime with a temp run dir and a unique cgroup parent, cleaned up on drop: containers
/// are deleted (forced), then the parent cgroup is removed from every hierarchy.
pub struct TestRuntime {
    pub runtime: Runtime,
    pub run_dir: tempfile::TempDir,
    pub parent: String,
}

impl TestRuntime {
    pub fn new() -> Self {
        let run_dir = tempfile::tempdir().unwrap();
        let parent = unique("rkube-test");
        let mut runtime = Runtime::new(run_dir.path().join("state"), "/sys/fs/cgroup");
        runtime.cgroup_parent = parent.clone();
        runtime.monitor_binary = Some(rkubelet().with_file_name("rkube-monitor"));
        TestRuntime { runtime, run_dir, parent }
    }

    /// `<parent>/<id>`.
    pub fn cgroup_path(&self, id: &str) -> String {
        format!("{}/{id}", self.parent)
    }

    /// A bundle whose cgroup lives under this runtime's parent.
    pub fn bundle(&self, id: &str, args: &[&str]) -> Bundle {
        // Absolute: under the hierarchy root whether created by the library or by the CLI (which
        // places relative paths under its own cgroup, as runc).
        busybox_bundle(args, &format!("/{}", self.cgroup_path(id)))
    }

    pub fn request(&self, id: &str, bundle: &Bundle) -> CreateRequest {
        CreateRequest {
            id: id.into(),
            bundle: bundle.path().to_path_buf(),
            spec: bundle.oci_spec(),
            rootfs: None,
            log_path: Some(bundle.path().join("ctr.log")),
            pid_file: None,
            preserved_fds: Vec::new(),
        }
    }

    /// Creates, starts and waits for the container; returns (exit, CRI log content).
    pub fn run(&self, id: &str, bundle: &Bundle) -> (rkube::runtime::ExitInfo, String) {
        self.runtime.create(&self.request(id, bundle)).unwrap();
        self.runtime.start(id).unwrap();
        let exit = self.runtime.wait(id, Some(std::time::Duration::from_secs(60))).unwrap();
        self.runtime.delete(id, true).unwrap();
        let log = std::fs::read_to_string(bundle.path().join("ctr.log")).unwrap_or_default();
        (exit, log)
    }

    /// The stdout lines of a CRI log.
    pub fn stdout_lines(log: &str) -> Vec<String> {
        cri_lines(log, "stdout")
    }

    /// Runs the rkubelet CLI against this runtime's state dir. Output goes through files, not
    /// pipes: a created container keeps the stdio it was given (as with runc), so waiting for a
    /// pipe's end would wait for the container.
    pub fn cli(&self, args: &[&str]) -> Output {
        let out_path = self.run_dir.path().join(unique("stdout"));
        let err_path = self.run_dir.path().join(unique("stderr"));
        let status = Command::new(rkubelet())
            .arg("runtime")
            .arg("--root")
            .arg(&self.runtime.root)
            .args(["--cgroup-parent", &self.parent])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .status()
            .unwrap();
        let stdout = std::fs::read(&out_path).unwrap();
        let stderr = std::fs::read(&err_path).unwrap();
        Output { status, stdout, stderr }
    }
}

/// Content of the CRI log records of one stream.
pub fn cri_lines(log: &str, stream: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (_time, s, _tag, content) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next().unwrap_or(""));
            (s == stream).then(|| content.to_string())
        })
        .collect()
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        if let Ok(list) = self.runtime.list() {
            for c in list {
                let _ = self.runtime.delete(&c.id, true);
            }
        }
        remove_cgroup_tree(&self.parent);
    }
}

/// Removes `<hierarchy>/<name>` (and children) in every v1 hierarchy and the unified one.
pub fn remove_cgroup_tree(name: &str) {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    for entry in entries.flatten() {
        let dir = entry.path().join(name);
        if dir.is_dir() {
            remove_cgroup_dir(&dir);
        }
    }
}

fn remove_cgroup_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_dir(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::remove_dir(dir).is_err() && dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Every mount point in our mount namespace containing `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.contains(needle))
        .collect()
}
