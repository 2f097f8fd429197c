//! The local content store: blobs by digest, one unpacked directory per layer, tags.
//!
//! Layout under the root (default `/var/lib/rkube`):
//! ```text
//! blobs/sha256/<hex>        manifests, configs and compressed layer blobs, named by their digest
//! layers/<id>/fs            an unpacked layer (overlayfs lower dir), whiteouts in overlay format
//! layers/<id>/diff_id       the layer's diffID (`sha256:<hex>` of the uncompressed tar)
//! tags.json                 {"<image name>": "<manifest digest>"}, replaced atomically
//! tmp/                      work in progress; never looks complete
//! locks/                    flock files: gc.lock, tags.lock, layer-<id>.lock
//! ```
//! `<id>` is the first 16 hex digits of the diffID: short, so that an overlay mount option with many
//! lower dirs fits in one page (`<root>/layers/<id>/fs` is ~41 bytes with the default root). The full
//! diffID in `diff_id` is checked on every lookup.
//!
//! Atomicity: blobs are written to `tmp/` and renamed into place after their digest is verified; a layer
//! is unpacked into `tmp/layer-…/fs`, both digests are checked, then the whole directory is renamed to
//! `layers/<id>`. A crash leaves only `tmp/` debris, which [`Store::prune`] removes.
//!
//! Concurrency (threads and processes): one exclusive flock per layer id deduplicates concurrent unpacks
//! of one layer (the second caller finds it complete); every writer holds `gc.lock` shared and
//! [`Store::prune`] holds it exclusive. A pull must hold a [`Lease`] from its first write until its tag
//! is set, so a prune running in between cannot collect its not-yet-tagged blobs and layers.

use crate::image::compression::{self, CompressionError, STREAM_BUFFER};
use crate::image::digest::{Digest, HashingReader};
use crate::image::unpack::{UnpackError, unpack_tar};
use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The store root used when none is given.
pub const DEFAULT_ROOT: &str = "/var/lib/rkube";

/// Number of hex digits of the diffID used as the layer directory name.
const LAYER_ID_LEN: usize = 16;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {0} is not in the store")]
    BlobMissing(Digest),
    #[error("content does not match digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("layer {diff_id}: uncompressed content does not match its diffID (got {actual})")]
    DiffIdMismatch { diff_id: Digest, actual: Digest },
    #[error("layer {diff_id}: {source}")]
    Unpack {
        diff_id: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("layer {diff_id}: {source}")]
    Compression {
        diff_id: Digest,
        #[source]
        source: CompressionError,
    },
    #[error("layer {diff_id}: reading the layer stream: {source}")]
    Stream {
        diff_id: Digest,
        #[source]
        source: io::Error,
    },
    #[error("layer id {id} is already used by {other}, not {diff_id}")]
    LayerIdCollision { id: String, diff_id: Digest, other: String },
    #[error("layer {diff_id} of image {manifest} is not unpacked")]
    LayerMissing { manifest: Digest, diff_id: Digest },
    #[error("blob {digest} is not valid {what} JSON: {source}")]
    BadJson {
        digest: Digest,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {manifest}: manifest lists {layers} layers but config has {diff_ids} diffIDs")]
    LayerCountMismatch { manifest: Digest, layers: usize, diff_ids: usize },
    #[error("invalid image name {0:?}")]
    BadName(String),
    #[error("tags file {path}: {source}")]
    BadTags {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What [`Store::prune`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Blob digests removed.
    pub blobs: Vec<Digest>,
    /// Bytes of removed blobs.
    pub blob_bytes: u64,
    /// diffIDs of removed layer directories.
    pub layers: Vec<Digest>,
}

/// A descriptor as manifests list them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    #[serde(default)]
    pub size: u64,
}

/// The parts of an image manifest (or index) the store follows.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestRefs {
    /// Present in an image manifest.
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Present in an index / manifest list.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ConfigRootfs {
    rootfs: RootfsDiffIds,
}

#[derive(Debug, Deserialize)]
struct RootfsDiffIds {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

/// A shared hold on the store that keeps [`Store::prune`] out until dropped.
#[derive(Debug)]
pub struct Lease {
    _lock: Flock<File>,
}

/// The content store opened on a root directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}

/// A temp file or directory removed on drop unless kept.
struct TmpGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path).or_else(|_| fs::remove_file(&self.path));
        }
    }
}

