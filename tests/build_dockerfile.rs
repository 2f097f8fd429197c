//! Root integration tests of `rkubelet build`: a busybox base pushed to a local registry and pulled
//! back through the docker.io mirror, multi-stage builds checked in the resulting config, RUN
//! steps in rkube's runtime (a whiteout for a deleted lower file, checked after `skopeo copy` +
//! `umoci unpack`), the step cache, SOURCE_DATE_EPOCH, malicious contexts and Dockerfiles with a
//! host sentinel, and the seed's cloudbuild.yaml, unchanged, pushing to a token-auth registry that
//! serves gcr.io through the registries config's `locations`.

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;
#[path = "support/registry.rs"]
mod registry;
#[path = "support/store.rs"]
mod store;

use registry::{Mode, TestRegistry};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BASE: &str = "rkube-test/busybox:1";

/// A node for builds: its own store, run dir, cgroup parent and a docker.io mirror at the test
/// registry holding the busybox base.
struct BuildNode {
    dir: tempfile::TempDir,
    registry: TestRegistry,
}

impl BuildNode {
    fn new() -> BuildNode {
        store::require_root();
        let registry = TestRegistry::start(Mode::Anonymous);
        let dir = tempfile::tempdir().unwrap();
        let node = BuildNode { dir, registry };
        node.seed_base();
        std::fs::write(
            node.dir.path().join("registries.yaml"),
            format!("mirrors:\n  docker.io: [\"http://{}\"]\n", node.registry.host()),
        )
        .unwrap();
        node
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Imports a busybox rootfs into a separate store and pushes it to the registry, so the
    /// build's FROM goes through the pull path.
    fn seed_base(&self) {
        let rootfs = self.dir.path().join("base-rootfs");
        for d in ["bin", "tmp", "etc", "root"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        let copied = Command::new("cp").arg("/bin/busybox").arg(rootfs.join("bin/busybox")).status();
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
        let seeder = self.dir.path().join("seeder");
        ok(&rkubelet(
            &[
                "image",
                "import",
                "--root",
                &seeder.display().to_string(),
                &rootfs.display().to_string(),
                "busybox:seed",
            ],
            None,
        ));
        let target = format!("{}/{BASE}", self.registry.host());
        ok(&rkubelet(
            &["image", "push", "--root", &seeder.display().to_string(), "busybox:seed", &target],
            None,
        ));
    }

    fn build(&self, args: &[&str]) -> Output {
        self.build_env(args, &[])
    }

    /// A build into another store root (a pod node's).
    fn build_into(&self, root: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rkubelet"));
        cmd.arg("build")
            .arg(format!("--root={}", root.display()))
            .arg(format!("--registries-config={}", self.dir.path().join("registries.yaml").display()))
            .arg(format!("--run-root={}", self.dir.path().join("run").display()))
            .args(args)
            .env_remove("RKUBE_ROOT");
        cmd.output().unwrap()
    }

    fn build_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.build_command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn build_command(&self, args: &[&str]) -> Command {
        let mut all = vec![
            "build".to_string(),
            format!("--root={}", self.root().display()),
            format!("--registries-config={}", self.dir.path().join("registries.yaml").display()),
            format!("--run-root={}", self.dir.path().join("run").display()),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rkubelet"));
        cmd.args(&all).env_remove("RKUBE_ROOT").env_remove("SOURCE_DATE_EPOCH");
        cmd
    }

    fn store(&self) -> rkube::image::Store {
        rkube::image::Store::open(&self.root()).unwrap()
    }

    fn config(&self, name: &str) -> serde_json::Value {
        let store = self.store();
        let digest = store.tag(name).unwrap().unwrap_or_else(|| panic!("no image {name}"));
        let refs = store.manifest_refs(&digest).unwrap();
        serde_json::from_slice(&store.read_blob(&refs.config.unwrap().digest).unwrap()).unwrap()
    }

    /// A file of the built image, looked up through its layers (topmost first).
    fn file(&self, name: &str, path: &str) -> Option<Vec<u8>> {
        let store = self.store();
        let digest = store.tag(name).unwrap().unwrap();
        let layers = store.image_layers(&digest).unwrap();
        layers.iter().rev().find_map(|l| std::fs::read(l.join(path)).ok())
    }

    /// Asserts a build left no debris: no temp dirs, mounts, containers or cgroups.
    fn assert_clean(&self) {
        let tmp: Vec<_> =
            std::fs::read_dir(self.root().join("tmp")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(tmp.is_empty(), "store tmp/ left: {tmp:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&self.root().display().to_string()), "a mount is left under the store");
        let run = self.dir.path().join("run");
        if run.exists() {
            // The pinned-netns dir of RUN networks stays, empty.
            let left: Vec<_> = std::fs::read_dir(&run)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    !(p.ends_with("netns") && std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none()))
                })
                .collect();
            assert!(left.is_empty(), "containers left: {left:?}");
        }
    }
}

impl Drop for BuildNode {
    fn drop(&mut self) {
        // Images and layers live in the temp dir; a failed test may leave a mount there.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let root = self.dir.path().display().to_string();
            for line in mounts.lines() {
                if let Some(target) = line.split(' ').nth(4).filter(|t| t.starts_with(&root)) {
                    let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
    }
}

fn rkubelet(args: &[&str], docker_config: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rkubelet"));
    cmd.args(args).env_remove("RKUBE_ROOT").env_remove("RKUBE_REGISTRIES_CONFIG");
    if let Some(d) = docker_config {
        cmd.env("DOCKER_CONFIG", d);
    }
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stderr));
    // Progress lines come first; the error is one line.
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("rkubelet: ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(stderr.trim_end().lines().last(), Some(errors[0]), "the error is last: {stderr}");
    errors[0].to_string()
}

/// `(steps run, cached, RUN)` from the build's summary line.
fn counts(stdout: &str) -> (usize, usize, usize) {
    let line = stdout.lines().find(|l| l.starts_with("built ")).expect("summary line");
    let inner = &line[line.rfind('(').unwrap() + 1..line.rfind(')').unwrap()];
    let n: Vec<usize> = inner.split(", ").map(|p| p.split(' ').next().unwrap().parse().unwrap()).collect();
    (n[0], n[1], n[2])
}

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    dir
}

#[test]
fn multi_stage_args_env_user_workdir_and_entrypoint_cmd() {
    let node = BuildNode::new();
    let ctx = context(&[(
        "Dockerfile",
        "ARG BASE=rkube-test/busybox:1\n\
         FROM ${BASE} AS builder\n\
         ARG GREETING=hello\n\
         ENV APP_HOME=/opt/app\n\
         WORKDIR $APP_HOME\n\
         RUN echo \"$GREETING from build\" > out.txt\n\
         RUN <<EOF\n\
#!/bin/sh\n\
echo \"script $GREETING in $(pwd)\" > /opt/app/script.txt\n\
EOF\n\
         FROM $BASE\n\
         ARG GREETING\n\
         ENV GREETING=${GREETING:-unset} SUFFIX=x${MISSING:+never} HOME_WAS=$APP_HOME\n\
         COPY --from=builder /opt/app/out.txt /srv/\n\
         USER nobody\n\
         WORKDIR /srv\n\
         WORKDIR sub\n\
         LABEL version=\"1.0 beta\" stage=final\n\
         EXPOSE 8080 53/udp\n\
         STOPSIGNAL SIGTERM\n\
         ENTRYPOINT [\"/bin/cat\"]\n\
         CMD [\"../out.txt\"]\n",
    )]);
    let out =
        ok(&node.build(&["-t", "app:1", "--build-arg", "GREETING=hi", &ctx.path().display().to_string()]));
    let (_, cached, runs) = counts(&out);
    assert_eq!((cached, runs), (0, 2));
    let c = node.config("docker.io/library/app:1");
    let cfg = &c["config"];
    let env: Vec<&str> = cfg["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(env.contains(&"GREETING=hi"), "{env:?}");
    assert!(env.contains(&"SUFFIX=x"), "{env:?}");
    assert!(env.contains(&"HOME_WAS="), "ENV of another stage is not inherited: {env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(cfg["User"], "nobody");
    assert_eq!(cfg["WorkingDir"], "/srv/sub", "relative WORKDIR joins the previous one");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/cat"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["../out.txt"]));
    assert_eq!(cfg["Labels"]["version"], "1.0 beta");
    assert_eq!(cfg["ExposedPorts"], serde_json::json!({"8080/tcp": {}, "53/udp": {}}));
    assert_eq!(cfg["StopSignal"], "SIGTERM");
    // History matches the layers.
    let history = c["history"].as_array().unwrap();
    let with_layers = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(with_layers, c["rootfs"]["diff_ids"].as_array().unwrap().len());
    assert!(history.iter().any(|h| h["created_by"].as_str().unwrap().starts_with("COPY --from=builder")));
    assert_eq!(node.file("docker.io/library/app:1", "srv/out.txt").unwrap(), b"hi from build\n");
    ok(&node.build(&[
        "-t",
        "builder:1",
        "--target",
        "builder",
        "--build-arg",
        "GREETING=hi",
        &ctx.path().display().to_string(),
    ]));
    assert_eq!(
        node.file("docker.io/library/builder:1", "opt/app/script.txt").unwrap(),
        b"script hi in /opt/app\n",
        "a #! heredoc runs as a script"
    );
    node.assert_clean();

    // ENTRYPOINT resets an inherited CMD unless this stage set one.
    let ctx2 = context(&[(
        "Dockerfile",
        "FROM scratch AS a\nCMD [\"x\"]\nFROM a AS b\nENTRYPOINT [\"y\"]\nFROM a AS c\nCMD [\"z\"]\nENTRYPOINT y w\n",
    )]);
    ok(&node.build(&["-t", "ep:b", "--target", "b", &ctx2.path().display().to_string()]));
    let b = node.config("docker.io/library/ep:b");
    assert_eq!(b["config"]["Entrypoint"], serde_json::json!(["y"]));
    assert!(b["config"]["Cmd"].is_null(), "inherited CMD reset: {}", b["config"]);
    ok(&node.build(&["-t", "ep:c", "--target", "c", &ctx2.path().display().to_string()]));
    let cc = node.config("docker.io/library/ep:c");
    assert_eq!(cc["config"]["Cmd"], serde_json::json!(["z"]));
    assert_eq!(cc["config"]["Entrypoint"], serde_json::json!(["/bin/sh", "-c", "y w"]), "shell form wrapped");
}

#[test]
fn run_deleting_a_lower_file_is_a_whiteout_and_the_pushed_image_unpacks() {
    let node = BuildNode::new();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM rkube-test/busybox:1\nCOPY data /data/\nRUN rm /etc/group /data/gone && mkdir -p /made && echo made > /made/f && ln /made/f /made/hard\n",
        ),
        ("data/keep", "keep\n"),
        ("data/gone", "gone\n"),
    ]);
    // ADD extracts a local (gzip) tar; COPY --chown/--chmod set owner and mode.
    std::fs::create_dir_all(ctx.path().join("pkg/lib")).unwrap();
    std::fs::write(ctx.path().join("pkg/lib/x.so"), "x").unwrap();
    let archive = ctx.path().join("pkg.tar.gz");
    ok(&Command::new("tar").arg("-czf").arg(&archive).arg("-C").arg(ctx.path()).arg("pkg").output().unwrap());
    std::fs::remove_dir_all(ctx.path().join("pkg")).unwrap();
    let mut dockerfile = std::fs::read_to_string(ctx.path().join("Dockerfile")).unwrap();
    dockerfile.push_str("ADD pkg.tar.gz /opt/\nCOPY --chown=nobody --chmod=0600 data/keep /owned\n");
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ok(&node.build(&["-t", "wh:1", &ctx.path().display().to_string()]));
    // The RUN layer holds whiteouts for the deleted lower files, and no mount stubs.
    let store = node.store();
    let digest = store.tag("docker.io/library/wh:1").unwrap().unwrap();
    let refs = store.manifest_refs(&digest).unwrap();
    let top = &refs.layers[refs.layers.len() - 3];
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(store.blob_path(&top.digest)).unwrap());
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        names.push((e.path().unwrap().display().to_string(), e.header().entry_type()));
    }
    let paths: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    assert!(paths.contains(&"etc/.wh.group"), "{paths:?}");
    assert!(paths.contains(&"data/.wh.gone"), "{paths:?}");
    assert!(names.contains(&("made/hard".to_string(), tar::EntryType::Link)), "hardlink kept: {names:?}");
    for stub in ["proc", "sys", "dev", "etc/hosts", "etc/resolv.conf"] {
        assert!(!paths.contains(&stub), "mount stub {stub} in the layer: {paths:?}");
    }

    // Push, copy back with skopeo, unpack with umoci: the tree is what the Dockerfile says.
    let target = format!("{}/rkube-test/wh:1", node.registry.host());
    ok(&rkubelet(&["image", "push", "--root", &node.root().display().to_string(), "wh:1", &target], None));
    let oci = node.dir.path().join("oci");
    let copied = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{target}"),
            &format!("oci:{}:wh", oci.display()),
        ])
        .output()
        .unwrap();
    ok(&copied);
    let bundle = node.dir.path().join("bundle");
    ok(&Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:wh", oci.display())])
        .arg(&bundle)
        .output()
        .unwrap());
    let rootfs = bundle.join("rootfs");
    assert!(!rootfs.join("etc/group").exists(), "deleted by RUN");
    assert!(rootfs.join("etc/passwd").is_file());
    assert!(!rootfs.join("data/gone").exists());
    assert_eq!(std::fs::read(rootfs.join("data/keep")).unwrap(), b"keep\n");
    assert_eq!(std::fs::read(rootfs.join("made/f")).unwrap(), b"made\n");
    assert!(std::fs::symlink_metadata(rootfs.join("bin/sh")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(rootfs.join("opt/pkg/lib/x.so")).unwrap(), b"x", "ADD extracted the tar");
    let owned = std::fs::metadata(rootfs.join("owned")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((owned.uid(), owned.gid(), owned.mode() & 0o7777), (65534, 65534, 0o600));
    node.assert_clean();
}

#[test]
fn the_cache_skips_unchanged_steps_and_reruns_after_a_changed_copy() {
    let node = BuildNode::new();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM rkube-test/busybox:1\nCOPY a.txt /a.txt\nRUN cat /a.txt > /a2\nCOPY b.txt /b.txt\nRUN cat /b.txt > /b2\nCMD [\"cat\", \"/b2\"]\n",
        ),
        ("a.txt", "a\n"),
        ("b.txt", "b\n"),
        (".dockerignore", "ignored.txt\n"),
    ]);
    let path = ctx.path().display().to_string();
    let first = ok(&node.build(&["-t", "cache:1", &path]));
    assert_eq!(counts(&first), (5, 0, 2));
    let d1 = node.store().tag("docker.io/library/cache:1").unwrap().unwrap();
    let second = ok(&node.build(&["-t", "cache:1", &path]));
    assert_eq!(counts(&second), (0, 5, 0), "nothing runs again");
    assert_eq!(node.store().tag("docker.io/library/cache:1").unwrap().unwrap(), d1, "same image");
    // An ignored file changes nothing.
    std::fs::write(ctx.path().join("ignored.txt"), "x").unwrap();
    assert_eq!(counts(&ok(&node.build(&["-t", "cache:1", &path]))), (0, 5, 0));
    // Changing b.txt reruns from its COPY on.
    std::fs::write(ctx.path().join("b.txt"), "b2\n").unwrap();
    let third = ok(&node.build(&["-t", "cache:2", &path]));
    assert_eq!(counts(&third), (3, 2, 1));
    assert_eq!(node.file("docker.io/library/cache:2", "b2").unwrap(), b"b2\n");
    // --no-cache runs everything.
    assert_eq!(counts(&ok(&node.build(&["--no-cache", "-t", "cache:3", &path]))), (5, 0, 2));
    node.assert_clean();

    // A failed build leaves nothing: not the layer of its successful COPY, nor cache entries.
    let listing = |dir: &str| {
        let mut v: Vec<_> =
            std::fs::read_dir(node.root().join(dir)).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    let (layers, cache, blobs) = (listing("layers"), listing("build-cache"), listing("blobs/sha256"));
    std::fs::write(
        ctx.path().join("Dockerfile.fail"),
        "FROM rkube-test/busybox:1\nCOPY a.txt /new-a\nRUN echo fresh > /fresh && exit 3\n",
    )
    .unwrap();
    let fail = ctx.path().join("Dockerfile.fail").display().to_string();
    let err = fails(&node.build(&["-t", "cache:fail", "-f", &fail, &path]));
    assert!(err.contains("line 3") && err.contains("exit code 3"), "{err}");
    assert_eq!(listing("layers"), layers, "the failed build's layers are gone");
    assert_eq!(listing("build-cache"), cache);
    assert_eq!(listing("blobs/sha256"), blobs);
    assert!(node.store().tag("docker.io/library/cache:fail").unwrap().is_none());
    node.assert_clean();

    // An interrupted build (SIGINT during a RUN) stops at once and leaves nothing either.
    std::fs::write(
        ctx.path().join("Dockerfile.int"),
        "FROM rkube-test/busybox:1\nCOPY a.txt /int-a\nRUN echo run-started >&2; sleep 60\n",
    )
    .unwrap();
    let int = ctx.path().join("Dockerfile.int").display().to_string();
    let (status, seen, took) =
        interrupted(node.build_command(&["-t", "cache:int", "-f", &int, &path]), &["run-started"]);
    assert!(took < std::time::Duration::from_secs(8), "the interrupted build took {took:?}");
    assert!(!status.success(), "{seen}");
    let errors: Vec<&str> = seen.lines().filter(|l| l.starts_with("rkubelet: ")).collect();
    assert_eq!(errors, ["rkubelet: Dockerfile line 3: interrupted"], "{seen}");
    assert_eq!(listing("layers"), layers, "the interrupted build's layers are gone");
    assert_eq!(listing("build-cache"), cache);
    assert_eq!(listing("blobs/sha256"), blobs);
    assert!(node.store().tag("docker.io/library/cache:int").unwrap().is_none());
    node.assert_clean();
}

