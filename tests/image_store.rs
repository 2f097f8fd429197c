//! The content store on the real filesystem (root): verified atomic layer unpack, deduplication,
//! prune, image layers through overlayfs, and import.

#[path = "support/store.rs"]
mod store_support;

use rkube::image::store::{Store, StoreError, layer_id};
use rkube::image::{Digest, import::import};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use store_support::*;

fn base_tar() -> Vec<u8> {
    LayerTar::new().dir("etc", 0o755).file("etc/os-release", b"ID=rkube\n").file("etc/motd", b"hi").finish()
}

/// Asserts nothing of an aborted unpack remains or looks complete.
fn assert_no_layer(store: &Store, root: &Path, diff_id: &Digest, blob: &Digest) {
    assert_eq!(store.layer_path(diff_id), None);
    assert!(!store.has_blob(blob), "the blob of a failed unpack must not be kept");
    assert!(names(&root.join("layers")).is_empty(), "no layer directory");
    assert!(names(&root.join("tmp")).is_empty(), "temp work removed");
}

#[test]
fn gzip_zstd_and_plain_layers_unpack_once_with_their_blob() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let tar = base_tar();
    let diff_id = Digest::sha256_of(&tar);
    for (media_type, bytes) in [(GZIP, gzip(&tar)), (ZSTD, zstd(&tar)), (TAR, tar.clone())] {
        let blob = Digest::sha256_of(&bytes);
        let path = store.unpack_layer(&blob, &diff_id, media_type, &bytes[..]).unwrap();
        assert_eq!(std::fs::read(path.join("etc/os-release")).unwrap(), b"ID=rkube\n");
        assert_eq!(store.layer_path(&diff_id), Some(path));
        assert_eq!(store.read_blob(&blob).unwrap(), bytes, "{media_type}: compressed blob kept for push");
    }
    assert_eq!(names(&tmp.path().join("layers")), [layer_id(&diff_id)], "one layer dir for one diffID");
    assert!(names(&tmp.path().join("tmp")).is_empty());
}

#[test]
fn blob_digest_mismatch_leaves_no_layer() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let b = gzip_layer(&base_tar());
    let wrong = Digest::sha256_of(b"not this");
    let err = store.unpack_layer(&wrong, &b.diff_id, GZIP, &b.bytes[..]).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert_no_layer(&store, tmp.path(), &b.diff_id, &wrong);
    assert!(!store.has_blob(&b.digest));
}

#[test]
fn diff_id_mismatch_leaves_no_layer() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let b = gzip_layer(&base_tar());
    let wrong = Digest::sha256_of(b"other diff");
    let err = store.unpack_layer(&b.digest, &wrong, GZIP, &b.bytes[..]).unwrap_err();
    assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&b.diff_id.to_string()), "error names the actual diffID: {err}");
    assert_no_layer(&store, tmp.path(), &wrong, &b.digest);
}

#[test]
fn truncated_streams_leave_no_layer() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    // Incompressible content so truncation points fall inside the data and inside the gzip trailer.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let tar = LayerTar::new().file("blob", &data).file("after", b"x").finish();
    let b = gzip_layer(&tar);
    for cut in [10, b.bytes.len() / 2, b.bytes.len() - 4] {
        let err = store.unpack_layer(&b.digest, &b.diff_id, GZIP, &b.bytes[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Unpack { .. } | StoreError::Stream { .. } | StoreError::Compression { .. }
            ),
            "cut {cut}: {err}"
        );
        assert_no_layer(&store, tmp.path(), &b.diff_id, &b.digest);
    }
    // A plain tar cut after the end-of-archive marker: the tar parses, the diffID catches it.
    let plain_cut = &tar[..tar.len() - 512];
    let err = store.unpack_layer(&Digest::sha256_of(plain_cut), &b.diff_id, TAR, plain_cut).unwrap_err();
    assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
    // The complete stream still works afterwards.
    store.unpack_layer(&b.digest, &b.diff_id, GZIP, &b.bytes[..]).unwrap();
}

