//! host-local style IP allocation over the node's pod CIDR, persisted as one file per IP.
//!
//! Layout of the store directory: `<ip>` files holding the owner id (created `O_EXCL`),
//! `last_reserved` (round-robin cursor) and `lock` (flock'd for every operation).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};

/// Errors from the IP allocator.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("ipam {cidr}: subnet too small (need at least /30)")]
    SubnetTooSmall { cidr: Ipv4Net },
    #[error("ipam {cidr}: no free address left for {owner}")]
    Exhausted { cidr: Ipv4Net, owner: String },
    #[error("ipam {path}: {step}: {source}")]
    Io { path: PathBuf, step: &'static str, source: io::Error },
    #[error("ipam {path}: lock: {source}")]
    Lock { path: PathBuf, source: nix::Error },
}

/// The first host address of `cidr`: the bridge's gateway address.
pub fn gateway_of(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

/// Addresses handed to pods: all hosts of `cidr` except network, gateway and broadcast.
pub fn pod_range(cidr: Ipv4Net) -> Option<(u32, u32)> {
    if cidr.prefix_len() > 30 {
        return None;
    }
    let first = u32::from(cidr.network()) + 2;
    let last = u32::from(cidr.broadcast()) - 1;
    Some((first, last))
}

/// Picks the next free address after `last` (round robin, wrapping), skipping `taken`.
pub fn next_free(cidr: Ipv4Net, taken: &BTreeSet<Ipv4Addr>, last: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (first, end) = pod_range(cidr)?;
    let size = end - first + 1;
    let start = match last.map(u32::from) {
        Some(l) if (first..=end).contains(&l) => l - first + 1,
        _ => 0,
    };
    (0..size).map(|i| Ipv4Addr::from(first + (start + i) % size)).find(|candidate| !taken.contains(candidate))
}

/// A persistent allocator for one pod CIDR.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Net,
}

