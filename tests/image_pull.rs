//! The pull pipeline end to end against Debian's real `docker-registry`: media types and compressions,
//! multi-platform indexes, whiteouts, auth modes, mirrors, push → pull round trips, and injected faults
//! (5xx, truncated and corrupted blobs, unknown manifests, wrong credentials) leaving the store consistent.

#[path = "support/registry.rs"]
mod registry;

use registry::{
    Compression, FaultProxy, LayerTar, Mode, TestImage, TestRegistry, build_image, build_index, client_with,
    push_image, push_index,
};
use rkube::image::Store;
use rkube::image::config::RegistriesConfig;
use rkube::image::credentials::Credential;
use rkube::image::platform::Platform;
use rkube::image::pull::{PullError, PullEvent, PullOptions, pull};
use rkube::image::reference::Reference;
use rkube::image::registry::RegistryClient;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

fn amd64() -> PullOptions {
    PullOptions { platform: Platform::parse("linux/amd64").unwrap(), ..Default::default() }
}

async fn pull_into(
    client: RegistryClient,
    store: &Arc<Store>,
    image: &str,
) -> Result<rkube::image::pull::Pulled, PullError> {
    pull(Arc::new(client), store.clone(), &Reference::parse(image).unwrap(), &amd64()).await
}

fn new_store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("root")).unwrap();
    (dir, Arc::new(store))
}

fn three_compressions() -> TestImage {
    let l1 = LayerTar::new().dir("bin").file("bin/tool", b"#!/bin/sh\necho gz\n").finish();
    let l2 = LayerTar::new().dir("etc").file("etc/zstd.conf", &vec![b'z'; 100_000]).finish();
    let l3 = LayerTar::new()
        .dir("srv")
        .file("srv/plain.txt", b"uncompressed layer")
        .symlink("srv/link", "plain.txt")
        .finish();
    build_image(&[(l1, Compression::Gzip), (l2, Compression::Zstd), (l3, Compression::None)], "amd64", false)
}

fn assert_unpacked(store: &Store, img: &TestImage, rel: &str, want: &[u8]) {
    let found = img
        .diff_ids
        .iter()
        .filter_map(|d| store.layer_path(d))
        .any(|dir| std::fs::read(dir.join(rel)).map(|b| b == want).unwrap_or(false));
    assert!(found, "{rel} not unpacked with the expected content");
}