/// A reader that copies everything it reads into an optional writer.
struct TeeReader<R, W> {
    inner: R,
    copy: Option<W>,
}

impl<R: Read, W: Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = &mut self.copy {
            w.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// The short directory name of a layer.
pub fn layer_id(diff_id: &Digest) -> String {
    diff_id.hex()[..LAYER_ID_LEN].to_string()
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    ///
    /// `blobs/`, `layers/`, `tmp/` and `locks/` are made `0700`: layers hold the images' setuid binaries
    /// and device nodes, which host users must not reach (containers see them through overlayfs).
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in ["blobs/sha256", "layers", "tmp", "locks"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("create store directory", &dir))?;
        }
        for private in ["blobs", "layers", "tmp", "locks"] {
            let dir = root.join(private);
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err("restrict", &dir))?;
        }
        Ok(Store { root: root.to_path_buf() })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.algorithm()).join(d.hex())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Reads a whole blob (manifests, configs).
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobMissing(d.clone()),
            _ => StoreError::Io { op: "read blob", path, source: e },
        })
    }

    /// Opens a blob for streaming (e.g. to push a layer).
    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(d);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobMissing(d.clone()),
            _ => StoreError::Io { op: "open blob", path, source: e },
        })
    }

    /// Stores `data` as blob `d` after checking its digest; atomic, a no-op when already present.
    pub fn write_blob(&self, d: &Digest, data: &[u8]) -> Result<(), StoreError> {
        let actual = Digest::sha256_of(data);
        if &actual != d {
            return Err(StoreError::DigestMismatch { expected: d.clone(), actual });
        }
        self.write_blob_from(d, data).map(drop)
    }

    /// Streams a blob into the store, verifying its digest at EOF; returns its size. Atomic.
    pub fn write_blob_from(&self, d: &Digest, reader: impl Read) -> Result<u64, StoreError> {
        let _gc = self.lease()?;
        let tmp = self.tmp_path(&format!("blob-{}", d.short()));
        let mut guard = TmpGuard { path: tmp.clone(), keep: false };
        let file = File::create(&tmp).map_err(io_err("create temp blob", &tmp))?;
        let mut out = BufWriter::with_capacity(STREAM_BUFFER, file);
        let mut hashing = HashingReader::new(reader);
        io::copy(&mut hashing, &mut out).map_err(io_err("write blob", &tmp))?;
        out.flush().map_err(io_err("write blob", &tmp))?;
        let size = hashing.count();
        let (actual, _) = hashing.finish();
        if &actual != d {
            return Err(StoreError::DigestMismatch { expected: d.clone(), actual });
        }
        let dest = self.blob_path(d);
        fs::rename(&tmp, &dest).map_err(io_err("rename blob into", &dest))?;
        guard.keep = true;
        Ok(size)
    }

    /// The unpacked directory of a layer (an overlay lower dir), if it is complete.
    pub fn layer_path(&self, diff_id: &Digest) -> Option<PathBuf> {
        let dir = self.layer_dir(diff_id);
        let recorded = fs::read_to_string(dir.join("diff_id")).ok()?;
        (recorded.trim() == diff_id.to_string()).then(|| dir.join("fs"))
    }

    fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(layer_id(diff_id))
    }

    /// Takes a shared hold that keeps [`Store::prune`] from running until it is dropped.
    pub fn lease(&self) -> Result<Lease, StoreError> {
        Ok(Lease { _lock: self.lock("gc", FlockArg::LockShared)? })
    }

    fn lock(&self, name: &str, arg: FlockArg) -> Result<Flock<File>, StoreError> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock", &path))?;
        let mut file = file;
        loop {
            match Flock::lock(file, arg) {
                Ok(lock) => return Ok(lock),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(StoreError::Io { op: "lock", path, source: e.into() }),
            }
        }
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root.join("tmp").join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Streams a (compressed) layer blob, verifies its digest over the raw bytes and `diff_id` over the
    /// decompressed tar (read to EOF), and unpacks it safely into its own directory; returns that
    /// directory. The raw blob is kept in `blobs/` too (so the image can be pushed).
    ///
    /// Atomic: nothing looks complete unless both digests matched. Concurrent calls for one diffID are
    /// serialised; a caller that finds the layer complete returns at once, reading `reader` only if the
    /// blob itself is still missing.
    pub fn unpack_layer(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        media_type: &str,
        reader: impl Read,
    ) -> Result<PathBuf, StoreError> {
        let _gc = self.lease()?;
        let id = layer_id(diff_id);
        let _layer_lock = self.lock(&format!("layer-{id}"), FlockArg::LockExclusive)?;
        if let Some(done) = self.layer_path(diff_id) {
            if !self.has_blob(blob) {
                self.write_blob_from(blob, reader)?;
            }
            return Ok(done);
        }
        let dest = self.layer_dir(diff_id);
        if let Ok(other) = fs::read_to_string(dest.join("diff_id")) {
            return Err(StoreError::LayerIdCollision { id, diff_id: diff_id.clone(), other });
        }

        let work = self.tmp_path(&format!("layer-{id}"));
        let mut work_guard = TmpGuard { path: work.clone(), keep: false };
        let fs_dir = work.join("fs");
        fs::create_dir_all(&fs_dir).map_err(io_err("create layer dir", &fs_dir))?;
        let blob_tmp = work.join("blob");
        let blob_copy = if self.has_blob(blob) {
            None
        } else {
            let file = File::create(&blob_tmp).map_err(io_err("create temp blob", &blob_tmp))?;
            Some(BufWriter::with_capacity(STREAM_BUFFER, file))
        };

        let mut raw = TeeReader { inner: HashingReader::new(reader), copy: blob_copy };
        let stream_err = |source| StoreError::Stream { diff_id: diff_id.clone(), source };
        let actual_diff = {
            let (_, tar_stream) = compression::decompress(media_type, &mut raw)
                .map_err(|source| StoreError::Compression { diff_id: diff_id.clone(), source })?;
            let mut tar_hashing = HashingReader::new(tar_stream);
            unpack_tar(&fs_dir, &mut tar_hashing)
                .map_err(|source| StoreError::Unpack { diff_id: diff_id.clone(), source })?;
            // Drain the end-of-archive padding and the compression trailer (CRC, size, checksums).
            io::copy(&mut tar_hashing, &mut io::sink()).map_err(stream_err)?;
            tar_hashing.finish().0
        };
        io::copy(&mut raw, &mut io::sink())
            .map_err(|source| StoreError::Stream { diff_id: diff_id.clone(), source })?;
        let TeeReader { inner, copy } = raw;
        let (actual_blob, _) = inner.finish();
        if &actual_blob != blob {
            return Err(StoreError::DigestMismatch { expected: blob.clone(), actual: actual_blob });
        }
        if &actual_diff != diff_id {
            return Err(StoreError::DiffIdMismatch { diff_id: diff_id.clone(), actual: actual_diff });
        }

        if let Some(mut copy) = copy {
            copy.flush().map_err(io_err("write blob", &blob_tmp))?;
            drop(copy);
            let blob_dest = self.blob_path(blob);
            fs::rename(&blob_tmp, &blob_dest).map_err(io_err("rename blob into", &blob_dest))?;
        }
        let marker = work.join("diff_id");
        fs::write(&marker, diff_id.to_string()).map_err(io_err("write", &marker))?;
        fs::rename(&work, &dest).map_err(io_err("rename layer into", &dest))?;
        work_guard.keep = true;
        Ok(dest.join("fs"))
    }

    /// Points `name` at a manifest (or index) digest.
    pub fn set_tag(&self, name: &str, manifest: &Digest) -> Result<(), StoreError> {
        check_name(name)?;
        let _lock = self.lock("tags", FlockArg::LockExclusive)?;
        let mut tags = self.tags()?;
        tags.insert(name.to_string(), manifest.clone());
        self.write_tags(&tags)
    }

    /// Removes a tag; returns the digest it pointed at, if it existed. Content is freed by [`Store::prune`].
    pub fn remove_tag(&self, name: &str) -> Result<Option<Digest>, StoreError> {
        let _lock = self.lock("tags", FlockArg::LockExclusive)?;
        let mut tags = self.tags()?;
        let old = tags.remove(name);
        if old.is_some() {
            self.write_tags(&tags)?;
        }
        Ok(old)
    }

    /// `rkubelet image rm`: removes the tag, then everything no remaining tag needs. Returns the digest
    /// the tag pointed at (None if there was no such tag) and what was freed.
    pub fn remove_image(&self, name: &str) -> Result<(Option<Digest>, PruneReport), StoreError> {
        let old = self.remove_tag(name)?;
        let report = if old.is_some() { self.prune()? } else { PruneReport::default() };
        Ok((old, report))
    }

    /// The digest a tag points at.
    pub fn tag(&self, name: &str) -> Result<Option<Digest>, StoreError> {
        Ok(self.tags()?.remove(name))
    }

    /// All tags, sorted by name.
    pub fn tags(&self) -> Result<BTreeMap<String, Digest>, StoreError> {
        let path = self.root.join("tags.json");
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| StoreError::BadTags { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(StoreError::Io { op: "read", path, source: e }),
        }
    }

    fn write_tags(&self, tags: &BTreeMap<String, Digest>) -> Result<(), StoreError> {
        let path = self.root.join("tags.json");
        let tmp = self.tmp_path("tags");
        let mut guard = TmpGuard { path: tmp.clone(), keep: false };
        let json = serde_json::to_vec_pretty(tags).expect("a map of strings serialises");
        fs::write(&tmp, json).map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename tags into", &path))?;
        guard.keep = true;
        Ok(())
    }

    /// Parses a manifest or index blob for the digests it references.
    pub fn manifest_refs(&self, manifest: &Digest) -> Result<ManifestRefs, StoreError> {
        let bytes = self.read_blob(manifest)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
            digest: manifest.clone(),
            what: "manifest",
            source,
        })
    }

    /// The diffIDs listed in an image config blob.
    pub fn config_diff_ids(&self, config: &Digest) -> Result<Vec<Digest>, StoreError> {
        let bytes = self.read_blob(config)?;
        let parsed: ConfigRootfs = serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
            digest: config.clone(),
            what: "image config",
            source,
        })?;
        Ok(parsed.rootfs.diff_ids)
    }

    /// The image's config, parsed.
    pub fn image_config(&self, manifest: &Digest) -> Result<oci_spec::image::ImageConfiguration, StoreError> {
        let config = self.config_descriptor(manifest)?;
        let bytes = self.read_blob(&config.digest)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
            digest: config.digest.clone(),
            what: "image config",
            source,
        })
    }

    fn config_descriptor(&self, manifest: &Digest) -> Result<Descriptor, StoreError> {
        let refs = self.manifest_refs(manifest)?;
        refs.config.ok_or_else(|| StoreError::BadJson {
            digest: manifest.clone(),
            what: "image manifest",
            source: serde::de::Error::custom(
                "no config descriptor (an index? resolve it to a platform first)",
            ),
        })
    }

    /// The image's unpacked layer directories, lowest first, ready to be overlay lower dirs.
    pub fn image_layers(&self, manifest: &Digest) -> Result<Vec<PathBuf>, StoreError> {
        let refs = self.manifest_refs(manifest)?;
        let config = self.config_descriptor(manifest)?;
        let diff_ids = self.config_diff_ids(&config.digest)?;
        if diff_ids.len() != refs.layers.len() {
            return Err(StoreError::LayerCountMismatch {
                manifest: manifest.clone(),
                layers: refs.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        diff_ids
            .iter()
            .map(|d| {
                self.layer_path(d).ok_or_else(|| StoreError::LayerMissing {
                    manifest: manifest.clone(),
                    diff_id: d.clone(),
                })
            })
            .collect()
    }

    /// Removes every blob and layer no tag references any more (tag → index → manifest → config and
    /// layers), and leftovers of interrupted work in `tmp/`. Waits for running pulls holding a [`Lease`].
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        self.prune_keeping(&[])
    }

    /// Like [`Store::prune`], also keeping the images (manifest or index digests) in `in_use` whether
    /// tagged or not, e.g. the images of running containers.
    pub fn prune_keeping(&self, in_use: &[Digest]) -> Result<PruneReport, StoreError> {
        let _gc = self.lock("gc", FlockArg::LockExclusive)?;
        let mut roots: Vec<Digest> = self.tags()?.into_values().collect();
        roots.extend_from_slice(in_use);
        let (keep_blobs, keep_layers) = self.reachable(roots);
        let mut report = PruneReport::default();

        let blob_dir = self.root.join("blobs/sha256");
        for name in list_dir(&blob_dir)? {
            let Ok(d) = format!("sha256:{name}").parse::<Digest>() else { continue };
            if keep_blobs.contains(&d) {
                continue;
            }
            let path = blob_dir.join(&name);
            let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(io_err("remove blob", &path))?;
            report.blob_bytes += size;
            report.blobs.push(d);
        }

        let layers_dir = self.root.join("layers");
        for id in list_dir(&layers_dir)? {
            if keep_layers.contains(&id) {
                continue;
            }
            let dir = layers_dir.join(&id);
            let diff_id = fs::read_to_string(dir.join("diff_id")).ok().and_then(|s| s.trim().parse().ok());
            // Rename first so a half-removed layer never looks complete.
            let trash = self.tmp_path(&format!("trash-{id}"));
            fs::rename(&dir, &trash).map_err(io_err("move away layer", &dir))?;
            fs::remove_dir_all(&trash).map_err(io_err("remove layer", &trash))?;
            report.layers.extend(diff_id);
        }

        let tmp_dir = self.root.join("tmp");
        for name in list_dir(&tmp_dir)? {
            let path = tmp_dir.join(name);
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
        let locks_dir = self.root.join("locks");
        for name in list_dir(&locks_dir)? {
            // Layer locks are only taken under a shared gc lock, so nobody holds one now.
            if let Some(id) = name.strip_prefix("layer-").and_then(|n| n.strip_suffix(".lock"))
                && !keep_layers.contains(id)
            {
                let _ = fs::remove_file(locks_dir.join(&name));
            }
        }
        Ok(report)
    }

    /// Blobs and layer ids reachable from `pending` (manifest or index digests). Missing or unparsable blobs end the walk quietly
    /// on that branch (so a broken image never blocks pruning others).
    fn reachable(&self, mut pending: Vec<Digest>) -> (HashSet<Digest>, HashSet<String>) {
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        while let Some(d) = pending.pop() {
            if !blobs.insert(d.clone()) {
                continue;
            }
            let Ok(refs) = self.manifest_refs(&d) else { continue };
            pending.extend(refs.manifests.into_iter().map(|m| m.digest));
            for layer in &refs.layers {
                blobs.insert(layer.digest.clone());
            }
            if let Some(config) = refs.config {
                blobs.insert(config.digest.clone());
                if let Ok(diff_ids) = self.config_diff_ids(&config.digest) {
                    layers.extend(diff_ids.iter().map(layer_id));
                }
            }
        }
        (blobs, layers)
    }
}

/// Image names are stored as given (normalised by the caller) but must be printable and non-empty.
fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > 1024 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(StoreError::BadName(name.into()));
    }
    Ok(())
}