#[test]
fn malicious_layer_through_the_store_leaves_nothing() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let sentinel = Sentinel::create(tmp.path().join("sentinel"));
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let tar = LayerTar::new().file("ok", b"fine").hardlink("h", "../sentinel").finish();
    let b = gzip_layer(&tar);
    let err = store.unpack_layer(&b.digest, &b.diff_id, GZIP, &b.bytes[..]).unwrap_err();
    assert!(err.to_string().contains("refused layer entry \"h\""), "{err}");
    sentinel.assert_untouched("hardlink through the store");
    assert_no_layer(&store, &tmp.path().join("root"), &b.diff_id, &b.digest);
}

/// Counts the bytes read through it.
struct CountingReader<'a> {
    inner: &'a [u8],
    read: Arc<AtomicUsize>,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n, Ordering::SeqCst);
        Ok(n)
    }
}

#[test]
fn concurrent_unpack_of_one_layer_from_four_threads_stores_once() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path()).unwrap());
    let files: Vec<(String, Vec<u8>)> = (0..300).map(|i| (format!("f{i}"), vec![i as u8; 4096])).collect();
    let tar = files.iter().fold(LayerTar::new(), |t, (n, d)| t.file(n, d)).finish();
    let b = Arc::new(gzip_layer(&tar));
    let barrier = Arc::new(Barrier::new(4));
    let readers: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let handles: Vec<_> = readers
        .iter()
        .map(|counter| {
            let (store, b, barrier, counter) = (store.clone(), b.clone(), barrier.clone(), counter.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let reader = CountingReader { inner: &b.bytes[..], read: counter };
                store.unpack_layer(&b.digest, &b.diff_id, GZIP, reader).unwrap()
            })
        })
        .collect();
    let paths: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(paths.iter().all(|p| p == &paths[0]), "all callers get the same directory");
    let full_reads = readers.iter().filter(|r| r.load(Ordering::SeqCst) == b.bytes.len()).count();
    let any_reads = readers.iter().filter(|r| r.load(Ordering::SeqCst) > 0).count();
    assert_eq!((full_reads, any_reads), (1, 1), "exactly one caller downloaded and unpacked the layer");
    assert_eq!(names(&tmp.path().join("layers")).len(), 1);
    assert_eq!(names(&paths[0]).len(), 300);
    assert!(names(&tmp.path().join("tmp")).is_empty());
}

#[test]
fn image_layers_mount_as_overlay_with_whiteouts_applied() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let top = LayerTar::new()
        .file("etc/.wh.motd", b"")
        .dir("var", 0o755)
        .file("var/.wh..wh..opq", b"")
        .file("var/new", b"n")
        .finish();
    let under = LayerTar::new().dir("var", 0o755).file("var/old", b"o").finish();
    let manifest = put_image(&store, "test/img:1", &[base_tar(), under, top]);
    let layers = store.image_layers(&manifest).unwrap();
    assert_eq!(layers.len(), 3);
    assert!(layers.iter().all(|p| p.as_os_str().len() < 100), "short lower dir paths: {layers:?}");
    let top_first: Vec<_> = layers.iter().rev().cloned().collect();
    let mount = OverlayMount::new(&tmp.path().join("merged"), &top_first);
    assert_eq!(tree(&mount.target), ["etc", "etc/os-release", "var", "var/new"]);
    drop(mount);
    let config = store.image_config(&manifest).unwrap();
    assert_eq!(config.rootfs().diff_ids().len(), 3);
}

