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

use crate::image::compression::decode::{self, DecodeError};
use crate::image::compression::{CompressionError, STREAM_BUFFER};
use crate::image::digest::{Digest, HashingReader};
use crate::image::unpack::{UnpackError, unpack_tar};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

mod gc;
mod image;
mod tags;

pub use gc::PruneReport;
pub use image::{Descriptor, ManifestRefs};

/// The store root used when none is given.
pub const DEFAULT_ROOT: &str = "/var/lib/rkube";

/// Media type of an uncompressed layer.
pub const UNCOMPRESSED_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

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
            let mode = fs::metadata(&dir).map_err(io_err("inspect", &dir))?.permissions().mode() & 0o7777;
            if mode != 0o700 {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("restrict", &dir))?;
            }
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

    /// Streams a blob into the store, verifying its digest at EOF; returns its size. Atomic. When the blob
    /// is already present, returns its size without reading `reader`.
    pub fn write_blob_from(&self, d: &Digest, reader: impl Read) -> Result<u64, StoreError> {
        let _gc = self.lease()?;
        if let Ok(meta) = fs::metadata(self.blob_path(d)) {
            return Ok(meta.len());
        }
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
        reader: impl Read + Send,
    ) -> Result<PathBuf, StoreError> {
        self.unpack_layer_adopting(blob, diff_id, media_type, reader, None)
    }

    /// Unpacks an uncompressed layer tar file (e.g. written by an import into this store's `tmp/`) whose
    /// sha256 is `diff_id`; the file itself then becomes the layer's blob (renamed, not copied).
    pub fn unpack_layer_file(&self, diff_id: &Digest, tar_file: &Path) -> Result<PathBuf, StoreError> {
        let file = File::open(tar_file).map_err(io_err("open layer file", tar_file))?;
        self.unpack_layer_adopting(diff_id, diff_id, UNCOMPRESSED_LAYER, file, Some(tar_file))
    }

    /// [`Store::unpack_layer`], with the blob either copied from the stream or, with `adopt`, renamed
    /// from that file once verified.
    fn unpack_layer_adopting(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        media_type: &str,
        reader: impl Read + Send,
        adopt: Option<&Path>,
    ) -> Result<PathBuf, StoreError> {
        let _gc = self.lease()?;
        let id = layer_id(diff_id);
        let _layer_lock = self.lock(&format!("layer-{id}"), FlockArg::LockExclusive)?;
        if let Some(done) = self.layer_path(diff_id) {
            if !self.has_blob(blob) {
                match adopt {
                    Some(file) => self.adopt_blob(blob, file)?,
                    None => self.store_layer_blob(blob, diff_id, media_type, reader)?,
                }
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
        let blob_copy = if self.has_blob(blob) || adopt.is_some() {
            None
        } else {
            let file = File::create(&blob_tmp).map_err(io_err("create temp blob", &blob_tmp))?;
            Some(BufWriter::with_capacity(STREAM_BUFFER, file))
        };

        let decoded = std::thread::scope(|scope| {
            let mut decoder = decode::spawn_decoder(scope, media_type, reader, blob_copy);
            match unpack_tar(&fs_dir, &mut decoder.tar) {
                Ok(_) => decoder.finish().map_err(|e| self.decode_error(diff_id, e)),
                Err(unpack) => Err(match decoder.abort() {
                    // A broken stream explains the unpack failure better than the tar parser's view of it.
                    Err(e @ (DecodeError::Read(_) | DecodeError::Compression(_) | DecodeError::Copy(_))) => {
                        self.decode_error(diff_id, e)
                    }
                    _ => StoreError::Unpack { diff_id: diff_id.clone(), source: unpack },
                }),
            }
        })?;
        check_digests(blob, diff_id, &decoded.blob, &decoded.diff_id)?;
        let copy = decoded.copy;

        let blob_dest = self.blob_path(blob);
        if let Some(copy) = copy {
            drop(copy);
            fs::rename(&blob_tmp, &blob_dest).map_err(io_err("rename blob into", &blob_dest))?;
        } else if let Some(file) = adopt.filter(|_| !self.has_blob(blob)) {
            // Verified above: the decoder hashed exactly this file's bytes.
            fs::rename(file, &blob_dest).map_err(io_err("rename blob into", &blob_dest))?;
        }
        let marker = work.join("diff_id");
        fs::write(&marker, diff_id.to_string()).map_err(io_err("write", &marker))?;
        fs::rename(&work, &dest).map_err(io_err("rename layer into", &dest))?;
        work_guard.keep = true;
        Ok(dest.join("fs"))
    }

    /// Renames `file` into the store as blob `blob` after checking its digest.
    fn adopt_blob(&self, blob: &Digest, file: &Path) -> Result<(), StoreError> {
        let mut hashing = HashingReader::new(File::open(file).map_err(io_err("open", file))?);
        io::copy(&mut hashing, &mut io::sink()).map_err(io_err("read", file))?;
        let (actual, _) = hashing.finish();
        if &actual != blob {
            return Err(StoreError::DigestMismatch { expected: blob.clone(), actual });
        }
        let dest = self.blob_path(blob);
        fs::rename(file, &dest).map_err(io_err("rename blob into", &dest))
    }

    /// Keeps the compressed blob of a layer that is already unpacked (e.g. the same layer pulled in
    /// another compression), checking both its digest and that it decompresses to `diff_id`.
    fn store_layer_blob(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        media_type: &str,
        reader: impl Read + Send,
    ) -> Result<(), StoreError> {
        let tmp = self.tmp_path(&format!("blob-{}", blob.short()));
        let mut guard = TmpGuard { path: tmp.clone(), keep: false };
        let file = File::create(&tmp).map_err(io_err("create temp blob", &tmp))?;
        let copy = Some(BufWriter::with_capacity(STREAM_BUFFER, file));
        let decoded = std::thread::scope(|scope| {
            let mut decoder = decode::spawn_decoder(scope, media_type, reader, copy);
            let drained = io::copy(&mut decoder.tar, &mut io::sink());
            let decoded = decoder.finish().map_err(|e| self.decode_error(diff_id, e))?;
            drained.map_err(|source| StoreError::Stream { diff_id: diff_id.clone(), source })?;
            Ok::<_, StoreError>(decoded)
        })?;
        check_digests(blob, diff_id, &decoded.blob, &decoded.diff_id)?;
        drop(decoded.copy);
        let dest = self.blob_path(blob);
        fs::rename(&tmp, &dest).map_err(io_err("rename blob into", &dest))?;
        guard.keep = true;
        Ok(())
    }

    fn decode_error(&self, diff_id: &Digest, e: DecodeError) -> StoreError {
        let diff_id = diff_id.clone();
        match e {
            DecodeError::Compression(source) => StoreError::Compression { diff_id, source },
            DecodeError::Read(source) => StoreError::Stream { diff_id, source },
            DecodeError::Copy(source) => {
                StoreError::Io { op: "write blob copy of layer", path: self.root.join("tmp"), source }
            }
            DecodeError::Aborted => StoreError::Stream { diff_id, source: io::Error::other("aborted") },
        }
    }
}

/// Both digests of a decoded layer stream must match what the manifest and config promise.
fn check_digests(
    blob: &Digest,
    diff_id: &Digest,
    actual_blob: &Digest,
    actual_diff: &Digest,
) -> Result<(), StoreError> {
    if actual_blob != blob {
        return Err(StoreError::DigestMismatch { expected: blob.clone(), actual: actual_blob.clone() });
    }
    if actual_diff != diff_id {
        return Err(StoreError::DiffIdMismatch { diff_id: diff_id.clone(), actual: actual_diff.clone() });
    }
    Ok(())
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
        assert_eq!(store.write_blob_from(&d, &b"not read"[..]).unwrap(), 5, "present: not rewritten");
        assert!(matches!(store.read_blob(&wrong), Err(StoreError::BlobMissing(_))));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temp debris");
    }

    #[test]
    fn layer_ids_are_short_prefixes() {
        let d = Digest::sha256_of(b"layer");
        assert_eq!(layer_id(&d), &d.hex()[..16]);
    }
}
