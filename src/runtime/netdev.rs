//! `linux.netDevices`: existing network devices of the runtime's namespace moved into the
//! container's network namespace at create, renamed when asked, with their permanent addresses of
//! global scope carried over (the kernel drops addresses on the move) and set up — the spec's
//! rules, as runc applies them. Nothing moves them back: when the namespace goes away the kernel
//! returns physical devices and destroys virtual ones (the spec forbids the runtime to interfere).
//!
//! [`from_spec`] checks the field (pure); [`move_into`] does the netlink work.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxNetDevice;

use crate::network::link::{self, LinkError};
use crate::runtime::config::{ConfigError, Namespace, NamespaceKind};

const FIELD: &str = "linux.netDevices";

/// One device to move: its name in the runtime's namespace and the name it gets in the container's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetDevice {
    /// The device's name where the runtime runs (the entry's key).
    pub host: String,
    /// Its name in the container (`name`, else the same); may hold one `%d`.
    pub name: String,
}

/// Why a device could not be moved; one line naming it.
#[derive(Debug, thiserror::Error)]
pub enum NetDeviceError {
    #[error("linux.netDevices: {device}: no such network device in the runtime's network namespace")]
    NotFound { device: String },
    #[error(
        "linux.netDevices: {device}: the container's network namespace already has a device called {name}"
    )]
    NameTaken { device: String, name: String },
    #[error("linux.netDevices: open the container's network namespace {path}: {source}")]
    Namespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("linux.netDevices: {device}: {source}")]
    Link {
        device: String,
        #[source]
        source: LinkError,
    },
}

/// The spec's `linux.netDevices`, checked: names the kernel takes, no two devices with one name in
/// the container, and a network namespace to move them into.
pub fn from_spec(
    devices: Option<&HashMap<String, LinuxNetDevice>>,
    namespaces: &[Namespace],
) -> Result<Vec<NetDevice>, ConfigError> {
    let Some(devices) = devices.filter(|d| !d.is_empty()) else { return Ok(Vec::new()) };
    if !namespaces.iter().any(|n| n.kind == NamespaceKind::Net) {
        return Err(invalid(
            "devices can only be moved into a network namespace of the container (a \"network\" entry in linux.namespaces)",
        ));
    }
    let mut out: Vec<NetDevice> = devices
        .iter()
        .map(|(host, d)| NetDevice {
            host: host.clone(),
            name: d.name().clone().unwrap_or_else(|| host.clone()),
        })
        .collect();
    out.sort_by(|a, b| a.host.cmp(&b.host));
    let mut names = BTreeSet::new();
    for d in &out {
        check_name(&d.host, false).map_err(|why| invalid(format!("{:?}: {why}", d.host)))?;
        check_name(&d.name, true).map_err(|why| invalid(format!("{}.name {:?}: {why}", d.host, d.name)))?;
        if !d.name.contains("%d") && !names.insert(d.name.as_str()) {
            return Err(invalid(format!("two devices would be called {:?} in the container", d.name)));
        }
    }
    Ok(out)
}

fn invalid(reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: FIELD, reason: reason.into() }
}

/// The kernel's rules for an interface name (`dev_valid_name`, and `dev_alloc_name` for a
/// template): 1–15 bytes, not `.` or `..`, no `/`, `:` or white space; at most one `%`, as `%d`.
fn check_name(name: &str, template: bool) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("a device name has 1 to 15 bytes");
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err("not a device name (no '/', ':', white space, '.' or '..')");
    }
    match name.split_once('%') {
        None => Ok(()),
        Some((_, rest)) if template && rest.starts_with('d') && !rest.contains('%') => Ok(()),
        Some(_) if template => Err("only one '%d' may stand for the number the kernel picks"),
        Some(_) => Err("not a device name (no '%')"),
    }
}

/// The container's network namespace: the one the spec joins by path, else init's new one.
pub fn target_namespace(namespaces: &[Namespace], init_pid: i32) -> PathBuf {
    namespaces
        .iter()
        .find(|n| n.kind == NamespaceKind::Net)
        .and_then(|n| n.path.clone())
        .unwrap_or_else(|| PathBuf::from(format!("/proc/{init_pid}/ns/net")))
}

