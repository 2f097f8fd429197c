//! Per-pod user namespace ranges for `hostUsers: false`: each such pod gets 65536 host ids of its
//! own, `k * 65536 ..`, for the first free `k` in `1..=MAX_RANGES` (range 0 holds the host's own
//! users). An allocation is a file `<root>/userns/<k>` holding the pod's name, created exclusively,
//! so concurrent starts never share a range and a restarted agent keeps it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Ids per pod, as the kubelet gives.
pub const RANGE: u32 = 65536;
/// How many pods with their own user namespace a node can hold.
pub const MAX_RANGES: u32 = 1024;

fn dir(root: &Path) -> PathBuf {
    root.join("userns")
}

/// The first host id of the range of pod `pod`, allocating one if it has none.
pub fn allocate(root: &Path, pod: &str) -> io::Result<u32> {
    if let Some(k) = lookup(root, pod)? {
        return Ok(k * RANGE);
    }
    let dir = dir(root);
    fs::create_dir_all(&dir)?;
    // The claim is written whole before it is linked into place, so a crash never leaves a
    // range held by a file that names no pod.
    let claim = dir.join(format!(".claim-{}", std::process::id()));
    fs::File::create(&claim)?.write_all(pod.as_bytes())?;
    let mut result =
        Err(io::Error::other(format!("all {MAX_RANGES} user namespace ranges of this node are in use")));
    for k in 1..=MAX_RANGES {
        match fs::hard_link(&claim, dir.join(k.to_string())) {
            Ok(()) => {
                result = Ok(k * RANGE);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let _ = fs::remove_file(&claim);
    result
}

/// The range index held by `pod`, if any.
fn lookup(root: &Path, pod: &str) -> io::Result<Option<u32>> {
    let entries = match fs::read_dir(dir(root)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let Some(k) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        // Claims (`.claim-*`) are not ranges.
        if fs::read(entry.path()).is_ok_and(|owner| owner == pod.as_bytes()) {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

/// Gives back the range of `pod` (idempotent).
pub fn release(root: &Path, pod: &str) -> io::Result<()> {
    match lookup(root, pod)? {
        Some(k) => match fs::remove_file(dir(root).join(k.to_string())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pod_gets_its_own_range_until_it_gives_it_back() {
        let root = tempfile::tempdir().unwrap();
        let a = allocate(root.path(), "a").unwrap();
        let b = allocate(root.path(), "b").unwrap();
        assert_eq!((a, b), (RANGE, 2 * RANGE));
        assert_eq!(allocate(root.path(), "a").unwrap(), a, "idempotent");
        release(root.path(), "a").unwrap();
        release(root.path(), "a").unwrap();
        assert_eq!(allocate(root.path(), "c").unwrap(), RANGE, "a freed range is reused");
        assert_eq!(allocate(root.path(), "b").unwrap(), b);
    }
}
