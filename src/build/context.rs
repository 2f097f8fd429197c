//! COPY/ADD sources and destinations.
//!
//! Sources: a path is cleaned, and one that leaves its root (`../x`) is refused. The named source
//! is resolved with symlinks followed but confined to its root (`openat2(RESOLVE_IN_ROOT)`), as
//! BuildKit scopes them; inside a copied tree symlinks stay symlinks and are never followed.
//! The walk below the named source is fd-relative: every directory and file is opened from the
//! source's handle with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and `O_NOFOLLOW`, and
//! entries are inspected by name inside an open directory, so a context changed during the build
//! (a directory swapped for a symlink) cannot lead a read outside it.
//! `.dockerignore` filters the walk (an excluded directory is still walked when an exception
//! might re-include something inside it). The walk's entries also give the content checksum
//! that keys the build cache (mode, owner-free, type, size, link target, xattrs, content; no
//! mtime).
//!
//! Copies keep hardlinks (files of one source sharing an inode are linked in the destination,
//! so the layer holds a link entry) and the extended attributes of files and directories (file
//! capabilities `security.capability` included; overlay and SELinux attributes dropped, as for
//! RUN layers), set after owner and mode since a chown clears file capabilities.
//!
//! Destinations: every directory is opened inside the image's root filesystem with
//! `openat2(RESOLVE_IN_ROOT)`, and entries are created with `*at` calls that never follow a
//! symlink, so an image cannot redirect a COPY onto the host.

use crate::build::chmod::Chmod;
use crate::build::ignore::{Matcher, clean};
use crate::image::digest::{Digest, Hasher};
use crate::image::unpack::is_overlay_xattr;
use crate::runtime::fsutil::{mkdir_all_in_root, open_in_root};
use crate::sys::openat::{fsetxattr, lgetxattr, llistxattr};
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, fchmod, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why a COPY/ADD failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}: forbidden path outside the build context")]
    Outside(String),
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot copy {src} onto {dest}: {why}")]
    Conflict { src: String, dest: String, why: &'static str },
}

