//! An overlayfs upper directory → an OCI layer tar, the way BuildKit's and containers/storage's
//! differs write one: entries byte-sorted per directory; a whiteout (0/0 character device)
//! becomes `.wh.<name>`; an opaque directory (`trusted.overlay.opaque=y`) gets a
//! `.wh..wh..opq` entry right after it; a redirect or metacopy xattr is refused (RUN mounts
//! never enable them); overlay and SELinux xattrs are dropped, the others (file capabilities
//! included) kept; hardlinks become link entries; sockets are skipped; numeric owners; mtimes
//! clamped to `SOURCE_DATE_EPOCH` when given. Also removes the mount stubs a RUN container
//! leaves in the upper dir, fd-relative so a RUN cannot point the removal at the host.

use crate::image::compression::STREAM_BUFFER;
use crate::image::digest::{Digest, HashingWriter};
use crate::image::import::CountingWriter;
use crate::image::unpack::is_overlay_xattr;
use crate::sys::openat::{lgetxattr, llistxattr};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, SFlag, fstatat};
use nix::unistd::UnlinkatFlags;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why an upper dir could not become a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{path}: overlay {what} found in the RUN layer (redirect_dir/metacopy must be off)")]
    Redirect { path: PathBuf, what: &'static str },
    #[error("writing layer from {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A layer tar written to a file.
#[derive(Debug, Clone)]
pub struct WrittenLayer {
    pub diff_id: Digest,
    pub size: u64,
    /// Whether the upper dir held no change at all.
    pub empty: bool,
}

/// Writes the changes in `upper` as a layer tar to `out`.
pub fn write_layer(upper: &Path, out: &Path, clamp_mtime: Option<u64>) -> Result<WrittenLayer, LayerError> {
    let io_err = |source| LayerError::Io { path: upper.to_path_buf(), source };
    let file = File::create(out).map_err(io_err)?;
    let counting = CountingWriter { inner: BufWriter::with_capacity(STREAM_BUFFER, file), count: 0 };
    let mut builder = tar::Builder::new(HashingWriter::new(counting));
    builder.follow_symlinks(false);
    let mut walker = Walker { builder: &mut builder, clamp: clamp_mtime, seen: HashMap::new(), entries: 0 };
    walker.children(upper, Path::new(""))?;
    let entries = walker.entries;
    let hashing = builder.into_inner().map_err(io_err)?;
    let (diff_id, mut counting) = hashing.finish();
    counting.flush().map_err(io_err)?;
    Ok(WrittenLayer { diff_id, size: counting.count, empty: entries == 0 })
}

struct Walker<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    clamp: Option<u64>,
    seen: HashMap<(u64, u64), PathBuf>,
    entries: usize,
}

impl<W: Write> Walker<'_, W> {
    fn children(&mut self, dir: &Path, rel: &Path) -> Result<(), LayerError> {
        let io_err = |source| LayerError::Io { path: dir.to_path_buf(), source };
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(io_err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err)?;
        names.sort();
        for name in names {
            self.entry(&dir.join(&name), &rel.join(&name))?;
        }
        Ok(())
    }

    fn entry(&mut self, src: &Path, rel: &Path) -> Result<(), LayerError> {
        let io_err = |source| LayerError::Io { path: src.to_path_buf(), source };
        let meta = std::fs::symlink_metadata(src).map_err(io_err)?;
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let mut header = tar::Header::new_gnu();
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        header.set_mtime(self.clamp.map_or(mtime, |c| mtime.min(c)));
        header.set_size(0);
        self.entries += 1;
        if ft.is_char_device() && meta.rdev() == 0 {
            // An overlay whiteout: the lower entry was deleted.
            let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let wh = rel.with_file_name(format!(".wh.{name}"));
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0);
            header.set_mtime(self.clamp.map_or(mtime, |c| mtime.min(c)));
            return self.builder.append_data(&mut header, wh, io::empty()).map_err(io_err);
        }
        let mut opaque = false;
        let mut records = Vec::new();
        for name in llistxattr(src).map_err(|e| io_err(e.into()))? {
            if name == "trusted.overlay.redirect" || name == "user.overlay.redirect" {
                return Err(LayerError::Redirect { path: rel.to_path_buf(), what: "redirect" });
            }
            if name == "trusted.overlay.metacopy" || name == "user.overlay.metacopy" {
                return Err(LayerError::Redirect { path: rel.to_path_buf(), what: "metacopy" });
            }
            if name == "trusted.overlay.opaque" || name == "user.overlay.opaque" {
                opaque = lgetxattr(src, &name).map_err(|e| io_err(e.into()))?.as_deref() == Some(b"y");
                continue;
            }
            if is_overlay_xattr(&name) || name == "security.selinux" {
                continue;
            }
            if let Some(value) = lgetxattr(src, &name).map_err(|e| io_err(e.into()))? {
                records.push((format!("SCHILY.xattr.{name}"), value));
            }
        }
        if !records.is_empty() {
            self.builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(io_err)?;
        }
        header.set_mode(meta.mode() & 0o7777);
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            self.builder.append_data(&mut header, rel, io::empty()).map_err(io_err)?;
            if opaque {
                let mut wh = tar::Header::new_gnu();
                wh.set_entry_type(tar::EntryType::Regular);
                wh.set_mode(0);
                wh.set_size(0);
                wh.set_mtime(header.mtime().unwrap_or(0));
                self.builder.append_data(&mut wh, rel.join(".wh..wh..opq"), io::empty()).map_err(io_err)?;
            }
            self.children(src, rel)?;
        } else if ft.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            let target = std::fs::read_link(src).map_err(io_err)?;
            self.builder.append_link(&mut header, rel, target).map_err(io_err)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.seen.get(&key) {
                    header.set_entry_type(tar::EntryType::Link);
                    let first = first.clone();
                    return self.builder.append_link(&mut header, rel, first).map_err(io_err);
                }
                self.seen.insert(key, rel.to_path_buf());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(src).map_err(io_err)?;
            let mut data = io::Read::take(file, meta.len());
            self.builder.append_data(&mut header, rel, &mut data).map_err(io_err)?;
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
            header.set_device_major(libc::major(rdev)).map_err(io_err)?;
            header.set_device_minor(libc::minor(rdev)).map_err(io_err)?;
            self.builder.append_data(&mut header, rel, io::empty()).map_err(io_err)?;
        }
        Ok(())
    }
}