/// Runs `command`, sends it SIGINT (as a terminal's Ctrl-C) once its stderr has shown every one of
/// `started`, and returns how it ended, all its stderr and how long it took after the signal.
fn interrupted(
    mut command: Command,
    started: &[&str],
) -> (std::process::ExitStatus, String, std::time::Duration) {
    let mut child =
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !started.iter().all(|s| seen.contains(s)) {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0, "never started: {seen}");
        seen.push_str(&line);
    }
    let signalled = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut seen).unwrap();
    let status = child.wait().unwrap();
    (status, seen, signalled.elapsed())
}

#[test]
fn source_date_epoch_gives_one_digest() {
    let node = BuildNode::new();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM rkube-test/busybox:1\nCOPY f /f\nRUN echo fixed > /now && mkdir /d && touch /d/x\nENV A=1\n",
        ),
        ("f", "content\n"),
    ]);
    let path = ctx.path().display().to_string();
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let d1 = ok(&node.build_env(&["-q", "--no-cache", "-t", "r:1", &path], &epoch)).trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let d2 = ok(&node.build_env(&["-q", "--no-cache", "-t", "r:2", &path], &epoch)).trim().to_string();
    assert_eq!(d1, d2, "reproducible");
    let c = node.config("docker.io/library/r:1");
    assert_eq!(c["created"], "2023-11-14T22:13:20Z");
    let ours: Vec<&serde_json::Value> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["comment"] == "buildkit.dockerfile.v0")
        .collect();
    assert_eq!(ours.len(), 3);
    assert!(ours.iter().all(|h| h["created"] == "2023-11-14T22:13:20Z"));
}

