//! `rkube-runc` (the rkubelet binary under that name) as podman's OCI runtime: run with the
//! exit code, `-d`, exec with its exit code, logs, env, stop, rm and `-it`. podman keeps its
//! storage, run root and temp files in a temp dir, and its cgroups under our prefix.

#[path = "support/runtime.rs"]
mod runtime;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Podman {
    dir: tempfile::TempDir,
    cgroup_parent: String,
}

impl Podman {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("rkube-test-podman-").tempdir().unwrap();
        Podman { dir, cgroup_parent: runtime::unique("rkube-test-podman") }
    }

    fn runtime_path() -> PathBuf {
        runtime::rkubelet().with_file_name("rkube-runc")
    }

    fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--runtime")
            .arg(Self::runtime_path())
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).stdin(std::process::Stdio::null()).output().unwrap();
        eprintln!(
            "podman {args:?}: {:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `podman run` options shared by every container of the test.
    fn run_args<'a>(&'a self, extra: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["run", "--network", "none", "--cgroup-parent", &self.cgroup_parent];
        args.extend_from_slice(extra);
        args.push("localhost/rkube-test-busybox");
        args.extend_from_slice(cmd);
        args
    }

    /// Imports a busybox root filesystem as `localhost/rkube-test-busybox`.
    fn import_busybox(&self) {
        let rootfs = self.dir.path().join("image");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        assert!(Command::new("cp").arg("/bin/busybox").arg(rootfs.join("bin")).status().unwrap().success());
        for applet in ["sh", "echo", "env", "sleep", "test", "cat", "true"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.path().join("image.tar");
        assert!(
            Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .status()
                .unwrap()
                .success()
        );
        let out = self.run(&["import", tar.to_str().unwrap(), "localhost/rkube-test-busybox"]);
        assert!(out.status.success());
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command(&["rm", "--all", "--force", "--time", "0"]).output();
        let _ = self.command(&["rmi", "--all", "--force"]).output();
        // Whatever podman still has mounted under its storage.
        let dir = self.dir.path().to_str().unwrap().to_string();
        let mut mounts = runtime::mounts_containing(&dir);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
        runtime::remove_cgroup_tree(self.cgroup_parent.trim_start_matches('/'));
    }
}

#[test]
fn podman_runs_containers_on_rkube_runc() {
    assert!(Podman::runtime_path().exists(), "build.rs links rkube-runc beside rkubelet");
    let podman = Podman::new();
    podman.import_busybox();

    // The exit code of a foreground run comes through conmon, which reaps the container.
    let out = podman.run(&podman.run_args(&["--rm"], &["sh", "-c", "echo hi; exit 3"]));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");

    // Detached, with env; exec with its exit code; logs; stop; rm.
    let out = podman.run(&podman.run_args(
        &["-d", "--name", "rkube-test-d", "-e", "RKUBE_TEST=yes"],
        &["sh", "-c", "echo started; env; exec sleep 100"],
    ));
    assert!(out.status.success());
    let out = podman.run(&["exec", "rkube-test-d", "sh", "-c", "echo in-$RKUBE_TEST; exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-yes\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let logs = loop {
        let out = podman.run(&["logs", "rkube-test-d"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("RKUBE_TEST=yes") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(logs.starts_with("started\n") && logs.contains("RKUBE_TEST=yes"), "{logs}");
    let out = podman.run(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rkube-test-d Up"));
    assert!(podman.run(&["stop", "--time", "1", "rkube-test-d"]).status.success());
    let out = podman.run(&["ps", "--all", "--format", "{{.Names}} {{.Status}}"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rkube-test-d Exited"));
    assert!(podman.run(&["rm", "rkube-test-d"]).status.success());
}

/// `-it`: a terminal through conmon's console socket (`script` gives podman a terminal). The
/// process stays a second after its line: when it exits at once, conmon loses what is still in the
/// pty about one run in five, with crun and runc as with rkube (measured on this host: 5/25 each),
/// which had this test ignored as a CI-only failure.
#[test]
fn podman_it_gives_the_container_a_terminal() {
    let podman = Podman::new();
    podman.import_busybox();
    let inner = podman.command(
        &podman
            .run_args(&["--rm", "-it"], &["sh", "-c", "test -t 0 && test -t 1 && echo TTY; sleep 1; exit 4"]),
    );
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_str().unwrap().replace('\'', "'\\''"));
    let line = std::iter::once(quote(inner.get_program()))
        .chain(inner.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("TTY"), "{text}");
}
