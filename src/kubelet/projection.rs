//! ConfigMap and Secret volumes: which files a volume holds (pure), and writing them atomically
//! into a fresh directory the kubelet owns.
//!
//! Modes follow Kubernetes (`items[].mode`, then `defaultMode`), except that Secret volumes default
//! to 0600 rather than 0644: a secret should not be world-readable unless the manifest says so.

use k8s_openapi::api::core::v1::KeyToPath;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Default file mode of ConfigMap volumes.
pub const CONFIG_MAP_DEFAULT_MODE: u32 = 0o644;
/// Default file mode of Secret volumes.
pub const SECRET_DEFAULT_MODE: u32 = 0o600;

/// One file of a projected volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedFile {
    /// Relative, normal components only.
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Why a volume's files could not be projected; `source` names it, e.g. `configmap "web-config"`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProjectionError {
    #[error("{volume}: items[{index}]: key {key:?} not found")]
    KeyMissing { volume: String, index: usize, key: String },
    #[error("{volume}: items[{index}].path {path:?}: must be a relative path without '..'")]
    BadPath { volume: String, index: usize, path: String },
    #[error("{volume}: mode {mode:#o} out of range 0..=0777")]
    BadMode { volume: String, mode: i32 },
}

/// The files a volume holds: every entry, or only `items` when given.
pub fn project(
    source: &str,
    entries: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
) -> Result<Vec<ProjectedFile>, ProjectionError> {
    let Some(items) = items.filter(|items| !items.is_empty()) else {
        return Ok(entries
            .iter()
            .map(|(key, data)| ProjectedFile { path: key.into(), data: data.clone(), mode: default_mode })
            .collect());
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let data = entries.get(&item.key).ok_or_else(|| ProjectionError::KeyMissing {
                volume: source.into(),
                index,
                key: item.key.clone(),
            })?;
            if !is_safe_relative(&item.path) {
                return Err(ProjectionError::BadPath {
                    volume: source.into(),
                    index,
                    path: item.path.clone(),
                });
            }
            let mode = match item.mode {
                Some(mode) => checked_mode(source, mode)?,
                None => default_mode,
            };
            Ok(ProjectedFile { path: item.path.clone().into(), data: data.clone(), mode })
        })
        .collect()
}

/// Validates a manifest's `defaultMode`/`mode` value.
pub fn checked_mode(source: &str, mode: i32) -> Result<u32, ProjectionError> {
    u32::try_from(mode)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or(ProjectionError::BadMode { volume: source.into(), mode })
}

/// A path that stays inside the directory it is joined to.
pub fn is_safe_relative(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|c| matches!(c, Component::Normal(_)))
}

/// Writes `files` into `dir` so that readers never see a half-written volume: everything goes into
/// a sibling temp directory first, which then replaces `dir`.
pub fn write_atomically(dir: &Path, files: &[ProjectedFile]) -> io::Result<()> {
    let parent = dir.parent().ok_or_else(|| io::Error::other("volume dir has no parent"))?;
    let name = dir.file_name().ok_or_else(|| io::Error::other("volume dir has no name"))?;
    let staging = parent.join(format!(".{}.tmp", name.to_string_lossy()));
    let _ = fs::remove_dir_all(&staging);
    fs::DirBuilder::new().mode(0o755).create(&staging)?;
    for file in files {
        let target = staging.join(&file.path);
        if let Some(sub) = target.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o755).create(sub)?;
        }
        let mut out = fs::OpenOptions::new().write(true).create_new(true).mode(file.mode).open(&target)?;
        io::Write::write_all(&mut out, &file.data)?;
        // The umask must not narrow the requested mode.
        fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(file.mode))?;
    }
    if dir.exists() {
        let old = parent.join(format!(".{}.old", name.to_string_lossy()));
        let _ = fs::remove_dir_all(&old);
        fs::rename(dir, &old)?;
        fs::rename(&staging, dir)?;
        fs::remove_dir_all(&old)
    } else {
        fs::rename(&staging, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries() -> BTreeMap<String, Vec<u8>> {
        [("id".to_string(), b"asa".to_vec()), ("key".into(), b"aBcD123".to_vec())].into()
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath { key: key.into(), path: path.into(), mode }
    }

    #[test]
    fn all_keys_or_selected_items() {
        let all = project("secret \"apikey\"", &entries(), None, SECRET_DEFAULT_MODE).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|f| f.mode == 0o600));
        let some =
            project("s", &entries(), Some(&[item("key", "conf/api.key", Some(0o400))]), SECRET_DEFAULT_MODE)
                .unwrap();
        assert_eq!(
            some,
            [ProjectedFile { path: "conf/api.key".into(), data: b"aBcD123".to_vec(), mode: 0o400 }]
        );
    }

    #[test]
    fn refuses_escapes_missing_keys_and_bad_modes() {
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let err =
                project("configmap \"c\"", &entries(), Some(&[item("id", bad, None)]), 0o644).unwrap_err();
            assert!(matches!(err, ProjectionError::BadPath { .. }), "{bad}: {err}");
        }
        let err =
            project("configmap \"c\"", &entries(), Some(&[item("nope", "x", None)]), 0o644).unwrap_err();
        assert_eq!(err.to_string(), "configmap \"c\": items[0]: key \"nope\" not found");
        assert!(project("c", &entries(), Some(&[item("id", "x", Some(0o1777))]), 0o644).is_err());
    }

    #[test]
    fn writes_and_replaces_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let files = project("s", &entries(), Some(&[item("id", "a/id", None)]), 0o600).unwrap();
        write_atomically(&dir, &files).unwrap();
        assert_eq!(fs::read(dir.join("a/id")).unwrap(), b"asa");
        assert_eq!(fs::metadata(dir.join("a/id")).unwrap().permissions().mode() & 0o777, 0o600);
        let files = project("s", &entries(), None, 0o644).unwrap();
        write_atomically(&dir, &files).unwrap();
        assert!(!dir.join("a").exists());
        assert_eq!(fs::read(dir.join("key")).unwrap(), b"aBcD123");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1, "no staging dirs left");
    }
}
