//! Garbage collection: untag and prune what no tag (or in-use image) reaches any more.

use super::{Store, StoreError, io_err, layer_id};
use crate::image::digest::Digest;
use nix::fcntl::FlockArg;
use std::collections::HashSet;
use std::fs;
use std::path::Path;

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

impl Store {
    /// `rkubelet image rm`: removes the tag, then everything no remaining tag needs. Returns the digest
    /// the tag pointed at (None if there was no such tag) and what was freed.
    pub fn remove_image(&self, name: &str) -> Result<(Option<Digest>, PruneReport), StoreError> {
        let old = self.remove_tag(name)?;
        let report = if old.is_some() { self.prune()? } else { PruneReport::default() };
        Ok((old, report))
    }

    /// Removes every blob and layer no tag references any more (tag → index → manifest → config and
    /// layers), and leftovers of interrupted work in `tmp/`. Waits for running pulls holding a
    /// [`Lease`](super::Lease); never call it while this process holds one: it would wait for itself.
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

    /// Removes these layers and their blobs unless a tag reaches them: what a failed build made.
    /// Takes the gc lock exclusively (waits for leases, like [`Store::prune`]); returns what went.
    pub fn discard_layers(&self, layers: &[(Digest, Digest)]) -> Result<Vec<Digest>, StoreError> {
        let _gc = self.lock("gc", FlockArg::LockExclusive)?;
        let roots: Vec<Digest> = self.tags()?.into_values().collect();
        let (keep_blobs, keep_layers) = self.reachable(roots);
        let mut removed = Vec::new();
        for (diff_id, blob) in layers {
            let id = layer_id(diff_id);
            if keep_layers.contains(&id) {
                continue;
            }
            if self.layer_path(diff_id).is_some() {
                let dir = self.root.join("layers").join(&id);
                let trash = self.tmp_path(&format!("trash-{id}"));
                fs::rename(&dir, &trash).map_err(io_err("move away layer", &dir))?;
                fs::remove_dir_all(&trash).map_err(io_err("remove layer", &trash))?;
            }
            if !keep_blobs.contains(blob) {
                let path = self.blob_path(blob);
                if path.exists() {
                    fs::remove_file(&path).map_err(io_err("remove blob", &path))?;
                }
            }
            removed.push(diff_id.clone());
        }
        Ok(removed)
    }

    /// Blobs and layer ids reachable from `pending` (manifest or index digests). Missing or unparsable
    /// blobs end the walk quietly on that branch (so a broken image never blocks pruning others).
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

/// Names of the entries of `dir` (non-UTF-8 names are not ours and are skipped).
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