#[test]
fn malicious_contexts_and_dockerfiles_are_confined() {
    let node = BuildNode::new();
    let sentinel = store::Sentinel::create(node.dir.path().join("host-sentinel"));
    let ctx = context(&[("inside.txt", "inside\n")]);
    std::os::unix::fs::symlink("/etc", ctx.path().join("etc-link")).unwrap();
    std::os::unix::fs::symlink(&sentinel.path, ctx.path().join("sentinel-link")).unwrap();
    let path = ctx.path().display().to_string();
    let dockerfile = |text: &str| std::fs::write(ctx.path().join("Dockerfile"), text).unwrap();

    // Symlinks in the context are copied as links, never followed.
    dockerfile("FROM rkube-test/busybox:1\nCOPY . /ctx/\n");
    ok(&node.build(&["-t", "m:1", &path]));
    let store = node.store();
    let layers = store.image_layers(&store.tag("docker.io/library/m:1").unwrap().unwrap()).unwrap();
    let top = layers.last().unwrap();
    assert_eq!(std::fs::read_link(top.join("ctx/etc-link")).unwrap(), Path::new("/etc"));
    assert_eq!(std::fs::read_link(top.join("ctx/sentinel-link")).unwrap(), sentinel.path);
    assert!(!top.join("ctx/etc-link/passwd").exists() || top.join("ctx/etc-link").is_symlink());

    // A named source through a symlink resolves inside the context (no /etc there).
    dockerfile("FROM rkube-test/busybox:1\nCOPY etc-link/passwd /p\n");
    assert!(fails(&node.build(&["-t", "m:2", &path])).contains("not found"));
    // `..` is refused.
    dockerfile("FROM rkube-test/busybox:1\nCOPY ../x /x\n");
    let err = fails(&node.build(&["-t", "m:3", &path]));
    assert!(err.contains("line 2") && err.contains("outside the build context"), "{err}");
    // A RUN cannot mount, nor write the host through /proc/self/exe or a link to the sentinel.
    for (case, run) in [
        ("mount", "mount -t tmpfs none /mnt"),
        ("exe", "echo pwned > /proc/self/exe"),
        ("proc-root", format!("echo pwned > /proc/1/root{}", sentinel.path.display()).leak()),
    ] {
        dockerfile(&format!("FROM rkube-test/busybox:1\nCOPY . /ctx/\nRUN {run}\n"));
        let err = fails(&node.build(&["-t", "m:4", &path]));
        assert!(err.contains("exit code"), "{case}: {err}");
        sentinel.assert_untouched(case);
        node.assert_clean();
    }
    // A named source that is a link out of the context is not followed: the build fails.
    dockerfile("FROM rkube-test/busybox:1\nCOPY sentinel-link /l\n");
    assert!(fails(&node.build(&["-t", "m:7", &path])).contains("sentinel-link: not found"));
    // Writing through the copied link writes inside the container only.
    dockerfile(
        "FROM rkube-test/busybox:1\nCOPY . /ctx/\nRUN mkdir -p $(dirname $(readlink /ctx/sentinel-link)) && echo pwned > /ctx/sentinel-link\n",
    );
    ok(&node.build(&["-t", "m:5", &path]));
    sentinel.assert_untouched("write through link");
    // Unsupported syntax: one line naming the line.
    dockerfile("FROM rkube-test/busybox:1\nRUN --mount=type=cache,target=/x true\n");
    let err = fails(&node.build(&["-t", "m:6", &path]));
    assert!(err.contains("Dockerfile line 2: RUN --mount is not supported"), "{err}");
    assert!(store.tag("docker.io/library/m:6").unwrap().is_none());
    node.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_cloudbuild_builds_blue_and_green_and_pushes_them() {
    let node = tokio::task::spawn_blocking(BuildNode::new).await.unwrap();
    let target = TestRegistry::start(Mode::Token);
    // The seed's cloudbuild.yaml byte for byte, read from the fixture as it is. gcr.io is served by the
    // token-auth test registry through the registries config's `locations`; the docker config holds the
    // credential under `gcr.io` (as `docker login gcr.io` writes it), the CA is trusted for the location.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build/seed");
    let seed = fixtures.join("cloudbuild.yaml");
    let seed_bytes = std::fs::read(&seed).unwrap();
    assert!(String::from_utf8_lossy(&seed_bytes).contains("'gcr.io/$PROJECT_ID/imageview:blue'"));
    let src = node.dir.path().join("src");
    ok(&Command::new("cp").arg("-r").arg(&fixtures).arg(&src).output().unwrap());
    let docker = node.dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("_json_key:{}", registry::JSON_KEY),
    );
    std::fs::write(docker.join("config.json"), format!(r#"{{"auths":{{"gcr.io":{{"auth":"{auth}"}}}}}}"#))
        .unwrap();
    let cfg = node.dir.path().join("registries.yaml");
    let ca = target.ca_file.clone().unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "locations:\n  gcr.io: \"https://{host}\"\nca:\n  \"{host}\": {}\n",
        ca.display(),
        host = target.host()
    ));
    std::fs::write(&cfg, text).unwrap();
    let args = vec![
        "build".to_string(),
        format!("--root={}", node.root().display()),
        format!("--registries-config={}", cfg.display()),
        format!("--run-root={}", node.dir.path().join("run").display()),
        format!("--config={}", seed.display()),
        "--substitutions=PROJECT_ID=hello-docker".to_string(),
        src.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_rkubelet"))
            .args(&args)
            .env("DOCKER_CONFIG", &docker)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    ok(&out);
    assert_eq!(std::fs::read(&seed).unwrap(), seed_bytes);
    // The push went through the token flow with the gcr.io credential.
    let tokens = target.token_server.as_ref().unwrap();
    assert!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert_eq!(tokens.refused.load(std::sync::atomic::Ordering::SeqCst), 0);
    for color in ["blue", "green"] {
        let name = format!("gcr.io/hello-docker/imageview:{color}");
        let page = node.file(&name, "www/index.html").unwrap();
        assert!(String::from_utf8_lossy(&page).contains(&format!("imageview {color}")));
        // In the location's registry: the manifest is there under the pushed tag.
        let client = target.admin_client();
        let repo = target.repo("hello-docker/imageview");
        let fetched = client.get_manifest(&repo, color).await.unwrap();
        let digest = node.store().tag(&name).unwrap().unwrap();
        assert_eq!(rkube::image::Digest::sha256_of(&fetched.body), digest);
    }
    node.assert_clean();
}

#[test]
fn a_built_image_serves_its_page_as_a_pod() {
    let build = BuildNode::new();
    let node = pod::PodNode::new(71);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build/seed/blue");
    ok(&build.build_into(
        &node.root(),
        &["-t", "gcr.io/hello-docker/imageview:blue", &fixtures.display().to_string()],
    ));
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: blue}\nspec:\n  terminationGracePeriodSeconds: 0\n  \
                containers:\n  - {name: web, image: \"gcr.io/hello-docker/imageview:blue\", imagePullPolicy: Never}\n";
    let out = node.run_yaml("blue", yaml, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut page = String::new();
    pod::wait_for(std::time::Duration::from_secs(10), || {
        let out = node.rk(
            "exec",
            &["blue", "-c", "web"],
            &["timeout", "3", "wget", "-qO-", "http://127.0.0.1:80/"],
        );
        page = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
    });
    assert!(page.contains("imageview blue"), "page: {page:?}");
    let tmp: Vec<_> =
        std::fs::read_dir(node.root().join("tmp")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(tmp.is_empty(), "store tmp/ left: {tmp:?}");
}

#[test]
fn run_steps_reach_out_through_the_pod_network_nat() {
    let build = BuildNode::new();
    let net = network::TestNode::new(72);
    let _server = network::Server::start(&net.ext_ns, 8080, "ext");
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM rkube-test/busybox:1\nRUN cat /etc/resolv.conf >/dev/null && nc {}:8080 </dev/null > /answer\n",
            net.lan_ext_ip()
        ),
    )]);
    let out = build.build(&[
        "-t",
        "net:1",
        &format!("--pod-cidr={}", net.config.pod_cidr),
        &format!("--bridge={}", net.config.bridge),
        &format!("--node-netns={}", net.node_ns.display()),
        &ctx.path().display().to_string(),
    ]);
    ok(&out);
    // The peer the outside server saw is the node's LAN address: masqueraded.
    let answer = build.file("docker.io/library/net:1", "answer").unwrap();
    assert_eq!(String::from_utf8_lossy(&answer).trim(), format!("ext {}", net.lan_node_ip()));
    // The RUN's network is gone again (no pod netns, no IPAM allocation left).
    let pods = build.dir.path().join("run/netns");
    let left: Vec<_> =
        std::fs::read_dir(&pods).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "netns left: {left:?}");
    // Without --pod-cidr a RUN has no way out.
    let err = fails(&build.build(&["--no-cache", "-t", "net:2", &ctx.path().display().to_string()]));
    assert!(err.contains("exit code"), "{err}");
    build.assert_clean();
}