fn io_err(what: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> CopyError {
    let path = path.as_ref().display().to_string();
    move |source| CopyError::Io { what, path, source }
}

fn nix_err(what: &'static str, path: impl AsRef<Path>) -> impl FnOnce(nix::Error) -> CopyError {
    let f = io_err(what, path);
    move |e| f(io::Error::from(e))
}

/// One entry of a walked source, relative to the named source (`""` is the source itself).
#[derive(Debug)]
pub struct Entry {
    pub rel: PathBuf,
    pub meta: Metadata,
    /// Extended attributes to copy (files and directories; see [`keep_xattr`]).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Whether an extended attribute travels with a copy: not overlay's own, not SELinux labels.
pub fn keep_xattr(name: &str) -> bool {
    !is_overlay_xattr(name) && name != "security.selinux"
}

/// The kept extended attributes of `path` (the final component not followed); none for
/// symlinks and special files, and none where the filesystem has no xattrs.
fn read_xattrs(path: &Path, meta: &Metadata) -> Result<Vec<(String, Vec<u8>)>, CopyError> {
    if !(meta.is_file() || meta.is_dir()) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in llistxattr(path).map_err(nix_err("list xattrs of", path))? {
        if !keep_xattr(&name) {
            continue;
        }
        if let Some(value) = lgetxattr(path, &name).map_err(nix_err("read xattrs of", path))? {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}

/// Opens `rel` below the directory `base` without following any symlink and without leaving it.
fn open_beneath(base: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let how = OpenHow::new().flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    loop {
        match openat2(base, rel, how) {
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// A named source resolved inside its root: an open handle and the entries to copy.
#[derive(Debug)]
pub struct Source {
    /// The source as written (for messages and file names).
    pub name: String,
    /// Its path relative to the root after cleaning.
    pub rel: String,
    /// O_PATH handle of the resolved source.
    fd: OwnedFd,
    pub entries: Vec<Entry>,
}

impl Source {
    /// Host path through which the resolved source is read.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Opens entry `rel` (`""`: the source itself, reopened through its handle) with `flags`.
    fn open(&self, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return nix::fcntl::open(&self.path(), flags | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(io::Error::from);
        }
        open_beneath(self.fd.as_fd(), rel, flags)
    }

    /// Opens regular file `rel` for reading (a file swapped for something else is refused).
    fn open_file(&self, rel: &Path) -> Result<File, CopyError> {
        let fd = self.open(rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(io_err("read", rel))?;
        let file = File::from(fd);
        if !file.metadata().map_err(io_err("inspect", rel))?.is_file() {
            return Err(CopyError::Io {
                what: "read",
                path: rel.display().to_string(),
                source: io::Error::other("changed during the build: no longer a regular file"),
            });
        }
        Ok(file)
    }

    /// The target of symlink `rel`, read inside its open parent directory.
    fn read_link(&self, rel: &Path) -> Result<PathBuf, CopyError> {
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(n)) => (p, n),
            _ => return Err(CopyError::NotFound(self.name.clone())),
        };
        let dir = self.open(parent, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(io_err("open", parent))?;
        nix::fcntl::readlinkat(dir.as_fd(), name).map(PathBuf::from).map_err(nix_err("read link", rel))
    }

    /// Whether the named source is a directory (its contents are copied).
    pub fn is_dir(&self) -> bool {
        self.entries.first().is_some_and(|e| e.meta.is_dir())
    }

    /// The base name used when copying into a directory.
    pub fn base_name(&self) -> String {
        Path::new(&self.rel).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// Whether a source uses wildcards (Go `filepath.Match` syntax).
pub fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Cleans a source path; refuses one that leaves the root.
pub fn clean_source(src: &str) -> Result<String, CopyError> {
    // `/x` is the context root's `x` (and `/..` is `/`); a relative `../x` leaves it.
    let cleaned = match src.strip_prefix('/') {
        Some(_) => clean(src).trim_start_matches('/').to_string(),
        None => clean(src),
    };
    let cleaned = if cleaned.is_empty() { ".".to_string() } else { cleaned };
    if cleaned == ".." || cleaned.starts_with("../") {
        return Err(CopyError::Outside(src.to_string()));
    }
    Ok(cleaned)
}

/// Resolves the sources named `src` (a path or a wildcard pattern) inside `root`, applying
/// `ignore` (context sources only). A wildcard matching nothing gives an empty list; a missing
/// literal source is an error.
pub fn resolve(root: &Path, src: &str, ignore: Option<&Matcher>) -> Result<Vec<Source>, CopyError> {
    let cleaned = clean_source(src)?;
    let root_fd = File::open(root).map_err(io_err("open", root))?;
    let mut names = Vec::new();
    if has_wildcards(&cleaned) {
        let mut candidates = vec![String::new()];
        for comp in cleaned.split('/') {
            let mut next = Vec::new();
            for dir in &candidates {
                let host = if dir.is_empty() { root.to_path_buf() } else { root.join(dir) };
                let Ok(read) = std::fs::read_dir(&host) else { continue };
                let mut found: Vec<String> = read
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                found.sort();
                for name in found {
                    if glob_match(comp, &name) {
                        next.push(if dir.is_empty() { name } else { format!("{dir}/{name}") });
                    }
                }
            }
            candidates = next;
        }
        names.extend(candidates.into_iter().filter(|c| !ignore.is_some_and(|m| m.excluded(c))));
    } else {
        if cleaned != "." && ignore.is_some_and(|m| m.excluded(&cleaned)) {
            return Err(CopyError::NotFound(format!("{src} (excluded by .dockerignore)")));
        }
        names.push(cleaned);
    }
    let mut out = Vec::new();
    for rel in names {
        let fd = match open_in_root(root_fd.as_fd(), Path::new(&rel), OFlag::O_PATH | OFlag::O_CLOEXEC) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(CopyError::NotFound(src.to_string()));
            }
            Err(e) => return Err(io_err("open source", &rel)(e)),
        };
        let prefix = if rel == "." { String::new() } else { rel.clone() };
        let entries = walk(root_fd.as_fd(), &rel, fd.as_fd(), ignore, &prefix)?;
        out.push(Source { name: src.to_string(), rel, fd, entries });
    }
    Ok(out)
}

/// The entries of the source open at `fd` (named `rel` in `root`; itself first), sorted,
/// filtered by `ignore` (paths `prefix/rel`).
fn walk(
    root: BorrowedFd<'_>,
    rel: &str,
    fd: BorrowedFd<'_>,
    ignore: Option<&Matcher>,
    prefix: &str,
) -> Result<Vec<Entry>, CopyError> {
    // Through the magic link the source itself is followed once (it was resolved in the root).
    let path = crate::runtime::fsutil::fd_path(fd);
    let meta = std::fs::metadata(&path).map_err(io_err("inspect", rel))?;
    let xattrs =
        if meta.is_dir() { read_xattrs(&path.join("."), &meta)? } else { top_file_xattrs(root, rel, &meta)? };
    let is_dir = meta.is_dir();
    let mut out = vec![Entry { rel: PathBuf::new(), meta, xattrs }];
    if is_dir {
        walk_dir(fd, Path::new(""), ignore, prefix, &mut out)?;
    }
    Ok(out)
}

/// The xattrs of a named file source, read by name in its parent directory when that name is
/// the file itself (a source named through a symlink has none copied).
fn top_file_xattrs(
    root: BorrowedFd<'_>,
    rel: &str,
    meta: &Metadata,
) -> Result<Vec<(String, Vec<u8>)>, CopyError> {
    let rel = Path::new(rel);
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else { return Ok(Vec::new()) };
    let Ok(dir) = open_in_root(root, parent, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC) else {
        return Ok(Vec::new());
    };
    let path = crate::runtime::fsutil::fd_path(dir.as_fd()).join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.dev() == meta.dev() && m.ino() == meta.ino() => read_xattrs(&path, meta),
        _ => Ok(Vec::new()),
    }
}

fn walk_dir(
    base: BorrowedFd<'_>,
    rel: &Path,
    ignore: Option<&Matcher>,
    prefix: &str,
    out: &mut Vec<Entry>,
) -> Result<bool, CopyError> {
    let here = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let dir = open_beneath(base, here, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .map_err(io_err("open directory", rel))?;
    let dir_path = crate::runtime::fsutil::fd_path(dir.as_fd());
    let mut names: Vec<OsString> = std::fs::read_dir(&dir_path)
        .map_err(io_err("read directory", rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err("read directory", rel))?;
    names.sort();
    let mut any = false;
    for name in names {
        let child = rel.join(&name);
        let ctx_path = if prefix.is_empty() {
            child.display().to_string()
        } else {
            format!("{prefix}/{}", child.display())
        };
        // By name inside the open directory, the name itself not followed.
        let host = dir_path.join(&name);
        let meta = std::fs::symlink_metadata(&host).map_err(io_err("inspect", &child))?;
        if meta.file_type().is_socket() {
            continue;
        }
        let excluded = ignore.is_some_and(|m| m.excluded(&ctx_path));
        if excluded && !(meta.is_dir() && ignore.is_some_and(Matcher::has_exclusions)) {
            continue;
        }
        let is_dir = meta.is_dir();
        let xattrs = read_xattrs(&host, &meta)?;
        let at = out.len();
        out.push(Entry { rel: child.clone(), meta, xattrs });
        if is_dir {
            let inner = walk_dir(base, &child, ignore, prefix, out)?;
            if excluded && !inner {
                // Nothing inside was re-included: the directory stays out.
                out.truncate(at);
                continue;
            }
        }
        any = true;
    }
    Ok(any)
}

/// Go `filepath.Match` on one path component.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(&c) = n.first() else { return false };
                let mut i = 1;
                let negate = matches!(p.get(1), Some('^') | Some('!'));
                if negate {
                    i += 1;
                }
                let mut hit = false;
                let mut first = true;
                while i < p.len() && (p[i] != ']' || first) {
                    first = false;
                    let mut lo = p[i];
                    if lo == '\\' {
                        i += 1;
                        lo = *p.get(i).unwrap_or(&'\\');
                    }
                    let mut hi = lo;
                    if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                        hi = p[i + 2];
                        i += 2;
                    }
                    if lo <= c && c <= hi {
                        hit = true;
                    }
                    i += 1;
                }
                if i >= p.len() {
                    return false;
                }
                hit != negate && go(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// The content checksum of sources, BuildKit-style: per entry its path, type, mode, size, link
/// target and content; no owner (COPY resets it) and no times.
pub fn checksum(sources: &[Source]) -> Result<Digest, CopyError> {
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    for s in sources {
        h.update(format!("source {}\n", s.rel).as_bytes());
        for e in &s.entries {
            let ft = e.meta.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                'o'
            };
            h.update(
                format!(
                    "{}\0{kind}\0{:o}\0{}\0{}\0",
                    e.rel.display(),
                    e.meta.mode() & 0o7777,
                    e.meta.len(),
                    e.meta.rdev()
                )
                .as_bytes(),
            );
            for (name, value) in &e.xattrs {
                h.update(format!("xattr {name}={}\0", value.len()).as_bytes());
                h.update(value);
            }
            if ft.is_symlink() {
                let target = s.read_link(&e.rel)?;
                h.update(target.as_os_str().as_encoded_bytes());
            } else if ft.is_file() {
                let mut f = s.open_file(&e.rel)?;
                loop {
                    let n = f.read(&mut buf).map_err(io_err("read", &e.rel))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            h.update(b"\n");
        }
    }
    Ok(h.finish())
}

/// Owner and mode overrides of a COPY.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown` (else 0:0).
    pub owner: Option<(u32, u32)>,
    /// `--chmod`, applied to every file and directory copied.
    pub mode: Option<Chmod>,
}

impl CopyOptions {
    /// The mode an entry of mode `mode` gets.
    fn mode_of(&self, mode: u32, is_dir: bool) -> u32 {
        self.mode.as_ref().map_or(mode & 0o7777, |m| m.apply(mode, is_dir))
    }
}

/// Copies one source into the root filesystem open at `root`: a directory's contents into
/// `dest`, a file to `dest` itself. `dest` is absolute inside the root.
pub fn copy_source(
    root: BorrowedFd<'_>,
    src: &Source,
    dest: &Path,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let (uid, gid) = opts.owner.unwrap_or((0, 0));
    let mut dirs: HashMap<PathBuf, OwnedFd> = HashMap::new();
    let mut dir_times = Vec::new();
    // Files already copied, by source inode: later names of one are hardlinked to the first.
    let mut linked: HashMap<(u64, u64), (PathBuf, OsString)> = HashMap::new();
    for e in &src.entries {
        let target = if e.rel.as_os_str().is_empty() { dest.to_path_buf() } else { dest.join(&e.rel) };
        let ft = e.meta.file_type();
        let mode = opts.mode_of(e.meta.mode(), ft.is_dir());
        if ft.is_dir() {
            // The top directory itself: created when missing, its metadata applied only then.
            let existed = open_in_root(root, &target, OFlag::O_PATH | OFlag::O_DIRECTORY).is_ok();
            let fd = mkdir_all_in_root(root, &target).map_err(io_err("create directory", &target))?;
            if !existed || !e.rel.as_os_str().is_empty() {
                let p = magic(&fd);
                std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(io_err("chown", &target))?;
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .map_err(io_err("chmod", &target))?;
                if !e.xattrs.is_empty() {
                    let dir = nix::fcntl::open(
                        &p,
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(nix_err("open", &target))?;
                    set_xattrs(dir.as_fd(), &e.xattrs, &target)?;
                }
                dir_times.push((target.clone(), e.meta.mtime(), e.meta.mtime_nsec()));
            }
            dirs.insert(target, fd);
            continue;
        }
        let parent_path = target.parent().unwrap_or(Path::new("/")).to_path_buf();
        let name = target.file_name().ok_or_else(|| CopyError::Conflict {
            src: src.name.clone(),
            dest: dest.display().to_string(),
            why: "the destination has no file name",
        })?;
        if !dirs.contains_key(&parent_path) {
            let fd =
                mkdir_all_in_root(root, &parent_path).map_err(io_err("create directory", &parent_path))?;
            dirs.insert(parent_path.clone(), fd);
        }
        let parent = dirs[&parent_path].as_fd();
        replace_non_dir(parent, name, &target)?;
        let inode = (e.meta.dev(), e.meta.ino());
        if ft.is_file() && e.meta.nlink() > 1 {
            if let Some((first_dir, first_name)) = linked.get(&inode) {
                linkat(dirs[first_dir].as_fd(), first_name.as_os_str(), parent, name, AtFlags::empty())
                    .map_err(nix_err("hardlink", &target))?;
                continue;
            }
            linked.insert(inode, (parent_path.clone(), name.to_os_string()));
        }
        if ft.is_symlink() {
            let link = src.read_link(&e.rel)?;
            symlinkat(link.as_path(), parent, name).map_err(nix_err("create symlink", &target))?;
            fchownat(
                parent,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(nix_err("chown", &target))?;
        } else if ft.is_file() {
            let mut input = src.open_file(&e.rel)?;
            let fd = nix::fcntl::openat(
                parent,
                name,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(nix_err("create", &target))?;
            let mut out = File::from(fd);
            io::copy(&mut input, &mut out).map_err(io_err("copy into", &target))?;
            nix::unistd::fchown(&out, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(nix_err("chown", &target))?;
            fchmod(&out, Mode::from_bits_truncate(mode)).map_err(nix_err("chmod", &target))?;
            // Last: writing and chown clear file capabilities.
            set_xattrs(out.as_fd(), &e.xattrs, &target)?;
        } else {
            let kind = if ft.is_fifo() {
                SFlag::S_IFIFO
            } else if ft.is_char_device() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            mknodat(parent, name, kind, Mode::from_bits_truncate(mode), e.meta.rdev())
                .map_err(nix_err("create node", &target))?;
            fchownat(
                parent,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(nix_err("chown", &target))?;
        }
        let t = TimeSpec::new(e.meta.mtime(), e.meta.mtime_nsec());
        utimensat(parent, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(nix_err("set times", &target))?;
    }
    // Directory times last: creating their children changed them.
    for (path, secs, nsecs) in dir_times.into_iter().rev() {
        if let Some(fd) = dirs.get(&path) {
            let t = TimeSpec::new(secs, nsecs);
            utimensat(nix::fcntl::AT_FDCWD, &magic(fd), &t, &t, UtimensatFlags::FollowSymlink)
                .map_err(nix_err("set times", &path))?;
        }
    }
    Ok(())
}

/// Removes a non-directory entry `name` in `parent` so it can be replaced; a directory there is
/// a conflict.
fn replace_non_dir(parent: BorrowedFd<'_>, name: &OsStr, target: &Path) -> Result<(), CopyError> {
    match nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR => {
            Err(CopyError::Conflict {
                src: name.to_string_lossy().into_owned(),
                dest: target.display().to_string(),
                why: "a directory is there",
            })
        }
        Ok(_) => unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(nix_err("replace", target)),
        Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(nix_err("inspect", target)(e)),
    }
}

/// Sets extended attributes on the open file `fd`. A `user.` attribute the store's filesystem does
/// not take (tmpfs before Linux 6.6) is left out rather than failing the copy; others must land.
fn set_xattrs(fd: BorrowedFd<'_>, xattrs: &[(String, Vec<u8>)], target: &Path) -> Result<(), CopyError> {
    for (name, value) in xattrs {
        let result = fsetxattr(fd, name, value);
        if let Err(e) = &result
            && *e == nix::errno::Errno::EOPNOTSUPP
            && name.starts_with("user.")
        {
            tracing::debug!(path = %target.display(), %name, "xattr not supported here: left out");
            continue;
        }
        result.map_err(|e| CopyError::Io {
            what: "set xattr",
            path: format!("{} ({name})", target.display()),
            source: e.into(),
        })?;
    }
    Ok(())
}

fn magic(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Writes `content` as file `dest` (absolute in the root), e.g. a heredoc source.
pub fn write_file(
    root: BorrowedFd<'_>,
    dest: &Path,
    content: &[u8],
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let parent_path = dest.parent().unwrap_or(Path::new("/"));
    let parent = mkdir_all_in_root(root, parent_path).map_err(io_err("create directory", parent_path))?;
    let name = dest.file_name().ok_or_else(|| CopyError::NotFound(dest.display().to_string()))?;
    replace_non_dir(parent.as_fd(), name, dest)?;
    let fd = nix::fcntl::openat(
        parent.as_fd(),
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(nix_err("create", dest))?;
    let mut out = File::from(fd);
    io::Write::write_all(&mut out, content).map_err(io_err("write", dest))?;
    let (uid, gid) = opts.owner.unwrap_or((0, 0));
    nix::unistd::fchown(&out, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(nix_err("chown", dest))?;
    fchmod(&out, Mode::from_bits_truncate(opts.mode_of(0o644, false))).map_err(nix_err("chmod", dest))?;
    Ok(())
}

/// Whether `dest` (absolute in the root) is an existing directory (symlinks resolved inside).
pub fn is_dir_in_root(root: BorrowedFd<'_>, dest: &Path) -> bool {
    open_in_root(root, dest, OFlag::O_PATH | OFlag::O_DIRECTORY).is_ok()
}

/// Resolves `--chown` (`user[:group]`, names or ids) against the root's `/etc/passwd` and
/// `/etc/group`; a user alone gives the same number as gid.
pub fn resolve_owner(root: BorrowedFd<'_>, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str| -> Result<u32, String> {
        if let Ok(n) = name.parse::<u32>() {
            return Ok(n);
        }
        let text = crate::runtime::fsutil::read_in_root(root, Path::new(file))
            .map_err(|e| format!("reading {file}: {e}"))?
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[0] == name).then(|| f[2].parse::<u32>().ok()).flatten()
            })
            .next()
            .ok_or_else(|| format!("unable to find {name:?} in {file} of the image"))
    };
    let uid = lookup("/etc/passwd", user)?;
    let gid = match group {
        Some(g) => lookup("/etc/group", g)?,
        None => uid,
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_never_leave_the_root() {
        assert!(matches!(clean_source("../x"), Err(CopyError::Outside(_))));
        assert!(matches!(clean_source("a/../../x"), Err(CopyError::Outside(_))));
        assert_eq!(clean_source("/a/./b/").unwrap(), "a/b");
        assert_eq!(clean_source("/../a").unwrap(), "a", "above / stays at /");
        assert_eq!(clean_source(".").unwrap(), ".");
    }

    #[test]
    fn go_globs() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txd"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("[[]x", "[x"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("\\*", "a"));
    }

    #[test]
    fn walk_resolve_ignore_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("app/docs")).unwrap();
        std::fs::write(ctx.join("app/main.txt"), b"main").unwrap();
        std::fs::write(ctx.join("app/docs/a.md"), b"a").unwrap();
        std::fs::write(ctx.join("app/docs/keep.md"), b"k").unwrap();
        std::fs::write(ctx.join("b.txt"), b"b").unwrap();
        std::os::unix::fs::symlink("/etc", ctx.join("etc-link")).unwrap();
        let ignore = Matcher::parse("app/docs\n!app/docs/keep.md\n").unwrap();
        let s = resolve(&ctx, "app", Some(&ignore)).unwrap();
        let rels: Vec<String> = s[0].entries.iter().map(|e| e.rel.display().to_string()).collect();
        assert_eq!(rels, ["", "docs", "docs/keep.md", "main.txt"]);
        let all = resolve(&ctx, ".", None).unwrap();
        let link = all[0].entries.iter().find(|e| e.rel == Path::new("etc-link")).unwrap();
        assert!(link.meta.file_type().is_symlink(), "symlinks inside a tree are not followed");
        let wild = resolve(&ctx, "*.txt", None).unwrap();
        assert_eq!(wild.len(), 1);
        assert!(resolve(&ctx, "*.none", None).unwrap().is_empty());
        assert!(matches!(resolve(&ctx, "missing", None), Err(CopyError::NotFound(_))));
        assert!(matches!(resolve(&ctx, "../ctx", None), Err(CopyError::Outside(_))));
        // A named symlink to /etc resolves inside the context: there is no etc there.
        assert!(matches!(resolve(&ctx, "etc-link/passwd", None), Err(CopyError::NotFound(_))));
        let c1 = checksum(&s).unwrap();
        std::fs::write(ctx.join("app/docs/a.md"), b"changed but ignored").unwrap();
        assert_eq!(checksum(&resolve(&ctx, "app", Some(&ignore)).unwrap()).unwrap(), c1);
        std::fs::write(ctx.join("app/main.txt"), b"mainx").unwrap();
        assert_ne!(checksum(&resolve(&ctx, "app", Some(&ignore)).unwrap()).unwrap(), c1);
    }

    #[test]
    fn copies_keep_hardlinks_and_xattrs() {
        use crate::sys::openat::fgetxattr;
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("d/sub")).unwrap();
        std::fs::write(ctx.join("d/a"), b"same inode").unwrap();
        std::fs::hard_link(ctx.join("d/a"), ctx.join("d/sub/b")).unwrap();
        std::fs::write(ctx.join("d/c"), b"other").unwrap();
        let f = File::open(ctx.join("d/a")).unwrap();
        fsetxattr(f.as_fd(), "user.rkube-test", b"on-a").unwrap();
        let sub = File::open(ctx.join("d/sub")).unwrap();
        fsetxattr(sub.as_fd(), "user.rkube-dir", b"on-sub").unwrap();
        let s = resolve(&ctx, "d", None).unwrap();
        let a = s[0].entries.iter().find(|e| e.rel == Path::new("a")).unwrap();
        assert_eq!(a.xattrs, [("user.rkube-test".to_string(), b"on-a".to_vec())]);
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let root_fd = File::open(&root).unwrap();
        copy_source(
            root_fd.as_fd(),
            &s[0],
            Path::new("/dst"),
            &CopyOptions { owner: Some((5, 5)), mode: None },
        )
        .unwrap();
        let (ma, mb) = (
            std::fs::metadata(root.join("dst/a")).unwrap(),
            std::fs::metadata(root.join("dst/sub/b")).unwrap(),
        );
        assert_eq!((ma.ino(), ma.nlink()), (mb.ino(), 2), "one inode, linked");
        assert_ne!(std::fs::metadata(root.join("dst/c")).unwrap().ino(), ma.ino());
        assert_eq!(std::fs::read(root.join("dst/sub/b")).unwrap(), b"same inode");
        let copied = File::open(root.join("dst/a")).unwrap();
        assert_eq!(fgetxattr(copied.as_fd(), "user.rkube-test").unwrap().as_deref(), Some(&b"on-a"[..]));
        let copied_dir = File::open(root.join("dst/sub")).unwrap();
        assert_eq!(fgetxattr(copied_dir.as_fd(), "user.rkube-dir").unwrap().as_deref(), Some(&b"on-sub"[..]));
        // A named file source keeps its xattrs too; and they are part of the checksum.
        let one = resolve(&ctx, "d/a", None).unwrap();
        assert_eq!(one[0].entries[0].xattrs.len(), 1);
        let before = checksum(&one).unwrap();
        fsetxattr(f.as_fd(), "user.rkube-test", b"changed").unwrap();
        assert_ne!(checksum(&resolve(&ctx, "d/a", None).unwrap()).unwrap(), before);
    }

    #[test]
    fn a_context_swapped_during_the_build_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(ctx.join("d/inner")).unwrap();
        std::fs::write(ctx.join("d/inner/f"), b"inside").unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f"), b"secret").unwrap();
        let s = resolve(&ctx, "d", None).unwrap();
        // After the walk, the directory becomes a symlink to a host directory.
        std::fs::remove_dir_all(ctx.join("d/inner")).unwrap();
        std::os::unix::fs::symlink(&outside, ctx.join("d/inner")).unwrap();
        assert!(checksum(&s).is_err(), "the checksum does not read through the link");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let root_fd = File::open(&root).unwrap();
        assert!(copy_source(root_fd.as_fd(), &s[0], Path::new("/dst"), &CopyOptions::default()).is_err());
        assert!(!root.join("dst/inner/f").exists(), "nothing read outside the context");
        // A fresh walk sees the link and copies it as a link.
        let again = resolve(&ctx, "d", None).unwrap();
        copy_source(root_fd.as_fd(), &again[0], Path::new("/dst2"), &CopyOptions::default()).unwrap();
        assert_eq!(std::fs::read_link(root.join("dst2/inner")).unwrap(), outside);
    }

    #[test]
    fn copies_stay_in_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("d")).unwrap();
        std::fs::write(ctx.join("d/f"), b"f").unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // The image points /dst at a host directory.
        std::os::unix::fs::symlink(&outside, root.join("dst")).unwrap();
        let root_fd = File::open(&root).unwrap();
        let s = resolve(&ctx, "d", None).unwrap();
        copy_source(
            root_fd.as_fd(),
            &s[0],
            Path::new("/dst/sub"),
            &CopyOptions { owner: Some((7, 8)), mode: None },
        )
        .unwrap();
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written outside");
        let copied = root.join(outside.strip_prefix("/").unwrap()).join("sub/f");
        assert_eq!(std::fs::read(&copied).unwrap(), b"f");
        assert_eq!(std::fs::metadata(&copied).unwrap().uid(), 7);
        assert!(is_dir_in_root(root_fd.as_fd(), Path::new("/dst/sub")));
        write_file(root_fd.as_fd(), Path::new("/x/h"), b"hi", &CopyOptions::default()).unwrap();
        assert_eq!(std::fs::read(root.join("x/h")).unwrap(), b"hi");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/bin/sh\n")
            .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nwww:x:55:\n").unwrap();
        assert_eq!(resolve_owner(root_fd.as_fd(), "web").unwrap(), (33, 33));
        assert_eq!(resolve_owner(root_fd.as_fd(), "web:www").unwrap(), (33, 55));
        assert_eq!(resolve_owner(root_fd.as_fd(), "1:2").unwrap(), (1, 2));
        assert!(resolve_owner(root_fd.as_fd(), "nobody").is_err());
    }
}
