//! Safe extraction of one layer tar into its own directory, with whiteouts converted for overlayfs.
//!
//! Safety model: every path of the tar is cleaned (absolute → relative, `.` dropped, `..` refused) and
//! its parent directory is opened with `openat2(RESOLVE_IN_ROOT)` on the layer directory, so symlinks
//! planted by earlier entries resolve *inside* the layer (as they would inside the container) and never
//! reach the host. The final component is then created with `*at` calls that do not follow symlinks
//! (`O_NOFOLLOW|O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `linkat` without `AT_SYMLINK_FOLLOW`), and attributes are
//! set on the open fd. Hardlink targets are resolved the same way, so they can only name files of this
//! layer. Overlay metadata xattrs (`trusted.overlay.*`, `user.overlay.*`) from the tar are dropped: only the conversion
//! below may set them.
//!
//! Whiteouts (OCI image-spec `layer.md`) become what overlayfs reads:
//! - `dir/.wh.name` → a 0/0 character device `dir/name`;
//! - `dir/.wh..wh..opq` → xattr `trusted.overlay.opaque=y` on `dir` (the layer's own entries in `dir` stay:
//!   the layer directory starts empty, so nothing of this layer is ever hidden);
//! - other `.wh..wh.*` names are AUFS metadata and are skipped.
//!
//! Directory mtimes are applied after all entries. Implicit parent directories (missing from the tar)
//! are created `0755 root:root`: layers unpack independently, so attributes cannot be inherited from
//! lower layers.

use crate::sys::openat::{fsetxattr, open_in_root};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

/// Prefix of a whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Xattr overlayfs reads to hide a lower directory's content.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Copy buffer for file contents.
const COPY_BUFFER: usize = 256 * 1024;

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("refused layer entry {path:?}: {reason}")]
    Refused { path: String, reason: String },
    #[error("{op} {path:?} in layer: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading layer tar stream: {0}")]
    Tar(#[source] io::Error),
}

/// What an unpack wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries processed (including whiteouts).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// What a (cleaned) file name means to the overlay conversion.
#[derive(Debug, PartialEq, Eq)]
pub enum WhiteoutKind<'a> {
    /// A regular name.
    None,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Whiteout(&'a OsStr),
    /// Other `.wh..wh.*` metadata: skipped.
    Metadata,
}

/// Classifies the last component of an entry path.
pub fn whiteout_kind(name: &OsStr) -> WhiteoutKind<'_> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER.as_bytes() {
        WhiteoutKind::Opaque
    } else if bytes.starts_with(b".wh..wh.") {
        WhiteoutKind::Metadata
    } else if let Some(rest) = bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        WhiteoutKind::Whiteout(OsStr::from_bytes(rest))
    } else {
        WhiteoutKind::None
    }
}

/// Turns a tar path into a path relative to the layer root: leading `/` and `.` components are dropped,
/// `..` is refused. Returns an empty path for the root itself.
pub fn clean_entry_path(raw: &[u8]) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("empty path".into());
    }
    if raw.contains(&0) {
        return Err("NUL byte in path".into());
    }
    let mut out = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("path contains '..'".into()),
            Component::Normal(c) => out.push(c),
            Component::Prefix(_) => return Err("path has a prefix".into()),
        }
    }
    Ok(out)
}

/// Parses a PAX time (`secs[.fraction]`, possibly negative) into a timespec.
pub fn parse_pax_time(value: &str) -> Option<TimeSpec> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let mut nanos: i64 = digits.parse().ok()?;
    let mut secs = secs;
    if value.starts_with('-') && nanos > 0 {
        secs -= 1;
        nanos = 1_000_000_000 - nanos;
    }
    Some(TimeSpec::new(secs, nanos))
}

/// Attributes of one entry, merged from its header and PAX records.
struct Attrs {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Unpacks the tar read from `reader` into the existing directory `root` (normally empty).
///
/// Stops at the tar end-of-archive marker: the caller drains the rest of the stream if it needs to
/// (e.g. to finish a digest). Refuses `..` paths, non-directories at the layer root and hardlinks
/// whose target is not in this layer.
pub fn unpack_tar<R: Read>(root: &Path, reader: R) -> Result<UnpackStats, UnpackError> {
    let root_fd =
        nix::fcntl::open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| io_err("open layer dir", root.to_string_lossy().into_owned(), e))?;
    let mut unpacker = Unpacker {
        root: root_fd,
        parent_cache: None,
        dir_times: HashMap::new(),
        buf: vec![0u8; COPY_BUFFER],
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(PadToBlock { inner: reader, offset: 0, padding: 0 });
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let entry = entry.map_err(UnpackError::Tar)?;
        unpacker.entry(entry)?;
    }
    unpacker.finish_dir_times()?;
    Ok(unpacker.stats)
}