#[test]
fn cloudbuild_container_steps_share_the_workspace_with_docker_steps() {
    let node = BuildNode::new();
    let src = context(&[
        (
            "cloudbuild.yaml",
            "steps:\n\
             - name: rkube-test/busybox:1\n  id: gen\n  entrypoint: sh\n  dir: app\n  env: ['GREETING=hello $_WHO']\n  \
               args: ['-c', 'echo \"$$GREETING from $$(pwd)\" > generated.txt']\n\
             - name: gcr.io/cloud-builders/docker\n  waitFor: [gen]\n  args: [build, -t, 'local/gen:1', app]\n\
             - name: gcr.io/cloud-builders/docker\n  args: [tag, 'local/gen:1', 'local/gen:2']\n",
        ),
        ("app/Dockerfile", "FROM rkube-test/busybox:1\nCOPY generated.txt /g\n"),
    ]);
    let cfg = src.path().join("cloudbuild.yaml").display().to_string();
    ok(&node.build(&[
        &format!("--config={cfg}"),
        "--substitutions=_WHO=rkube",
        &src.path().display().to_string(),
    ]));
    assert_eq!(node.file("docker.io/local/gen:2", "g").unwrap(), b"hello rkube from /workspace/app\n");
    // A failing container step stops the build with one line.
    std::fs::write(
        src.path().join("cloudbuild.yaml"),
        "steps:\n- name: rkube-test/busybox:1\n  args: [sh, -c, 'exit 4']\n- name: docker\n  args: [tag, 'local/gen:1', 'local/never:1']\n",
    )
    .unwrap();
    let err = fails(&node.build(&[&format!("--config={cfg}"), &src.path().display().to_string()]));
    assert!(err.contains("step 1") && err.contains("exit code 4"), "{err}");
    assert!(node.store().tag("docker.io/local/never:1").unwrap().is_none());
    node.assert_clean();
}

