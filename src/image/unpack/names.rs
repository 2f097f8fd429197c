//! Pure name logic of layer entries: path cleaning, whiteout classification, overlay xattrs, PAX times.

use nix::sys::time::TimeSpec;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Prefix of a whiteout file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Xattr overlayfs reads to hide a lower directory's content.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
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

/// Overlay metadata (`trusted.overlay.*`, or `user.overlay.*` for userxattr mounts) that a layer must not
/// forge: redirects, metacopy and opaque markers are only produced by the whiteout conversion.
pub fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
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
