//! `rkubelet image` end to end as a user runs it: pull through a docker.io mirror config, ls/inspect
//! (`-o json`), tag, push to a token-auth TLS registry with docker `config.json` credentials (`_json_key`),
//! pull back by digest, rm, one-line errors, and gcr.io pushed to and pulled from its configured location.

#[path = "support/registry.rs"]
mod registry;

use base64::Engine as _;
use registry::{Compression, LayerTar, Mode, TestRegistry, build_image, push_image};
use std::path::Path;
use std::process::Output;

/// Runs the rkubelet binary on a blocking thread (the token server keeps running meanwhile).
async fn rkubelet(args: Vec<String>, docker_config: &Path) -> Output {
    let docker_config = docker_config.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rkubelet"))
            .args(&args)
            .env("DOCKER_CONFIG", docker_config)
            .env_remove("RKUBE_ROOT")
            .env_remove("RKUBE_REGISTRIES_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A Docker config dir under `dir` with the GCR-style `_json_key` credential for `host`.
fn docker_config(dir: &Path, host: &str) -> std::path::PathBuf {
    let docker = dir.join("docker");
    std::fs::create_dir(&docker).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("_json_key:{}", registry::JSON_KEY));
    std::fs::write(docker.join("config.json"), format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#))
        .unwrap();
    docker
}

/// `image --root ROOT --registries-config CFG ARGS…`.
fn image_args(root: &str, cfg: &Path, args: &[&str]) -> Vec<String> {
    let mut v = vec!["image".into(), "--root".into(), root.to_string(), "--registries-config".into()];
    v.push(cfg.display().to_string());
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_ls_inspect_tag_push_rm() {
    let source = TestRegistry::start(Mode::Anonymous);
    let target = TestRegistry::start(Mode::Token);
    let tar = LayerTar::new()
        .dir("usr/share/nginx/html")
        .file("usr/share/nginx/html/index.html", b"nginx 1.10")
        .finish();
    let img = build_image(&[(tar, Compression::Gzip)], "amd64", false);
    push_image(&source.admin_client(), &source.repo("library/nginx"), "1.10", &img).await;

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root").display().to_string();
    let cfg = tmp.path().join("registries.yaml");
    let ca = target.ca_file.clone().unwrap();
    std::fs::write(
        &cfg,
        format!(
            "mirrors:\n  docker.io: [\"http://{}\"]\n  gcr.io: [\"http://{}\"]\nca:\n  \"{}\": {}\n",
            source.host(),
            source.host(),
            target.host(),
            ca.display()
        ),
    )
    .unwrap();
    let docker = docker_config(tmp.path(), &target.host());
    let run = |args: &[&str]| image_args(&root, &cfg, args);

    // The demo's command line: a docker.io short name through the mirror.
    let out = ok(&rkubelet(run(&["pull", "nginx:1.10"]), &docker).await);
    assert!(
        out.contains("docker.io/library/nginx:1.10") && out.contains(&img.manifest.digest.to_string()),
        "{out}"
    );
    let ls = ok(&rkubelet(run(&["ls"]), &docker).await);
    assert!(ls.contains("docker.io/library/nginx:1.10") && ls.contains(img.manifest.digest.short()), "{ls}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&rkubelet(run(&["ls", "-o", "json"]), &docker).await)).unwrap();
    assert_eq!(json[0]["name"], "docker.io/library/nginx:1.10");
    assert_eq!(json[0]["layers"], 1);
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&rkubelet(run(&["inspect", "nginx:1.10"]), &docker).await)).unwrap();
    assert_eq!(inspect["digest"], img.manifest.digest.to_string());
    assert_eq!(inspect["config"]["architecture"], "amd64");
    assert_eq!(inspect["layerDirs"].as_array().unwrap().len(), 1);

    // tag + push to the GCR-style registry with docker config credentials.
    let dest = format!("{}/proj/nginx:v1", target.host());
    ok(&rkubelet(run(&["tag", "nginx:1.10", &dest]), &docker).await);
    let pushed = ok(&rkubelet(run(&["push", &dest]), &docker).await);
    assert!(pushed.contains(&img.manifest.digest.to_string()), "{pushed}");

    // rm frees everything; a pull by digest from the token registry brings it back.
    ok(&rkubelet(run(&["rm", "nginx:1.10", &dest]), &docker).await);
    let json: serde_json::Value =
        serde_json::from_str(&ok(&rkubelet(run(&["ls", "-o", "json"]), &docker).await)).unwrap();
    assert_eq!(json, serde_json::json!([]));
    let by_digest = format!("{}/proj/nginx@{}", target.host(), img.manifest.digest);
    let out = ok(&rkubelet(run(&["pull", "-q", &by_digest]), &docker).await);
    assert_eq!(out.trim(), img.manifest.digest.to_string());
}

/// `locations: {gcr.io: https://<token registry>}`: `image push gcr.io/...` goes to the location (not to
/// gcr.io), and `image pull gcr.io/...` with no gcr.io mirror comes from it; the credential is found under
/// the location's host, the CA under `gcr.io`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcr_io_is_pushed_to_and_pulled_from_its_location() {
    let source = TestRegistry::start(Mode::Anonymous);
    let target = TestRegistry::start(Mode::Token);
    let tar = LayerTar::new().dir("www").file("www/index.html", b"served at the location").finish();
    let img = build_image(&[(tar, Compression::Gzip)], "amd64", false);
    push_image(&source.admin_client(), &source.repo("library/web"), "1", &img).await;

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root").display().to_string();
    let cfg = tmp.path().join("registries.yaml");
    std::fs::write(
        &cfg,
        format!(
            "mirrors:\n  docker.io: [\"http://{}\"]\nlocations:\n  gcr.io: \"https://{}\"\nca:\n  gcr.io: {}\n",
            source.host(),
            target.host(),
            target.ca_file.clone().unwrap().display()
        ),
    )
    .unwrap();
    let docker = docker_config(tmp.path(), &target.host());
    let run = |args: &[&str]| image_args(&root, &cfg, args);

    ok(&rkubelet(run(&["pull", "web:1"]), &docker).await);
    ok(&rkubelet(run(&["tag", "web:1", "gcr.io/proj/web:v1"]), &docker).await);
    let pushed = ok(&rkubelet(run(&["push", "gcr.io/proj/web:v1"]), &docker).await);
    assert!(pushed.contains(&format!("pushed gcr.io/proj/web:v1 {}", img.manifest.digest)), "{pushed}");
    let fetched = target.admin_client().get_manifest(&target.repo("proj/web"), "v1").await.unwrap();
    assert_eq!(fetched.digest, img.manifest.digest);
    let tokens = target.token_server.as_ref().unwrap();
    assert!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst) > 0);

    // Pulled back by its gcr.io name: no gcr.io mirror, so from the location.
    ok(&rkubelet(run(&["rm", "web:1", "gcr.io/proj/web:v1"]), &docker).await);
    let out = ok(&rkubelet(run(&["pull", "gcr.io/proj/web:v1"]), &docker).await);
    assert!(
        out.contains(&format!("pulled gcr.io/proj/web:v1 {} from {}", img.manifest.digest, target.host())),
        "{out}"
    );
    // The local registry never saw a gcr.io request: the push and the pull went to the location only.
    let log = source.log();
    assert!(log.contains("library/web") && !log.contains("proj/web"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line() {
    let reg = TestRegistry::start(Mode::Basic);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root").display().to_string();
    let docker = tmp.path().join("docker-empty");
    let cases = [
        (vec!["pull".to_string(), format!("{}/no/such:1", reg.host())], "no credentials"),
        (vec!["pull".to_string(), "Bad:Ref:".to_string()], "invalid"),
        (vec!["inspect".to_string(), "nothing:here".to_string()], "no such image"),
    ];
    for (args, want) in cases {
        let mut v = vec!["image".to_string(), "--root".to_string(), root.clone()];
        v.extend(args);
        let out = rkubelet(v, &docker).await;
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        // Progress lines may precede it; the error itself is the last line, and only one.
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("rkubelet: ") && last.contains(want), "{err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("rkubelet: ")).count(), 1, "{err}");
        assert!(!err.contains("panicked"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_a_directory_then_list_and_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), b"imported\n").unwrap();
    let root = tmp.path().join("root").display().to_string();
    let base = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["image".to_string(), "--root".to_string(), root.clone()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let docker = tmp.path().join("docker");
    let out = ok(&rkubelet(base(&["import", &rootfs.display().to_string(), "local/motd:1"]), &docker).await);
    assert!(out.contains("docker.io/local/motd:1"), "{out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&rkubelet(base(&["inspect", "local/motd:1", "-o", "json"]), &docker).await))
            .unwrap();
    let dirs = inspect["layerDirs"].as_array().unwrap();
    assert_eq!(dirs.len(), 1);
    let layer = Path::new(dirs[0].as_str().unwrap());
    assert_eq!(std::fs::read(layer.join("etc/motd")).unwrap(), b"imported\n");
}