/// The parent pid of `pid` and its state letter, from `/proc/<pid>/stat` (None once it is gone).
fn ppid_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((rest.next()?.parse().ok()?, state))
}

#[test]
fn cloudbuild_steps_do_not_outlive_their_parent() {
    let node = BuildNode::new();
    let root = node.root().display().to_string();
    let rootfs = node.dir.path().join("held");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/held"), b"1").unwrap();
    ok(&rkubelet(&["image", "import", "--root", &root, &rootfs.display().to_string(), "local/held:1"], None));
    let src = context(&[("x", "")]);
    let src_dir = src.path().display().to_string();
    // A step whose parent (as handed over) is not its parent any more does nothing.
    let job = |parent: u32| {
        format!(
            r#"--cloudbuild-step={{"number":1,"action":{{"Tag":{{"source":"local/held:1","target":"local/copy:1"}}}},"parent":{parent}}}"#
        )
    };
    let gone = if std::process::id() == 1 { 2 } else { 1 };
    let err = fails(&node.build(&[&job(gone), &src_dir]));
    assert!(err.contains(&format!("the parent build (pid {gone}) is gone")), "{err}");
    assert!(node.store().tag("docker.io/local/copy:1").unwrap().is_none());
    ok(&node.build(&[&job(std::process::id()), &src_dir]));
    assert!(node.store().tag("docker.io/local/copy:1").unwrap().is_some());

    // A push step hangs on a registry that accepts connections and never answers; killing the
    // parent takes the step along at once (its own retries would take minutes).
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    hung.set_nonblocking(true).unwrap();
    let target = format!("127.0.0.1:{}/held:1", hung.local_addr().unwrap().port());
    std::fs::write(
        src.path().join("cloudbuild.yaml"),
        format!(
            "steps:\n- name: gcr.io/cloud-builders/docker\n  args: [tag, 'local/held:1', '{target}']\n\
             - name: gcr.io/cloud-builders/docker\n  args: [push, '{target}']\n"
        ),
    )
    .unwrap();
    let mut parent = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .arg("build")
        .arg(format!("--root={root}"))
        .arg(format!("--registries-config={}", node.dir.path().join("registries.yaml").display()))
        .arg(format!("--run-root={}", node.dir.path().join("run").display()))
        .arg(format!("--config={}", src.path().join("cloudbuild.yaml").display()))
        .arg(&src_dir)
        .env_remove("RKUBE_ROOT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let parent_pid = parent.id() as i32;
    // The step process, once it is talking to the registry (past its prctl).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut held = Vec::new();
    let step = loop {
        if let Ok((conn, _)) = hung.accept() {
            held.push(conn);
        }
        let step = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|&pid| ppid_and_state(pid).is_some_and(|(pp, _)| pp == parent_pid));
        if let Some(pid) = step
            && !held.is_empty()
        {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "no step talking to the registry");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Whatever happens below, the step is ended (by its pid) before the test returns.
    struct EndStep(i32);
    impl Drop for EndStep {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::SIGKILL);
        }
    }
    let _end = EndStep(step);
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    // Gone, or a zombie left to whoever reaps orphans here.
    while ppid_and_state(step).is_some_and(|(_, state)| state != 'Z') {
        assert!(std::time::Instant::now() < deadline, "step {step} outlived its killed parent");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(held);
    node.assert_clean();
}