/// Some writers (umoci 0.4) end a layer right after the last file's data, without the zero padding to
/// a 512-byte block and without the end-of-archive blocks. Like Go's archive/tar, accept that: at EOF,
/// supply zeros up to the block boundary only; the tar parser then sees a clean end at the next header.
/// The diffID is hashed below this reader, over the real bytes only.
struct PadToBlock<R> {
    inner: R,
    offset: u64,
    padding: usize,
}

impl<R: Read> Read for PadToBlock<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.padding == 0 {
            let n = self.inner.read(buf)?;
            self.offset += n as u64;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let partial = (self.offset % 512) as usize;
            if partial == 0 {
                return Ok(0);
            }
            self.padding = 512 - partial;
            self.offset += self.padding as u64;
        }
        let n = self.padding.min(buf.len());
        buf[..n].fill(0);
        self.padding -= n;
        Ok(n)
    }
}

fn io_err(op: &'static str, path: impl Into<String>, e: impl Into<io::Error>) -> UnpackError {
    UnpackError::Io { op, path: path.into(), source: e.into() }
}

fn refused(path: &Path, reason: impl Into<String>) -> UnpackError {
    UnpackError::Refused { path: path.to_string_lossy().into_owned(), reason: reason.into() }
}

fn show(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

struct Unpacker {
    root: OwnedFd,
    /// The last parent directory opened, reused while no entry removes anything.
    parent_cache: Option<(PathBuf, OwnedFd)>,
    /// Directory mtimes to apply at the end (the last entry for a path wins).
    dir_times: HashMap<PathBuf, TimeSpec>,
    buf: Vec<u8>,
    stats: UnpackStats,
}

impl Unpacker {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(()); // metadata records the tar parser already applied
        }
        let path = clean_entry_path(&entry.path_bytes())
            .map_err(|reason| refused(Path::new(OsStr::from_bytes(&entry.path_bytes())), reason))?;
        let attrs = read_attrs(&mut entry, &path)?;

        let Some(name) = path.file_name().map(OsString::from) else {
            // The layer root itself: only a directory entry makes sense.
            if kind != EntryType::Directory {
                return Err(refused(&path, "a non-directory entry would replace the layer root"));
            }
            let fd = self.open_dir(Path::new(""), &path)?;
            set_fd_attrs(&fd, &attrs, &path)?;
            self.dir_times.insert(PathBuf::new(), attrs.mtime);
            return Ok(());
        };
        let parent_path = path.parent().unwrap_or(Path::new("")).to_path_buf();

        match whiteout_kind(&name) {
            WhiteoutKind::Metadata => return Ok(()),
            WhiteoutKind::Opaque => {
                let dir = self.ensure_dir(&parent_path, &path)?;
                return fsetxattr(&dir, OPAQUE_XATTR, b"y")
                    .map_err(|e| io_err("set opaque xattr on", show(&parent_path), e));
            }
            WhiteoutKind::Whiteout(target) => {
                if target.is_empty() || target == "." || target == ".." {
                    return Err(refused(&path, "whiteout of an invalid name"));
                }
                let target = target.to_os_string();
                let parent = self.ensure_dir(&parent_path, &path)?;
                self.remove_existing(&parent, &target, false, &path)?;
                mknodat(&parent, target.as_os_str(), SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| io_err("create whiteout for", show(&path), e))?;
                fchownat(
                    &parent,
                    target.as_os_str(),
                    Some(Uid::from_raw(attrs.uid)),
                    Some(Gid::from_raw(attrs.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io_err("chown whiteout", show(&path), e))?;
                return Ok(());
            }
            WhiteoutKind::None => {}
        }

        let parent = self.ensure_dir(&parent_path, &path)?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.remove_existing(&parent, &name, false, &path)?;
                let fd = openat(
                    &parent,
                    name.as_os_str(),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| io_err("create file", show(&path), e))?;
                let mut file = File::from(fd);
                self.copy_contents(&mut entry, &mut file, &path)?;
                set_fd_attrs(&file, &attrs, &path)?;
            }
            EntryType::Directory => {
                let exists = self.remove_existing(&parent, &name, true, &path)?;
                if !exists {
                    mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o700))
                        .map_err(|e| io_err("create directory", show(&path), e))?;
                }
                let fd = openat(
                    &parent,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_err("open directory", show(&path), e))?;
                set_fd_attrs(&fd, &attrs, &path)?;
                self.dir_times.insert(path.clone(), attrs.mtime);
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty() && !t.contains(&0))
                    .ok_or_else(|| refused(&path, "symlink without a target"))?
                    .into_owned();
                self.remove_existing(&parent, &name, false, &path)?;
                symlinkat(OsStr::from_bytes(&target), &parent, name.as_os_str())
                    .map_err(|e| io_err("create symlink", show(&path), e))?;
                self.set_nofollow_attrs(&parent, &name, &attrs, &path, false)?;
            }
            EntryType::Link => {
                let raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(&path, "hardlink without a target"))?
                    .into_owned();
                let target =
                    clean_entry_path(&raw).map_err(|r| refused(&path, format!("hardlink target: {r}")))?;
                let Some(target_name) = target.file_name().map(OsString::from) else {
                    return Err(refused(&path, "hardlink to the layer root"));
                };
                let target_parent = target.parent().unwrap_or(Path::new(""));
                let target_dir = open_in_root(
                    &self.root,
                    target_parent,
                    OFlag::O_PATH | OFlag::O_DIRECTORY,
                    Mode::empty(),
                )
                .map_err(|e| {
                    refused(&path, format!("hardlink target {:?} is not in this layer: {e}", show(&target)))
                })?;
                if target == path {
                    return Ok(()); // a link to itself: nothing to do
                }
                self.remove_existing(&parent, &name, false, &path)?;
                // No AT_SYMLINK_FOLLOW: a symlink target is linked as the symlink itself.
                linkat(&target_dir, target_name.as_os_str(), &parent, name.as_os_str(), AtFlags::empty())
                    .map_err(|e| {
                        refused(
                            &path,
                            format!("hardlink target {:?} is not in this layer: {e}", show(&target)),
                        )
                    })?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                self.remove_existing(&parent, &name, false, &path)?;
                mknodat(&parent, name.as_os_str(), sflag, Mode::empty(), libc::makedev(major, minor))
                    .map_err(|e| io_err("create device node", show(&path), e))?;
                self.set_nofollow_attrs(&parent, &name, &attrs, &path, true)?;
            }
            other => return Err(refused(&path, format!("unsupported tar entry type {other:?}"))),
        }
        Ok(())
    }

    /// Copies an entry's content into `file` with the shared buffer.
    fn copy_contents(
        &mut self,
        src: &mut impl Read,
        file: &mut File,
        path: &Path,
    ) -> Result<(), UnpackError> {
        loop {
            let n = match src.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Tar(e)),
            };
            file.write_all(&self.buf[..n]).map_err(|e| io_err("write file", show(path), e))?;
            self.stats.bytes += n as u64;
        }
    }

    /// Owner, mode and times for an entry that cannot be opened (symlink, device node).
    fn set_nofollow_attrs(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        attrs: &Attrs,
        path: &Path,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        fchownat(
            parent,
            name,
            Some(Uid::from_raw(attrs.uid)),
            Some(Gid::from_raw(attrs.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err("chown", show(path), e))?;
        if chmod {
            // Only called for a node this unpack just created in its private directory (never a symlink).
            fchmodat(parent, name, Mode::from_bits_truncate(attrs.mode), FchmodatFlags::FollowSymlink)
                .map_err(|e| io_err("chmod", show(path), e))?;
        }
        utimensat(parent, name, &attrs.mtime, &attrs.mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| io_err("set times of", show(path), e))
    }

    /// Opens directory `dir` (relative to the root, resolved in-root), following symlinks inside the layer.
    fn open_dir(&self, dir: &Path, entry: &Path) -> Result<OwnedFd, UnpackError> {
        open_in_root(&self.root, dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| io_err("open parent directory of", show(entry), e))
    }

    /// The fd of `dir`, creating missing components `0755` (each created by name in its resolved parent).
    fn ensure_dir(&mut self, dir: &Path, entry: &Path) -> Result<OwnedFd, UnpackError> {
        if let Some((cached, fd)) = &self.parent_cache
            && cached == dir
        {
            return fd.try_clone().map_err(|e| io_err("dup parent of", show(entry), e));
        }
        let fd = match open_in_root(&self.root, dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => self.create_parents(dir, entry)?,
            Err(e) => return Err(io_err("open parent directory of", show(entry), e)),
        };
        let copy = fd.try_clone().map_err(|e| io_err("dup parent of", show(entry), e))?;
        self.parent_cache = Some((dir.to_path_buf(), copy));
        Ok(fd)
    }

    fn create_parents(&mut self, dir: &Path, entry: &Path) -> Result<OwnedFd, UnpackError> {
        let mut current = self.open_dir(Path::new(""), entry)?;
        let mut so_far = PathBuf::new();
        for component in dir.components() {
            let Component::Normal(name) = component else {
                return Err(refused(entry, "unexpected path component"));
            };
            so_far.push(name);
            match mkdirat(&current, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io_err("create parent directory", show(&so_far), e)),
            }
            // Re-resolve from the root so that an existing symlink component stays inside the layer.
            current = open_in_root(&self.root, &so_far, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
                .map_err(|e| io_err("open parent directory", show(&so_far), e))?;
        }
        Ok(current)
    }

    /// Removes whatever is at `parent/name` so a new entry can take its place. A directory is kept
    /// (returns true) when the new entry is a directory too.
    fn remove_existing(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        keep_dir: bool,
        entry: &Path,
    ) -> Result<bool, UnpackError> {
        let stat = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(io_err("stat", show(entry), e)),
        };
        let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if is_dir && keep_dir {
            return Ok(true);
        }
        self.parent_cache = None;
        if is_dir {
            remove_tree_at(parent, name)
                .map_err(|e| io_err("remove directory replaced by", show(entry), e))?;
        } else {
            unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("remove file replaced by", show(entry), e))?;
        }
        Ok(false)
    }

    /// Applies the recorded directory mtimes, after every entry has been written.
    fn finish_dir_times(&mut self) -> Result<(), UnpackError> {
        for (dir, mtime) in std::mem::take(&mut self.dir_times) {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
            // A directory later replaced by a symlink or file is simply skipped.
            let Ok(fd) = open_in_root(&self.root, &dir, flags, Mode::empty()) else { continue };
            futimens(&fd, &mtime, &mtime).map_err(|e| io_err("set times of", show(&dir), e))?;
        }
        Ok(())
    }
}

