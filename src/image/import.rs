//! `rkubelet image import`: a root filesystem directory or tarball → a one-layer local image.
//!
//! The layer is written once as an uncompressed tar into the store's `tmp/` (hashed on the way: its
//! digest is both blob digest and diffID), unpacked through the same safe path as pulled layers, and
//! then renamed into `blobs/` as is; an OCI config and manifest are stored and the name is tagged.
//! Uncompressed, like `podman import`: importing costs no compression (a push uploads the tar as is).
//! Directory entries are archived in sorted order and the config carries no timestamp, so importing
//! the same tree twice gives the same digest.

use crate::image::compression::{self, CompressionError, STREAM_BUFFER};
use crate::image::digest::{Digest, HashingWriter};
use crate::image::store::{Store, StoreError};
use crate::image::unpack::is_overlay_xattr;
use crate::sys::openat::{lgetxattr, llistxattr};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Media type of the layer an import writes.
pub const LAYER_MEDIA_TYPE: &str = crate::image::store::UNCOMPRESSED_LAYER;
/// Media type of the manifest an import writes.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the config an import writes.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("import source {0}: not a directory or a regular file")]
    BadSource(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("import source {path}: {source}")]
    Compression {
        path: PathBuf,
        #[source]
        source: CompressionError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Imports `source` (a directory, or a tar file: plain, gzip or zstd) as image `name`; returns the
/// manifest digest.
pub fn import(store: &Store, source: &Path, name: &str) -> Result<Digest, ImportError> {
    let meta = std::fs::metadata(source).map_err(|e| io_err("inspect", source, e))?;
    let _lease = store.lease()?;
    let tmp = store.root().join("tmp").join(format!("import-{}-{}.tar", std::process::id(), unique()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let layer = if meta.is_dir() {
        write_layer(&tmp, |out| {
            let mut builder = tar::Builder::new(out);
            TreeArchiver { builder: &mut builder, seen_inodes: HashMap::new() }.append_tree(source)?;
            builder.into_inner()
        })
    } else if meta.is_file() {
        let file = File::open(source).map_err(|e| io_err("open", source, e))?;
        let (_, mut tar_stream) = compression::decompress("", file)
            .map_err(|e| ImportError::Compression { path: source.to_path_buf(), source: e })?;
        write_layer(&tmp, |mut out| {
            io::copy(&mut tar_stream, &mut out)?;
            Ok(out)
        })
    } else {
        return Err(ImportError::BadSource(source.to_path_buf()));
    }
    .map_err(|e| io_err("write layer from", source, e))?;

    store.unpack_layer_file(&layer.diff_id, &tmp)?;

    let config = serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": { "Env": [DEFAULT_PATH] },
        "rootfs": { "type": "layers", "diff_ids": [layer.diff_id.to_string()] },
        "history": [{ "created_by": "rkubelet image import" }],
    });
    let config_bytes = serde_json::to_vec(&config).expect("JSON value serialises");
    let config_digest = Digest::sha256_of(&config_bytes);
    store.write_blob(&config_digest, &config_bytes)?;

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": layer.diff_id.to_string(),
            "size": layer.size,
        }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON value serialises");
    let manifest_digest = Digest::sha256_of(&manifest_bytes);
    store.write_blob(&manifest_digest, &manifest_bytes)?;
    store.set_tag(name, &manifest_digest)?;
    Ok(manifest_digest)
}

/// Writes a directory tree as tar entries: sorted names (so the same tree gives the same digest),
/// owners, modes, mtimes, xattrs (PAX `SCHILY.xattr.*`), symlinks, hardlinks, device nodes and fifos.
/// Sockets are skipped, as docker does.
struct TreeArchiver<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    /// (device, inode) of multiply-linked files already written, and their archive path.
    seen_inodes: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> TreeArchiver<'_, W> {
    fn append_tree(&mut self, root: &Path) -> io::Result<()> {
        self.append(root, Path::new("."))
    }

    /// Appends `src` as archive path `rel`, and its children when it is a directory.
    fn append(&mut self, src: &Path, rel: &Path) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(src)?;
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_size(0);
        self.append_xattrs(src)?;
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            let name = if rel == Path::new(".") { PathBuf::from("./") } else { rel.to_path_buf() };
            self.builder.append_data(&mut header, name, io::empty())?;
            let mut children: Vec<_> =
                std::fs::read_dir(src)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
            children.sort();
            for child in children {
                self.append(&src.join(&child), &rel.join(&child))?;
            }
        } else if ft.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            let target = std::fs::read_link(src)?;
            self.builder.append_link(&mut header, rel, target)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.seen_inodes.get(&key) {
                    header.set_entry_type(tar::EntryType::Link);
                    let first = first.clone();
                    return self.builder.append_link(&mut header, rel, first);
                }
                self.seen_inodes.insert(key, rel.to_path_buf());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(src)?;
            // A file that changes size while archived would corrupt the tar: copy exactly the header size.
            let mut data = io::Read::take(file, meta.len());
            self.builder.append_data(&mut header, rel, &mut data)?;
        } else {
            let kind = if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            header.set_entry_type(kind);
            let rdev = meta.rdev();
            header.set_device_major(libc::major(rdev))?;
            header.set_device_minor(libc::minor(rdev))?;
            self.builder.append_data(&mut header, rel, io::empty())?;
        }
        Ok(())
    }

    /// A PAX record per xattr of `src`, applying to the entry appended next (overlay metadata and
    /// SELinux labels excluded).
    fn append_xattrs(&mut self, src: &Path) -> io::Result<()> {
        let mut records = Vec::new();
        for name in llistxattr(src)? {
            // Host SELinux labels do not belong in an image.
            if is_overlay_xattr(&name) || name == "security.selinux" {
                continue;
            }
            if let Some(value) = lgetxattr(src, &name)? {
                records.push((format!("SCHILY.xattr.{name}"), value));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        self.builder.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }
}

/// Digest and size of a layer tar written to a temp file.
struct WrittenLayer {
    diff_id: Digest,
    size: u64,
}

type LayerWriter = HashingWriter<CountingWriter<BufWriter<File>>>;

/// Writes a layer tar to `path`: `fill` gets the tar writer and returns it when done.
fn write_layer(
    path: &Path,
    fill: impl FnOnce(LayerWriter) -> io::Result<LayerWriter>,
) -> io::Result<WrittenLayer> {
    let file = File::create(path)?;
    let counting = CountingWriter { inner: BufWriter::with_capacity(STREAM_BUFFER, file), count: 0 };
    let tar_out = fill(HashingWriter::new(counting))?;
    let (diff_id, mut counting) = tar_out.finish();
    counting.flush()?;
    Ok(WrittenLayer { diff_id, size: counting.count })
}

/// Counts bytes written through it.
pub(crate) struct CountingWriter<W> {
    pub(crate) inner: W,
    pub(crate) count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> ImportError {
    ImportError::Io { op, path: path.to_path_buf(), source }
}

/// This machine's architecture in OCI/Go spelling.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}
