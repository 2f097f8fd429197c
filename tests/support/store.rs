//! Shared helpers for the store tests: hand-made layer tars (including malicious ones), compression,
//! digests, and a guarded overlayfs mount.
#![allow(dead_code)]

use rkube::image::Digest;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Builds a layer tar entry by entry. Names and link names are written raw (no sanitising), so
/// malicious paths can be expressed.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> Self {
        LayerTar { builder: tar::Builder::new(Vec::new()) }
    }

    /// Appends one entry with raw path/link bytes and explicit attributes.
    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        mut self,
        kind: tar::EntryType,
        path: &str,
        link: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> Self {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        let old = h.as_old_mut();
        assert!(path.len() < 100 && link.len() < 100, "test names must be short");
        old.name = [0; 100];
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.raw(tar::EntryType::Directory, path, "", b"", mode, 0, 0, 1_600_000_000)
    }
    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.raw(tar::EntryType::Regular, path, "", data, 0o644, 0, 0, 1_600_000_000)
    }
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.raw(tar::EntryType::Symlink, path, target, b"", 0o777, 0, 0, 1_600_000_000)
    }
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.raw(tar::EntryType::Link, path, target, b"", 0o644, 0, 0, 1_600_000_000)
    }
    /// A character or block device node.
    pub fn device(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32, mode: u32) -> Self {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(path).unwrap();
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.builder.append(&h, &b""[..]).unwrap();
        self
    }
    /// A PAX header with the given records, applying to the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        self.builder.append_pax_extensions(records.iter().copied()).unwrap();
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A compressed layer with its blob digest and diffID.
pub struct Blob {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub diff_id: Digest,
}

pub fn gzip_layer(tar: &[u8]) -> Blob {
    let bytes = gzip(tar);
    Blob { digest: Digest::sha256_of(&bytes), diff_id: Digest::sha256_of(tar), bytes }
}

/// A file or directory outside the store whose content, mode, owner and mtime must never change.
pub struct Sentinel {
    pub path: PathBuf,
    snapshot: (Vec<u8>, u32, u32, i64, i64),
}

impl Sentinel {
    pub fn create(path: PathBuf) -> Sentinel {
        std::fs::write(&path, b"sentinel: do not touch").unwrap();
        let snapshot = Self::state(&path);
        Sentinel { path, snapshot }
    }
    fn state(path: &Path) -> (Vec<u8>, u32, u32, i64, i64) {
        let m = std::fs::symlink_metadata(path).unwrap();
        (std::fs::read(path).unwrap(), m.mode(), m.uid(), m.mtime(), m.mtime_nsec())
    }
    pub fn assert_untouched(&self, case: &str) {
        assert_eq!(Self::state(&self.path), self.snapshot, "sentinel changed by case {case}");
    }
}

/// Lists a directory tree (relative paths, sorted), without following symlinks.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A read-only overlayfs mount of lower dirs (top first), unmounted on drop.
pub struct OverlayMount {
    pub target: PathBuf,
}

impl OverlayMount {
    pub fn new(target: &Path, lowers_top_first: &[PathBuf]) -> OverlayMount {
        std::fs::create_dir_all(target).unwrap();
        let lower: Vec<String> = lowers_top_first.iter().map(|p| p.display().to_string()).collect();
        let data = format!("lowerdir={}", lower.join(":"));
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(data.as_str()),
        )
        .unwrap_or_else(|e| panic!("overlay mount {data}: {e}"));
        OverlayMount { target: target.to_path_buf() }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "these tests need root (CI runs them as root)");
}

/// Stores an image made of these layer tars (gzip), tags it, and returns its manifest digest.
pub fn put_image(store: &rkube::image::Store, name: &str, layer_tars: &[Vec<u8>]) -> Digest {
    let blobs: Vec<Blob> = layer_tars.iter().map(|t| gzip_layer(t)).collect();
    for b in &blobs {
        store.unpack_layer(&b.digest, &b.diff_id, GZIP, &b.bytes[..]).unwrap();
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": blobs.iter().map(|b| b.diff_id.to_string()).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = Digest::sha256_of(&config);
    store.write_blob(&config_digest, &config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": blobs.iter().map(|b| serde_json::json!({"mediaType": GZIP, "digest": b.digest.to_string(), "size": b.bytes.len()})).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = Digest::sha256_of(&manifest);
    store.write_blob(&digest, &manifest).unwrap();
    store.set_tag(name, &digest).unwrap();
    digest
}

/// Names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