/// Removes the directory tree `parent/name` without following symlinks.
fn remove_tree_at(parent: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let fd = openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let dir_fd = fd.try_clone().map_err(|_| Errno::EMFILE)?;
    let mut dir = nix::dir::Dir::from_fd(dir_fd)?;
    let mut children = Vec::new();
    for child in dir.iter() {
        let child = child?;
        let child_name = child.file_name().to_bytes();
        if child_name != b"." && child_name != b".." {
            children.push(OsStr::from_bytes(child_name).to_os_string());
        }
    }
    for child in children {
        let st = fstatat(&fd, child.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            remove_tree_at(&fd, &child)?;
        } else {
            unlinkat(&fd, child.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
        }
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)
}

/// Merges the header fields with PAX overrides (`uid`, `gid`, `mtime`, `SCHILY.xattr.*`).
fn read_attrs<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<Attrs, UnpackError> {
    let header = entry.header();
    let bad = |what: &str| refused(path, format!("invalid {what} in tar header"));
    let old = header.as_old();
    let uid = numeric_field(&old.uid, header.uid()).ok_or_else(|| bad("uid"))?;
    let gid = numeric_field(&old.gid, header.gid()).ok_or_else(|| bad("gid"))?;
    let mtime = numeric_field(&old.mtime, header.mtime()).ok_or_else(|| bad("mtime"))?;
    let mut attrs = Attrs {
        uid: u32::try_from(uid).map_err(|_| bad("uid"))?,
        gid: u32::try_from(gid).map_err(|_| bad("gid"))?,
        mode: header.mode().map_err(|_| bad("mode"))? & 0o7777,
        mtime: TimeSpec::new(i64::try_from(mtime).map_err(|_| bad("mtime"))?, 0),
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions().map_err(UnpackError::Tar)? {
        for ext in pax {
            let ext = ext.map_err(UnpackError::Tar)?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            let text = std::str::from_utf8(value).unwrap_or("");
            match key {
                "uid" => attrs.uid = text.parse().map_err(|_| bad("PAX uid"))?,
                "gid" => attrs.gid = text.parse().map_err(|_| bad("PAX gid"))?,
                "mtime" => attrs.mtime = parse_pax_time(text).ok_or_else(|| bad("PAX mtime"))?,
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.")
                        && !is_overlay_xattr(name)
                    {
                        attrs.xattrs.push((name.to_string(), value.to_vec()));
                    }
                }
            }
        }
    }
    Ok(attrs)
}

/// Overlay metadata (`trusted.overlay.*`, or `user.overlay.*` for userxattr mounts) that a layer must not
/// forge: redirects, metacopy and opaque markers are only produced by the whiteout conversion.
pub fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

/// A numeric header field: empty (all NUL or space) counts as 0, as Go's archive/tar reads it.
fn numeric_field(raw: &[u8], parsed: io::Result<u64>) -> Option<u64> {
    if raw.iter().all(|b| *b == 0 || *b == b' ') { Some(0) } else { parsed.ok() }
}

/// Owner, then mode (after chown, which clears setuid bits), xattrs and times, all on the open fd.
fn set_fd_attrs(fd: &impl AsFd, attrs: &Attrs, path: &Path) -> Result<(), UnpackError> {
    fchown(fd, Some(Uid::from_raw(attrs.uid)), Some(Gid::from_raw(attrs.gid)))
        .map_err(|e| io_err("chown", show(path), e))?;
    fchmod(fd, Mode::from_bits_truncate(attrs.mode)).map_err(|e| io_err("chmod", show(path), e))?;
    for (name, value) in &attrs.xattrs {
        match fsetxattr(fd, name, value) {
            Ok(()) | Err(Errno::EOPNOTSUPP) => {}
            Err(e) => return Err(io_err("set xattr", format!("{} ({name})", show(path)), e)),
        }
    }
    futimens(fd, &attrs.mtime, &attrs.mtime).map_err(|e| io_err("set times of", show(path), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths_and_refuses_dotdot() {
        let ok = |raw: &str| clean_entry_path(raw.as_bytes()).unwrap();
        assert_eq!(ok("a/b/c"), PathBuf::from("a/b/c"));
        assert_eq!(ok("./a/./b/"), PathBuf::from("a/b"));
        assert_eq!(ok("/etc/passwd"), PathBuf::from("etc/passwd"));
        assert_eq!(ok("//x//y"), PathBuf::from("x/y"));
        assert_eq!(ok("./"), PathBuf::new());
        assert_eq!(ok("/"), PathBuf::new());
        for bad in ["../x", "a/../../x", "a/..", "/../etc", ""] {
            assert!(clean_entry_path(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(clean_entry_path(b"a\0b").is_err());
    }

    #[test]
    fn classifies_whiteouts() {
        let k = |s: &'static str| whiteout_kind(OsStr::new(s));
        assert_eq!(k("file"), WhiteoutKind::None);
        assert_eq!(k(".wh.file"), WhiteoutKind::Whiteout(OsStr::new("file")));
        assert_eq!(k(".wh..wh..opq"), WhiteoutKind::Opaque);
        assert_eq!(k(".wh..wh.plnk"), WhiteoutKind::Metadata);
        assert_eq!(k(".wh..hidden"), WhiteoutKind::Whiteout(OsStr::new(".hidden")));
        assert_eq!(k(".whfile"), WhiteoutKind::None);
    }

    #[test]
    fn pads_a_short_last_block_only() {
        let read = |data: &[u8]| {
            let mut out = Vec::new();
            PadToBlock { inner: data, offset: 0, padding: 0 }.read_to_end(&mut out).unwrap();
            out
        };
        assert_eq!(read(&[1u8; 512]).len(), 512);
        assert_eq!(read(&[1u8; 514]).len(), 1024);
        assert_eq!(read(&[1u8; 514])[514..], [0u8; 510]);
        assert!(read(&[]).is_empty());
    }

    #[test]
    fn overlay_xattrs_are_recognised() {
        assert!(is_overlay_xattr("trusted.overlay.redirect"));
        assert!(is_overlay_xattr("user.overlay.opaque"));
        assert!(!is_overlay_xattr("security.capability"));
        assert!(!is_overlay_xattr("user.mime_type"));
    }

    #[test]
    fn parses_pax_times() {
        assert_eq!(parse_pax_time("1700000000"), Some(TimeSpec::new(1_700_000_000, 0)));
        assert_eq!(parse_pax_time("1700000000.5"), Some(TimeSpec::new(1_700_000_000, 500_000_000)));
        assert_eq!(parse_pax_time("1.123456789999"), Some(TimeSpec::new(1, 123_456_789)));
        assert_eq!(parse_pax_time("-1.5"), Some(TimeSpec::new(-2, 500_000_000)));
        assert_eq!(parse_pax_time("x"), None);
        assert_eq!(parse_pax_time("1.x"), None);
    }
}