/// No tag, no complete layer, and no leftovers in tmp/.
fn assert_nothing_stored(root: &Path, store: &Store, img: &TestImage) {
    assert!(store.tags().unwrap().is_empty());
    for d in &img.diff_ids {
        assert!(store.layer_path(d).is_none(), "layer {d} must not look complete");
    }
    let tmp = root.join("tmp");
    let left: Vec<_> =
        std::fs::read_dir(&tmp).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "tmp leftovers: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_oci_gzip_zstd_and_uncompressed_layers() {
    let reg = TestRegistry::start(Mode::Anonymous);
    let img = three_compressions();
    push_image(&reg.admin_client(), &reg.repo("test/mixed"), "1", &img).await;
    let (_dir, store) = new_store();
    let pulled =
        pull_into(reg.admin_client(), &store, &format!("{}/test/mixed:1", reg.host())).await.unwrap();
    assert_eq!(pulled.manifest, img.manifest.digest);
    assert_eq!(
        store.tag(&format!("{}/test/mixed:1", reg.host())).unwrap(),
        Some(img.manifest.digest.clone())
    );
    assert_unpacked(&store, &img, "bin/tool", b"#!/bin/sh\necho gz\n");
    assert_unpacked(&store, &img, "etc/zstd.conf", &vec![b'z'; 100_000]);
    assert_unpacked(&store, &img, "srv/plain.txt", b"uncompressed layer");
    assert_eq!(store.image_layers(&img.manifest.digest).unwrap().len(), 3);
    for l in &img.layers {
        assert!(store.has_blob(&l.digest), "compressed blob kept for push");
    }
    // A second pull finds every layer present and downloads nothing.
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let opts = PullOptions { progress: Some(Arc::new(move |e| ev.lock().unwrap().push(e))), ..amd64() };
    let r = Reference::parse(&format!("{}/test/mixed@{}", reg.host(), img.manifest.digest)).unwrap();
    pull(Arc::new(reg.admin_client()), store.clone(), &r, &opts).await.unwrap();
    let cached = events.lock().unwrap().iter().filter(|e| matches!(e, PullEvent::LayerCached { .. })).count();
    assert_eq!(cached, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_docker_schema2_image() {
    let reg = TestRegistry::start(Mode::Basic);
    let tar = LayerTar::new().dir("app").file("app/v", b"docker v2s2").finish();
    let img = build_image(&[(tar, Compression::Gzip)], "amd64", true);
    push_image(&reg.admin_client(), &reg.repo("test/docker"), "v2", &img).await;
    let (_dir, store) = new_store();
    pull_into(reg.admin_client(), &store, &format!("{}/test/docker:v2", reg.host())).await.unwrap();
    assert_unpacked(&store, &img, "app/v", b"docker v2s2");
    // Wrong credentials: one clear line, nothing stored.
    let (dir2, store2) = new_store();
    let bad = client_with(
        reg.config(),
        Some(Credential::Basic { username: "testuser".into(), password: "x".into() }),
    );
    let err = pull_into(bad, &store2, &format!("{}/test/docker:v2", reg.host())).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("credentials rejected") && !msg.contains('\n'), "{msg}");
    assert_nothing_stored(&dir2.path().join("root"), &store2, &img);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_tls_multi_platform_index_resolves_to_amd64() {
    let reg = TestRegistry::start(Mode::Token);
    let amd =
        build_image(&[(LayerTar::new().file("arch", b"amd64").finish(), Compression::Gzip)], "amd64", false);
    let arm =
        build_image(&[(LayerTar::new().file("arch", b"arm64").finish(), Compression::Gzip)], "arm64", false);
    let index = build_index(&[(&arm, "linux", "arm64", Some("v8")), (&amd, "linux", "amd64", None)]);
    push_index(&reg.admin_client(), &reg.repo("proj/multi"), "1", &index, &[&amd, &arm]).await;
    // Pull with an access-token credential, as a GCE node would.
    let client = client_with(
        reg.config(),
        Some(Credential::Basic {
            username: "oauth2accesstoken".into(),
            password: registry::ACCESS_TOKEN.into(),
        }),
    );
    let (_dir, store) = new_store();
    let pulled = pull_into(client, &store, &format!("{}/proj/multi:1", reg.host())).await.unwrap();
    assert_eq!(pulled.manifest, amd.manifest.digest);
    assert_eq!(pulled.index, Some(index.digest.clone()));
    assert_unpacked(&store, &amd, "arch", b"amd64");
    // A platform the index lacks is a clear error listing what exists (and skipping attestations).
    let opts = PullOptions { platform: Platform::parse("linux/s390x").unwrap(), ..Default::default() };
    let r = Reference::parse(&format!("{}/proj/multi:1", reg.host())).unwrap();
    let err = pull(Arc::new(reg.admin_client()), store.clone(), &r, &opts).await.unwrap_err().to_string();
    assert!(err.contains("linux/s390x") && err.contains("linux/arm64/v8, linux/amd64"), "{err}");
    assert!(!err.contains("unknown"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_and_opaque_dirs_unpack_for_overlay() {
    let reg = TestRegistry::start(Mode::Anonymous);
    let base =
        LayerTar::new().dir("a").file("a/x", b"x").file("a/y", b"y").dir("d").file("d/old", b"old").finish();
    let top = LayerTar::new().dir("a").whiteout("a", "x").dir("d").file("d/new", b"new").opaque("d").finish();
    let img = build_image(&[(base, Compression::Gzip), (top, Compression::Gzip)], "amd64", false);
    push_image(&reg.admin_client(), &reg.repo("test/wh"), "1", &img).await;
    let (_dir, store) = new_store();
    pull_into(reg.admin_client(), &store, &format!("{}/test/wh:1", reg.host())).await.unwrap();
    let lower = store.layer_path(&img.diff_ids[0]).unwrap();
    let upper = store.layer_path(&img.diff_ids[1]).unwrap();
    assert!(lower.join("a/x").is_file() && lower.join("d/old").is_file());
    let wh = std::fs::symlink_metadata(upper.join("a/x")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "whiteout must be a 0/0 char device");
    assert!(!upper.join("a/.wh.x").exists() && !upper.join("d/.wh..wh..opq").exists());
    assert_eq!(std::fs::read(upper.join("d/new")).unwrap(), b"new");
    let opaque = xattr_of(&upper.join("d"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
}

fn xattr_of(path: &Path, name: &str) -> Option<Vec<u8>> {
    rkube::sys::openat::lgetxattr(path, name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_token_registry_then_pull_by_digest() {
    let source = TestRegistry::start(Mode::Anonymous);
    let target = TestRegistry::start(Mode::Token);
    let img = three_compressions();
    push_image(&source.admin_client(), &source.repo("src/app"), "1", &img).await;
    let (_dir, store) = new_store();
    let from = format!("{}/src/app:1", source.host());
    pull_into(source.admin_client(), &store, &from).await.unwrap();
    // tag + push with a _json_key credential through the token flow.
    let to = Reference::parse(&format!("{}/proj/app:v1", target.host())).unwrap();
    let pushed = Arc::new(Mutex::new(0));
    let p = pushed.clone();
    let report = move |e: rkube::image::push::PushEvent| {
        if matches!(e, rkube::image::push::PushEvent::BlobPushed { .. }) {
            *p.lock().unwrap() += 1;
        }
    };
    let digest = rkube::image::push::push(&target.admin_client(), &store, &from, &to, &report).await.unwrap();
    assert_eq!(digest, img.manifest.digest);
    assert_eq!(*pushed.lock().unwrap(), 4, "3 layers + config uploaded");
    let (_dir2, fresh) = new_store();
    let by_digest = format!("{}/proj/app@{}", target.host(), digest);
    let pulled = pull_into(target.admin_client(), &fresh, &by_digest).await.unwrap();
    assert_eq!(pulled.manifest, digest);
    assert_unpacked(&fresh, &img, "srv/plain.txt", b"uncompressed layer");
    // Pushing again uploads nothing.
    *pushed.lock().unwrap() = 0;
    let p = pushed.clone();
    let report = move |e: rkube::image::push::PushEvent| {
        if matches!(e, rkube::image::push::PushEvent::BlobPushed { .. }) {
            *p.lock().unwrap() += 1;
        }
    };
    rkube::image::push::push(&target.admin_client(), &store, &from, &to, &report).await.unwrap();
    assert_eq!(*pushed.lock().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_io_names_served_by_a_mirror() {
    let reg = TestRegistry::start(Mode::Anonymous);
    let img =
        build_image(&[(LayerTar::new().file("m", b"mirror").finish(), Compression::Gzip)], "amd64", false);
    push_image(&reg.admin_client(), &reg.repo("library/mirrored"), "1", &img).await;
    let mut config = RegistriesConfig::default();
    config.mirrors.insert("docker.io".into(), vec![format!("http://{}", reg.host())]);
    let (_dir, store) = new_store();
    let pulled = pull_into(client_with(config, None), &store, "mirrored:1").await.unwrap();
    assert_eq!(pulled.name, "docker.io/library/mirrored:1");
    assert_eq!(pulled.endpoint, reg.host());
    assert_unpacked(&store, &img, "m", b"mirror");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried() {
    let reg = TestRegistry::start(Mode::Anonymous);
    let img = three_compressions();
    push_image(&reg.admin_client(), &reg.repo("test/flaky"), "1", &img).await;
    let proxy = FaultProxy::start(format!("http://{}", reg.host()));
    let image = format!("{}/test/flaky:1", proxy.host());
    // Two 500s, then a blob cut off mid-body: the pull still succeeds.
    proxy.faults.fail_next.store(2, Ordering::SeqCst);
    proxy.faults.truncate_next_blob.store(1, Ordering::SeqCst);
    *proxy.faults.truncate_only.lock().unwrap() = Some(img.layers[1].digest.to_string());
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let opts = PullOptions { progress: Some(Arc::new(move |e| ev.lock().unwrap().push(e))), ..amd64() };
    let (_dir, store) = new_store();
    let r = Reference::parse(&image).unwrap();
    pull(Arc::new(reg.admin_client()), store.clone(), &r, &opts).await.unwrap();
    assert_eq!(proxy.faults.fail_next.load(Ordering::SeqCst), 0);
    assert_eq!(proxy.faults.truncate_next_blob.load(Ordering::SeqCst), 0);
    let retried = events.lock().unwrap().iter().any(|e| matches!(e, PullEvent::LayerRetry { .. }));
    assert!(retried, "the truncated layer was retried: {:?}", events.lock().unwrap());
    assert_unpacked(&store, &img, "etc/zstd.conf", &vec![b'z'; 100_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blobs_unknown_manifests_and_persistent_500s_fail_cleanly() {
    let reg = TestRegistry::start(Mode::Anonymous);
    let img = three_compressions();
    push_image(&reg.admin_client(), &reg.repo("test/bad"), "1", &img).await;
    let proxy = FaultProxy::start(format!("http://{}", reg.host()));

    // Digest mismatch: every blob body is corrupted in flight.
    proxy.faults.corrupt_blobs.store(true, Ordering::SeqCst);
    let (dir, store) = new_store();
    let err =
        pull_into(reg.admin_client(), &store, &format!("{}/test/bad:1", proxy.host())).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("digest") && msg.contains("test/bad:1") && !msg.contains('\n'), "{msg}");
    assert_nothing_stored(&dir.path().join("root"), &store, &img);
    proxy.faults.corrupt_blobs.store(false, Ordering::SeqCst);

    // Manifest unknown.
    let err =
        pull_into(reg.admin_client(), &store, &format!("{}/test/bad:nope", proxy.host())).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("not found") && msg.contains("manifest unknown"), "{msg}");

    // 500s that never stop: bounded retries, then a clear error.
    proxy.faults.fail_next.store(1000, Ordering::SeqCst);
    let err =
        pull_into(reg.admin_client(), &store, &format!("{}/test/bad:1", proxy.host())).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("500"), "{msg}");
    assert!(proxy.faults.fail_next.load(Ordering::SeqCst) >= 990, "retries are bounded");
    assert_nothing_stored(&dir.path().join("root"), &store, &img);

    // And the store is usable afterwards: the healthy pull works.
    proxy.faults.fail_next.store(0, Ordering::SeqCst);
    pull_into(reg.admin_client(), &store, &format!("{}/test/bad:1", proxy.host())).await.unwrap();
    assert_unpacked(&store, &img, "bin/tool", b"#!/bin/sh\necho gz\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pushed_by_skopeo_pulls() {
    let reg = TestRegistry::start(Mode::Basic);
    let img = three_compressions();
    let layout = tempfile::tempdir().unwrap();
    registry::write_oci_layout(layout.path(), "1", &img);
    let st = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "testuser:testpassword"])
        .arg(format!("oci:{}:1", layout.path().display()))
        .arg(format!("docker://{}/peer/skopeo:1", reg.host()))
        .status()
        .unwrap();
    assert!(st.success());
    let (_dir, store) = new_store();
    pull_into(reg.admin_client(), &store, &format!("{}/peer/skopeo:1", reg.host())).await.unwrap();
    assert_unpacked(&store, &img, "srv/plain.txt", b"uncompressed layer");
}