impl Ipam {
    /// An allocator storing its state in `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>, cidr: Ipv4Net) -> Result<Self, IpamError> {
        let cidr = cidr.trunc();
        if pod_range(cidr).is_none() {
            return Err(IpamError::SubnetTooSmall { cidr });
        }
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| IpamError::Io {
            path: dir.clone(),
            step: "create dir",
            source,
        })?;
        Ok(Self { dir, cidr })
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The gateway address (reserved, never allocated).
    pub fn gateway(&self) -> Ipv4Addr {
        gateway_of(self.cidr)
    }

    /// Allocates an address for `owner`; returns the existing one if `owner` already has one.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        let _lock = self.lock()?;
        let current = self.read_allocations()?;
        if let Some((ip, _)) = current.iter().find(|(_, o)| o.as_str() == owner) {
            return Ok(*ip);
        }
        let taken: BTreeSet<Ipv4Addr> = current.keys().copied().collect();
        let ip = next_free(self.cidr, &taken, self.read_last())
            .ok_or_else(|| IpamError::Exhausted { cidr: self.cidr, owner: owner.to_string() })?;
        let path = self.dir.join(ip.to_string());
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| IpamError::Io { path: path.clone(), step: "reserve", source })?;
        file.write_all(owner.as_bytes()).and_then(|()| file.sync_all()).map_err(|source| IpamError::Io {
            path: path.clone(),
            step: "write owner",
            source,
        })?;
        let last = self.dir.join("last_reserved");
        fs::write(&last, ip.to_string()).map_err(|source| IpamError::Io {
            path: last,
            step: "write cursor",
            source,
        })?;
        Ok(ip)
    }

    /// Releases every address held by `owner`; returns the one released, if any. Idempotent.
    pub fn release(&self, owner: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        let mut released = None;
        for (ip, holder) in self.read_allocations()? {
            if holder == owner {
                let path = self.dir.join(ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => released = Some(ip),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(IpamError::Io { path, step: "release", source }),
                }
            }
        }
        Ok(released)
    }

    /// The address held by `owner`, if any.
    pub fn lookup(&self, owner: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self.allocations()?.into_iter().find(|(_, o)| o == owner).map(|(ip, _)| ip))
    }

    /// All current allocations: address → owner.
    pub fn allocations(&self) -> Result<BTreeMap<Ipv4Addr, String>, IpamError> {
        let _lock = self.lock()?;
        self.read_allocations()
    }

    fn lock(&self) -> Result<Flock<File>, IpamError> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| IpamError::Io { path: path.clone(), step: "open lock", source })?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, source)| IpamError::Lock { path, source })
    }

    fn read_last(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join("last_reserved")).ok()?.trim().parse().ok()
    }

    fn read_allocations(&self) -> Result<BTreeMap<Ipv4Addr, String>, IpamError> {
        let io_err = |step| {
            let path = self.dir.clone();
            move |source| IpamError::Io { path, step, source }
        };
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("list"))? {
            let entry = entry.map_err(io_err("list"))?;
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            if !self.cidr.contains(&ip) {
                continue;
            }
            let owner = read_owner(&entry.path()).map_err(io_err("read owner"))?;
            out.insert(ip, owner);
        }
        Ok(out)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn read_owner(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn range_skips_network_gateway_broadcast() {
        let cidr = net("10.244.1.0/24");
        assert_eq!(gateway_of(cidr), ip("10.244.1.1"));
        let (first, last) = pod_range(cidr).unwrap();
        assert_eq!(Ipv4Addr::from(first), ip("10.244.1.2"));
        assert_eq!(Ipv4Addr::from(last), ip("10.244.1.254"));
        assert!(pod_range(net("10.0.0.0/31")).is_none());
    }

    #[test]
    fn next_free_is_round_robin_and_wraps() {
        let cidr = net("10.0.0.0/29"); // pods: .2 ..= .6
        let mut taken = BTreeSet::new();
        assert_eq!(next_free(cidr, &taken, None), Some(ip("10.0.0.2")));
        assert_eq!(next_free(cidr, &taken, Some(ip("10.0.0.2"))), Some(ip("10.0.0.3")));
        assert_eq!(next_free(cidr, &taken, Some(ip("10.0.0.6"))), Some(ip("10.0.0.2")));
        taken.insert(ip("10.0.0.2"));
        assert_eq!(next_free(cidr, &taken, Some(ip("10.0.0.6"))), Some(ip("10.0.0.3")));
        for i in 2..=6 {
            taken.insert(Ipv4Addr::new(10, 0, 0, i));
        }
        assert_eq!(next_free(cidr, &taken, None), None);
        // A cursor outside the range restarts at the beginning.
        taken.clear();
        assert_eq!(next_free(cidr, &taken, Some(ip("192.168.0.1"))), Some(ip("10.0.0.2")));
    }

    #[test]
    fn store_allocates_persists_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let cidr = net("10.77.3.0/29");
        let ipam = Ipam::new(dir.path(), cidr).unwrap();
        let a = ipam.allocate("pod-a").unwrap();
        let b = ipam.allocate("pod-b").unwrap();
        assert_eq!((a, b), (ip("10.77.3.2"), ip("10.77.3.3")));
        assert_eq!(ipam.allocate("pod-a").unwrap(), a, "allocation is idempotent per owner");

        // A new allocator over the same directory sees the same state (survives restarts).
        let reopened = Ipam::new(dir.path(), cidr).unwrap();
        assert_eq!(reopened.lookup("pod-b").unwrap(), Some(b));
        assert_eq!(reopened.release("pod-a").unwrap(), Some(a));
        assert_eq!(reopened.release("pod-a").unwrap(), None, "release is idempotent");
        // Round robin: the freed .2 is not reused before the rest of the range.
        assert_eq!(reopened.allocate("pod-c").unwrap(), ip("10.77.3.4"));
        for owner in ["d", "e"] {
            reopened.allocate(owner).unwrap();
        }
        assert_eq!(reopened.allocate("f").unwrap(), ip("10.77.3.2"));
        assert!(matches!(reopened.allocate("g"), Err(IpamError::Exhausted { .. })));
    }
}