#[test]
fn prune_removes_only_unreferenced_blobs_and_layers() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(root).unwrap();
    let a_tar = LayerTar::new().file("a", b"only in a").finish();
    let b_tar = LayerTar::new().file("b", b"only in b").finish();
    let a = put_image(&store, "a:1", &[base_tar(), a_tar.clone()]);
    let b = put_image(&store, "b:1", &[base_tar(), b_tar.clone()]);
    assert_eq!(names(&root.join("layers")).len(), 3, "the shared base layer is stored once");
    for private in ["blobs", "layers", "tmp", "locks"] {
        let mode = std::fs::metadata(root.join(private)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "{private} must be private: setuid binaries of images live there");
    }
    std::fs::create_dir(root.join("tmp/layer-debris-1")).unwrap(); // an interrupted unpack

    assert!(store.prune().unwrap().blobs.is_empty(), "everything is referenced");
    assert_eq!(names(&root.join("layers")).len(), 3);
    assert!(names(&root.join("tmp")).is_empty(), "debris of interrupted work removed");

    assert_eq!(store.remove_tag("a:1").unwrap(), Some(a.clone()));
    assert!(
        store.prune_keeping(std::slice::from_ref(&a)).unwrap().blobs.is_empty(),
        "an image in use is kept untagged"
    );
    assert_eq!(store.image_layers(&a).unwrap().len(), 2);
    let report = store.prune().unwrap();
    assert_eq!(report.layers, [Digest::sha256_of(&a_tar)]);
    assert_eq!(report.blobs.len(), 3, "manifest, config and layer blob of a: {:?}", report.blobs);
    assert!(report.blobs.contains(&a));
    assert!(!store.has_blob(&a));
    assert_eq!(store.image_layers(&b).unwrap().len(), 2, "b is intact");
    assert!(store.layer_path(&Digest::sha256_of(&base_tar())).is_some());

    let (old, report) = store.remove_image("b:1").unwrap();
    assert_eq!(old, Some(b));
    assert_eq!(report.layers.len(), 2);
    assert!(names(&root.join("layers")).is_empty());
    assert!(names(&root.join("blobs/sha256")).is_empty());
}