fn list_dir(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::sha256_of(b"hello");
        assert!(!store.has_blob(&d));
        let wrong = Digest::sha256_of(b"other");
        assert!(matches!(store.write_blob(&wrong, b"hello"), Err(StoreError::DigestMismatch { .. })));
        assert!(matches!(
            store.write_blob_from(&wrong, &b"hello"[..]),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&wrong));
        store.write_blob(&d, b"hello").unwrap();
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        assert!(matches!(store.read_blob(&wrong), Err(StoreError::BlobMissing(_))));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temp debris");
    }

    #[test]
    fn tags_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::sha256_of(b"m");
        store.set_tag("docker.io/library/nginx:1.10", &d).unwrap();
        store.set_tag("x:1", &d).unwrap();
        assert_eq!(store.tag("x:1").unwrap(), Some(d.clone()));
        assert_eq!(store.tags().unwrap().len(), 2);
        assert_eq!(store.remove_tag("x:1").unwrap(), Some(d));
        assert_eq!(store.remove_tag("x:1").unwrap(), None);
        assert!(store.set_tag("bad name", &Digest::sha256_of(b"")).is_err());
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.tags().unwrap().keys().collect::<Vec<_>>(), ["docker.io/library/nginx:1.10"]);
    }

    #[test]
    fn layer_ids_are_short_prefixes() {
        let d = Digest::sha256_of(b"layer");
        assert_eq!(layer_id(&d), &d.hex()[..16]);
    }
}