/// The mount points a RUN container's runtime may have created: removed from the upper dir when
/// they are empty there and absent from every lower layer (so they never ship in a layer).
const STUB_DIRS: &[&str] = &["proc", "sys", "dev", "run"];
const STUB_FILES: &[&str] = &["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// Removes the mount stubs of a RUN from `upper` (see [`STUB_DIRS`]); `in_lower` says whether a
/// path exists in the layers below. Never follows a symlink the RUN may have planted.
pub fn remove_stubs(upper: &Path, in_lower: impl Fn(&str) -> bool) -> io::Result<()> {
    let root = File::open(upper)?;
    let beneath = |dir: &OwnedFd, name: &str| -> Option<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        openat2(dir.as_fd(), name, how).ok()
    };
    let root: OwnedFd = root.into();
    for file in STUB_FILES {
        if in_lower(file) {
            continue;
        }
        let (dir, name) = file.split_once('/').expect("stub files are in a directory");
        let Some(dir_fd) = beneath(&root, dir) else { continue };
        if let Ok(st) = fstatat(dir_fd.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            && is_kind(&st, SFlag::S_IFREG)
            && st.st_size == 0
        {
            nix::unistd::unlinkat(dir_fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)?;
        }
    }
    for dir in STUB_DIRS.iter().chain(["etc"].iter()) {
        if in_lower(dir) {
            continue;
        }
        if let Ok(st) = fstatat(root.as_fd(), *dir, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            && is_kind(&st, SFlag::S_IFDIR)
        {
            // Fails (and is kept) unless empty.
            let _ = nix::unistd::unlinkat(root.as_fd(), *dir, UnlinkatFlags::RemoveDir);
        }
    }
    Ok(())
}

fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(tar_path: &Path) -> Vec<(String, tar::EntryType, u32)> {
        let mut a = tar::Archive::new(File::open(tar_path).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().entry_type(), e.header().mode().unwrap())
            })
            .collect()
    }

    #[test]
    fn sorted_entries_hardlinks_symlinks_and_clamped_times() {
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path().join("up");
        std::fs::create_dir_all(up.join("b/c")).unwrap();
        std::fs::write(up.join("b/c/f"), b"data").unwrap();
        std::fs::hard_link(up.join("b/c/f"), up.join("b/h")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", up.join("a-link")).unwrap();
        std::fs::set_permissions(up.join("b/c/f"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        let out = dir.path().join("l.tar");
        let l = write_layer(&up, &out, Some(1000)).unwrap();
        assert!(!l.empty);
        let es = entries(&out);
        let names: Vec<&str> = es.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["a-link", "b", "b/c", "b/c/f", "b/h"]);
        assert_eq!(es[0].1, tar::EntryType::Symlink);
        assert_eq!(es[3].2, 0o4755, "setuid kept");
        assert_eq!(es[4].1, tar::EntryType::Link);
        let mut a = tar::Archive::new(File::open(&out).unwrap());
        for e in a.entries().unwrap() {
            assert!(e.unwrap().header().mtime().unwrap() <= 1000, "clamped");
        }
        // Same tree, same digest.
        let again = write_layer(&up, &dir.path().join("2.tar"), Some(1000)).unwrap();
        assert_eq!(again.diff_id, l.diff_id);
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(write_layer(&empty, &dir.path().join("3.tar"), None).unwrap().empty);
    }

    #[test]
    fn stubs_are_removed_only_when_empty_and_new() {
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path().join("up");
        for d in ["proc", "sys", "dev", "etc", "run/x"] {
            std::fs::create_dir_all(up.join(d)).unwrap();
        }
        std::fs::write(up.join("etc/hosts"), b"").unwrap();
        std::fs::write(up.join("etc/resolv.conf"), b"nameserver 1.1.1.1\n").unwrap();
        remove_stubs(&up, |p| p == "sys").unwrap();
        assert!(!up.join("proc").exists());
        assert!(!up.join("dev").exists());
        assert!(up.join("sys").exists(), "in the lower layers: kept");
        assert!(up.join("run/x").exists(), "not empty: kept");
        assert!(!up.join("etc/hosts").exists());
        assert!(up.join("etc/resolv.conf").exists(), "written by the RUN: kept");
        // A symlink planted in place of etc is never followed.
        let up2 = dir.path().join("up2");
        std::fs::create_dir(&up2).unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("hosts"), b"").unwrap();
        std::os::unix::fs::symlink(&victim, up2.join("etc")).unwrap();
        remove_stubs(&up2, |_| false).unwrap();
        assert!(victim.join("hosts").exists());
    }
}
