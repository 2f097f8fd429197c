//! Tags: image names → manifest (or index) digests, kept in `tags.json` and replaced atomically.

use super::{Store, StoreError, TmpGuard, io_err};
use crate::image::digest::Digest;
use nix::fcntl::FlockArg;
use std::collections::BTreeMap;
use std::fs;
use std::io;

impl Store {
    /// Points `name` at a manifest (or index) digest.
    pub fn set_tag(&self, name: &str, manifest: &Digest) -> Result<(), StoreError> {
        check_name(name)?;
        let _gc = self.lease()?; // never interleaved with a prune's reachability walk
        let _lock = self.lock("tags", FlockArg::LockExclusive)?;
        let mut tags = self.tags()?;
        tags.insert(name.to_string(), manifest.clone());
        self.write_tags(&tags)
    }

    /// Removes a tag; returns the digest it pointed at, if it existed. Content is freed by [`Store::prune`].
    pub fn remove_tag(&self, name: &str) -> Result<Option<Digest>, StoreError> {
        let _gc = self.lease()?; // its temp file in tmp/ must not be collected mid-write
        let _lock = self.lock("tags", FlockArg::LockExclusive)?;
        let mut tags = self.tags()?;
        let old = tags.remove(name);
        if old.is_some() {
            self.write_tags(&tags)?;
        }
        Ok(old)
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
}

/// Image names are stored as given (normalised by the caller) but must be printable and non-empty.
fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > 1024 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(StoreError::BadName(name.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