/// Moves each device into the network namespace at `netns`, one after the other: its addresses
/// are read first, then it moves (renamed), then, found in the container by the name it got, it
/// gets them back and is set up.
pub fn move_into(netns: &Path, devices: &[NetDevice]) -> Result<(), NetDeviceError> {
    let target = std::fs::File::open(netns)
        .map_err(|source| NetDeviceError::Namespace { path: netns.to_path_buf(), source })?;
    for device in devices {
        let fail = |source| match source {
            LinkError::NotFound { .. } => NetDeviceError::NotFound { device: device.host.clone() },
            source => NetDeviceError::Link { device: device.host.clone(), source },
        };
        let (index, addresses) = link::with_netlink(None, |handle| async move {
            let index = link::link_index(&handle, &device.host)
                .await?
                .ok_or_else(|| LinkError::NotFound { name: device.host.clone() })?;
            Ok((index, link::permanent_global_addresses(&handle, index).await?))
        })
        .map_err(fail)?;
        let names = |handle| async move { link::link_names_with_prefix(&handle, "").await };
        let before: BTreeSet<String> =
            link::with_netlink(Some(netns), names).map_err(fail)?.into_iter().collect();
        if before.contains(&device.name) {
            return Err(NetDeviceError::NameTaken { device: device.host.clone(), name: device.name.clone() });
        }
        let rename = (device.name != device.host).then_some(device.name.as_str());
        let fd = target.as_raw_fd();
        link::with_netlink(
            None,
            |handle| async move { link::move_to_netns(&handle, index, fd, rename).await },
        )
        .map_err(fail)?;
        link::with_netlink(Some(netns), |handle| async move {
            // The one name that was not there before: the device, whatever number `%d` became.
            let arrived =
                link::link_names_with_prefix(&handle, "").await?.into_iter().find(|n| !before.contains(n));
            let name = arrived.ok_or_else(|| LinkError::NotFound { name: device.name.clone() })?;
            let index = link::link_index(&handle, &name)
                .await?
                .ok_or_else(|| LinkError::NotFound { name: name.clone() })?;
            for (ip, prefix) in addresses {
                link::add_address_to(&handle, index, ip, prefix).await?;
            }
            link::set_up_index(&handle, index, &name).await
        })
        .map_err(|source| NetDeviceError::Link { device: device.host.clone(), source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(entries: &[(&str, Option<&str>)]) -> HashMap<String, LinuxNetDevice> {
        entries
            .iter()
            .map(|(host, name)| {
                let mut d = LinuxNetDevice::default();
                d.set_name(name.map(str::to_string));
                (host.to_string(), d)
            })
            .collect()
    }

    fn netns() -> Vec<Namespace> {
        vec![Namespace { kind: NamespaceKind::Net, path: None }]
    }

    #[test]
    fn devices_are_checked_by_name() {
        let ok = from_spec(Some(&spec(&[("dummy1", Some("eth%d")), ("dummy0", None)])), &netns()).unwrap();
        assert_eq!(
            ok,
            [
                NetDevice { host: "dummy0".into(), name: "dummy0".into() },
                NetDevice { host: "dummy1".into(), name: "eth%d".into() },
            ]
        );
        assert!(from_spec(None, &[]).unwrap().is_empty());
        for (entries, namespaces, said) in [
            (vec![("d0", None)], vec![], "a \"network\" entry"),
            (vec![("a-name-longer-than-15", None)], netns(), "1 to 15 bytes"),
            (vec![("d0", Some("has space"))], netns(), "d0.name \"has space\""),
            (vec![("d0", Some("eth%d%d"))], netns(), "only one '%d'"),
            (vec![("d%d", None)], netns(), "no '%'"),
            (
                vec![("d0", Some("eth0")), ("d1", Some("eth0"))],
                netns(),
                "two devices would be called \"eth0\"",
            ),
            (vec![("..", None)], netns(), "not a device name"),
        ] {
            let err = from_spec(Some(&spec(&entries)), &namespaces).unwrap_err().to_string();
            assert!(err.starts_with("config: linux.netDevices: "), "{err}");
            assert!(err.contains(said), "{entries:?}: {err}");
        }
    }

    #[test]
    fn the_target_is_the_joined_namespace_or_inits_own() {
        assert_eq!(target_namespace(&netns(), 42), PathBuf::from("/proc/42/ns/net"));
        let joined = [Namespace { kind: NamespaceKind::Net, path: Some("/run/netns/x".into()) }];
        assert_eq!(target_namespace(&joined, 42), PathBuf::from("/run/netns/x"));
    }
}