/// A container step that marks itself started (`<me>.ready`) and waits (bounded) for `<peer>.ready`.
fn rendezvous_step(me: &str, peer: &str) -> String {
    format!(
        "- name: rkube-test/busybox:1\n  id: {me}\n  waitFor: ['-']\n  entrypoint: sh\n  \
         args: ['-c', 'touch {me}.ready; i=0; while [ ! -f {peer}.ready ]; do i=$$((i+1)); [ $$i -gt 300 ] && exit 7; sleep 0.1; done']\n"
    )
}

#[test]
fn cloudbuild_wait_for_runs_steps_concurrently() {
    let node = BuildNode::new();
    // a and b each wait for the other's file: run one after the other, the first gives up after
    // 30 s (exit 7). The build step has no waitFor, so it runs after both.
    let src = context(&[
        (
            "cloudbuild.yaml",
            &format!(
                "steps:\n{}{}- name: gcr.io/cloud-builders/docker\n  args: [build, -t, 'local/both:1', .]\n",
                rendezvous_step("a", "b"),
                rendezvous_step("b", "a")
            ),
        ),
        ("Dockerfile", "FROM rkube-test/busybox:1\nCOPY a.ready b.ready /r/\n"),
    ]);
    let cfg = src.path().join("cloudbuild.yaml").display().to_string();
    let started = std::time::Instant::now();
    let out = node.build(&[&format!("--config={cfg}"), &src.path().display().to_string()]);
    ok(&out);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(node.file("docker.io/local/both:1", "r/a.ready").is_some());
    assert!(node.file("docker.io/local/both:1", "r/b.ready").is_some());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("step 3: "), "a step's output is relayed with its number: {stderr}");
    assert!(stderr.contains("cloudbuild: 3 steps, by waitFor: [1 2] [3]"), "{stderr}");

    // A failure: no new step starts, the running one is waited for, the failed step is named.
    std::fs::write(
        src.path().join("cloudbuild.yaml"),
        "steps:\n\
         - name: rkube-test/busybox:1\n  waitFor: ['-']\n  args: [sh, -c, 'sleep 2; touch slow.done']\n\
         - name: rkube-test/busybox:1\n  waitFor: ['-']\n  args: [sh, -c, 'exit 3']\n\
         - name: docker\n  args: [tag, 'local/both:1', 'local/never:1']\n",
    )
    .unwrap();
    let err = fails(&node.build(&[&format!("--config={cfg}"), &src.path().display().to_string()]));
    assert!(err.contains("step 2") && err.contains("exit code 3"), "{err}");
    assert!(src.path().join("slow.done").exists(), "the running step was waited for");
    assert!(node.store().tag("docker.io/local/never:1").unwrap().is_none(), "no step started after");
    node.assert_clean();

    // An interrupt (SIGINT, as a terminal's Ctrl-C) while a container step and a RUN run: both
    // stop and remove what they made, no further step starts, the build fails saying so.
    std::fs::write(
        src.path().join("cloudbuild.yaml"),
        "steps:\n\
         - name: rkube-test/busybox:1\n  waitFor: ['-']\n  args: [sh, -c, 'echo container-started >&2; sleep 60']\n\
         - name: docker\n  waitFor: ['-']\n  args: [build, -t, 'local/int:1', -f, Dockerfile.int, .]\n\
         - name: docker\n  args: [tag, 'local/both:1', 'local/never:1']\n",
    )
    .unwrap();
    std::fs::write(
        src.path().join("Dockerfile.int"),
        "FROM rkube-test/busybox:1\nRUN echo run-started >&2; sleep 60\n",
    )
    .unwrap();
    let (status, seen, took) = interrupted(
        node.build_command(&[&format!("--config={cfg}"), &src.path().display().to_string()]),
        &["container-started", "run-started"],
    );
    assert!(took < std::time::Duration::from_secs(15), "the interrupt took {took:?}");
    assert!(!status.success(), "{seen}");
    assert!(seen.lines().any(|l| l.starts_with("rkubelet: interrupted")), "{seen}");
    assert!(node.store().tag("docker.io/local/int:1").unwrap().is_none());
    assert!(node.store().tag("docker.io/local/never:1").unwrap().is_none(), "no step started after");
    node.assert_clean();
}