#[test]
fn import_a_directory_and_a_tarball() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let src = tmp.path().join("rootfs");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    std::os::unix::fs::chown(src.join("bin/tool"), Some(1000), Some(1000)).unwrap();
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &src.join("bin/tool"),
        nix::sys::stat::Mode::from_bits_truncate(0o4755),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .unwrap();
    std::os::unix::fs::symlink("tool", src.join("bin/sh")).unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::hard_link(src.join("bin/tool"), src.join("bin/tool-again")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let cap = [1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    xattr_set(&src.join("bin/tool"), "security.capability", &cap);

    let digest = import(&store, &src, "local/dir:1").unwrap();
    assert_eq!(store.tag("local/dir:1").unwrap(), Some(digest.clone()));
    let layers = store.image_layers(&digest).unwrap();
    assert_eq!(layers.len(), 1);
    let tool = std::fs::symlink_metadata(layers[0].join("bin/tool")).unwrap();
    assert_eq!((tool.mode() & 0o7777, tool.uid()), (0o4755, 1000));
    assert_eq!(std::fs::read_link(layers[0].join("bin/sh")).unwrap(), Path::new("tool"));
    assert!(std::fs::symlink_metadata(layers[0].join("fifo")).unwrap().file_type().is_fifo());
    let again = std::fs::symlink_metadata(layers[0].join("bin/tool-again")).unwrap();
    assert_eq!(again.ino(), tool.ino(), "hardlinks stay hardlinks");
    assert!(!layers[0].join("sock").exists(), "sockets are not archived");
    assert_eq!(
        rkube::sys::openat::lgetxattr(&layers[0].join("bin/tool"), "security.capability").unwrap().as_deref(),
        Some(&cap[..])
    );
    let config = store.image_config(&digest).unwrap();
    assert_eq!(config.os().to_string(), "linux");
    assert_eq!(
        import(&store, &src, "local/dir:2").unwrap(),
        digest,
        "importing the same tree is reproducible"
    );

    // A zstd tarball of a rootfs.
    let tar = LayerTar::new().dir("app", 0o755).file("app/index.html", b"<h1>v1</h1>").finish();
    let tarball = tmp.path().join("rootfs.tar.zst");
    std::fs::write(&tarball, zstd(&tar)).unwrap();
    let digest = import(&store, &tarball, "local/tarball:1").unwrap();
    let layers = store.image_layers(&digest).unwrap();
    assert_eq!(std::fs::read(layers[0].join("app/index.html")).unwrap(), b"<h1>v1</h1>");
    assert_eq!(
        store.config_diff_ids(&store.manifest_refs(&digest).unwrap().config.unwrap().digest).unwrap(),
        [Digest::sha256_of(&tar)]
    );

    // Neither file nor directory.
    let err = import(&store, Path::new("/dev/null"), "x:1").unwrap_err();
    assert!(err.to_string().contains("not a directory or a regular file"), "{err}");
    assert!(names(&tmp.path().join("root/tmp")).is_empty());
}

/// Sets an xattr on a host file with the open-fd wrapper.
fn xattr_set(path: &Path, name: &str, value: &[u8]) {
    let file = std::fs::File::open(path).unwrap();
    rkube::sys::openat::fsetxattr(&file, name, value).unwrap();
}

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Type, mode, owner and content (or link target) of every path under `root`.
fn describe(root: &Path) -> Vec<(String, String)> {
    tree(root)
        .into_iter()
        .map(|rel| {
            let p = root.join(&rel);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_file() {
                format!("file {:o} {}:{} {:?}", m.mode(), m.uid(), m.gid(), std::fs::read(&p).unwrap())
            } else {
                format!("other {:o} {}:{}", m.mode(), m.uid(), m.gid())
            };
            (rel, what)
        })
        .collect()
}

#[test]
fn umoci_built_layers_mount_to_the_same_tree_umoci_unpacks() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let layout = t.join("layout");
    let image = format!("{}:img", layout.display());
    let base = t.join("base");
    for d in ["etc", "opt/app/old", "usr/bin"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::fs::write(base.join("etc/a"), b"a").unwrap();
    std::fs::write(base.join("etc/b"), b"b").unwrap();
    std::fs::write(base.join("opt/app/old/file"), b"old").unwrap();
    std::fs::write(base.join("usr/bin/tool"), b"tool").unwrap();
    std::os::unix::fs::chown(base.join("usr/bin/tool"), Some(7), Some(7)).unwrap();
    std::fs::set_permissions(base.join("usr/bin/tool"), std::os::unix::fs::PermissionsExt::from_mode(0o4711))
        .unwrap();
    std::os::unix::fs::symlink("tool", base.join("usr/bin/alias")).unwrap();
    let newapp = t.join("newapp");
    std::fs::create_dir_all(&newapp).unwrap();
    std::fs::write(newapp.join("new"), b"new").unwrap();

    run(std::process::Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(std::process::Command::new("umoci").args(["new", "--image", &image]));
    run(std::process::Command::new("umoci").args(["insert", "--image", &image]).arg(&base).arg("/"));
    run(std::process::Command::new("umoci").args(["insert", "--image", &image, "--whiteout", "/etc/a"]));
    run(std::process::Command::new("umoci")
        .args(["insert", "--image", &image, "--opaque"])
        .arg(&newapp)
        .arg("/opt/app"));
    run(std::process::Command::new("umoci").args(["unpack", "--image", &image]).arg(t.join("bundle")));

    // Load the umoci layout's image into our store, layer by layer.
    let store = Store::open(&t.join("root")).unwrap();
    let blob = |d: &Digest| std::fs::read(layout.join("blobs/sha256").join(d.hex())).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Digest = index["manifests"][0]["digest"].as_str().unwrap().parse().unwrap();
    store.write_blob(&manifest, &blob(&manifest)).unwrap();
    let refs = store.manifest_refs(&manifest).unwrap();
    let config = refs.config.clone().unwrap().digest;
    store.write_blob(&config, &blob(&config)).unwrap();
    let diff_ids = store.config_diff_ids(&config).unwrap();
    assert_eq!(diff_ids.len(), 3);
    for (layer, diff_id) in refs.layers.iter().zip(&diff_ids) {
        let file = std::fs::File::open(layout.join("blobs/sha256").join(layer.digest.hex())).unwrap();
        store.unpack_layer(&layer.digest, diff_id, &layer.media_type, file).unwrap();
    }
    store.set_tag("umoci/img:1", &manifest).unwrap();

    let top_first: Vec<_> = store.image_layers(&manifest).unwrap().into_iter().rev().collect();
    let mount = OverlayMount::new(&t.join("merged"), &top_first);
    let ours = describe(&mount.target);
    let theirs = describe(&t.join("bundle/rootfs"));
    assert_eq!(ours, theirs, "overlay of our layers differs from umoci's unpacked rootfs");
    assert!(ours.iter().any(|(p, _)| p == "opt/app/new") && !ours.iter().any(|(p, _)| p == "etc/a"));
}

const CHILD_ROOT_ENV: &str = "RKUBE_TEST_KILLED_UNPACK_ROOT";

/// Yields `head`, then signals readiness and stalls forever, like a download that hangs mid-layer.
struct StallingReader {
    head: io::Cursor<Vec<u8>>,
    ready: std::path::PathBuf,
}

impl Read for StallingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        std::fs::write(&self.ready, b"").unwrap();
        loop {
            std::thread::park(); // never returns: the parent kills this process
        }
    }
}