/// An xattr of `path` (not following a final symlink), through the crate's own wrapper.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    rkube::sys::openat::lgetxattr(path, name).unwrap()
}

#[test]
fn copy_keeps_hardlinks_xattrs_and_file_capabilities_and_takes_symbolic_chmod() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let node = BuildNode::new();
    let ctx = context(&[
        ("data/a", "same inode\n"),
        ("data/plain", "plain\n"),
        ("data/run.sh", "#!/bin/sh\n"),
        ("data/tool", "a tool\n"),
        (
            "Dockerfile",
            "FROM rkube-test/busybox:1\n\
             COPY data /data/\n\
             COPY --chmod=u=rwX,go=rX data /sym/\n\
             COPY --chmod=+x data/plain /plus-x\n",
        ),
    ]);
    let data = ctx.path().join("data");
    std::fs::create_dir(data.join("sub")).unwrap();
    std::fs::hard_link(data.join("a"), data.join("sub/b")).unwrap();
    for (f, mode) in [("a", 0o640), ("plain", 0o600), ("run.sh", 0o700), ("sub", 0o700)] {
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let a = std::fs::File::open(data.join("a")).unwrap();
    rkube::sys::openat::fsetxattr(&a, "user.rkube-test", b"kept").unwrap();
    // A file capability, set by the real tool (libcap2-bin).
    ok(&Command::new("setcap").arg("cap_net_bind_service=+ep").arg(data.join("tool")).output().unwrap());
    let cap = xattr(&data.join("tool"), "security.capability").expect("setcap set security.capability");
    ok(&node.build(&["-t", "links:1", &ctx.path().display().to_string()]));

    // The COPY layer: a link entry for the second name, the xattrs as PAX records.
    let store = node.store();
    let digest = store.tag("docker.io/library/links:1").unwrap().unwrap();
    let refs = store.manifest_refs(&digest).unwrap();
    let copy_layer = &refs.layers[refs.layers.len() - 3];
    let mut archive = tar::Archive::new(std::fs::File::open(store.blob_path(&copy_layer.digest)).unwrap());
    let mut seen = std::collections::BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut xattrs = Vec::new();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for ext in pax {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let link = e.link_name().unwrap().map(|l| l.display().to_string());
        seen.insert(path, (e.header().entry_type(), link, xattrs));
    }
    assert_eq!(seen["data/a"].0, tar::EntryType::Regular, "{seen:?}");
    assert_eq!(seen["data/a"].2, [("user.rkube-test".to_string(), b"kept".to_vec())]);
    assert_eq!(seen["data/sub/b"].0, tar::EntryType::Link, "{seen:?}");
    assert_eq!(seen["data/sub/b"].1.as_deref(), Some("data/a"));
    assert_eq!(seen["data/tool"].2, [("security.capability".to_string(), cap.clone())]);

    // Pulled back by skopeo and unpacked by umoci: one inode, the xattr and the capability.
    let target = format!("{}/rkube-test/links:1", node.registry.host());
    ok(&rkubelet(&["image", "push", "--root", &node.root().display().to_string(), "links:1", &target], None));
    let oci = node.dir.path().join("oci");
    ok(&Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{target}"),
            &format!("oci:{}:links", oci.display()),
        ])
        .output()
        .unwrap());
    let bundle = node.dir.path().join("bundle");
    ok(&Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:links", oci.display())])
        .arg(&bundle)
        .output()
        .unwrap());
    let rootfs = bundle.join("rootfs");
    let (ma, mb) = (
        std::fs::metadata(rootfs.join("data/a")).unwrap(),
        std::fs::metadata(rootfs.join("data/sub/b")).unwrap(),
    );
    assert_eq!((ma.ino(), ma.nlink()), (mb.ino(), 2), "one inode after unpack");
    assert_eq!(xattr(&rootfs.join("data/a"), "user.rkube-test").as_deref(), Some(&b"kept"[..]));
    let getcap = ok(&Command::new("getcap").arg(rootfs.join("data/tool")).output().unwrap());
    assert!(getcap.contains("cap_net_bind_service=ep"), "{getcap}");
    // rkube's own store unpack keeps them as well.
    let layers = store.image_layers(&digest).unwrap();
    let in_store = &layers[layers.len() - 3];
    assert_eq!(xattr(&in_store.join("data/tool"), "security.capability"), Some(cap));

    // Symbolic --chmod, per entry: X only for directories and files already executable.
    let mode = |p: &str| std::fs::metadata(rootfs.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("data/plain"), 0o600, "COPY keeps the mode");
    assert_eq!(mode("sym/plain"), 0o644);
    assert_eq!(mode("sym/a"), 0o644);
    assert_eq!(mode("sym/run.sh"), 0o755);
    assert_eq!(mode("sym/sub"), 0o755);
    assert_eq!(mode("plus-x"), 0o711);
    // An invalid mode: one line naming the Dockerfile line.
    std::fs::write(ctx.path().join("Dockerfile"), "FROM rkube-test/busybox:1\nCOPY --chmod=u+q data /bad/\n")
        .unwrap();
    let err = fails(&node.build(&["-t", "links:2", &ctx.path().display().to_string()]));
    assert!(err.contains("Dockerfile line 2") && err.contains("invalid --chmod \"u+q\""), "{err}");
    node.assert_clean();
}