fn killable_layer() -> Blob {
    let files: Vec<Vec<u8>> = (0..64u32).map(|i| i.to_le_bytes().repeat(16 * 1024)).collect();
    let tar =
        files.iter().enumerate().fold(LayerTar::new(), |t, (i, d)| t.file(&format!("f{i}"), d)).finish();
    gzip_layer(&tar)
}

/// Not a test on its own: the body of the child process `killed_unpack_never_looks_complete` kills.
#[test]
#[ignore = "run as a child process by killed_unpack_never_looks_complete"]
fn child_unpack_that_stalls() {
    let Some(root) = std::env::var_os(CHILD_ROOT_ENV).map(std::path::PathBuf::from) else {
        return; // run directly (e.g. --include-ignored): nothing to do
    };
    let store = Store::open(&root).unwrap();
    let b = killable_layer();
    let reader = StallingReader {
        head: io::Cursor::new(b.bytes[..b.bytes.len() * 3 / 4].to_vec()),
        ready: root.join("ready"),
    };
    let _ = store.unpack_layer(&b.digest, &b.diff_id, GZIP, reader);
}

/// Kills the child on drop so a failing assertion never leaks it.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn killed_unpack_never_looks_complete() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_unpack_that_stalls", "--ignored", "--nocapture"])
        .env(CHILD_ROOT_ENV, &root)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !root.join("ready").exists() {
        assert!(child.0.try_wait().unwrap().is_none(), "child exited early");
        assert!(std::time::Instant::now() < deadline, "child never got mid-layer");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let b = killable_layer();
    let store = Store::open(&root).unwrap();
    assert!(!names(&root.join("tmp")).is_empty(), "the child was mid-unpack");
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    assert_eq!(store.layer_path(&b.diff_id), None);
    assert!(names(&root.join("layers")).is_empty());
    assert!(!store.has_blob(&b.digest));
    store.prune().unwrap();
    assert!(names(&root.join("tmp")).is_empty(), "prune removes the killed unpack's debris");
    // The same layer unpacks fine afterwards (the dead process's locks are gone with it).
    store.unpack_layer(&b.digest, &b.diff_id, GZIP, &b.bytes[..]).unwrap();
}
