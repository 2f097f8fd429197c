//! Links, addresses and routes over rtnetlink, each request run in a chosen network namespace.
//!
//! [`with_netlink`] opens the netlink socket on a thread that has entered the target namespace
//! (a socket acts in the namespace it was created in) and drives it with a current-thread runtime.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::netns::{NetnsError, run_in_netns};

const ENODEV: i32 = 19;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ESRCH: i32 = 3;
const EADDRNOTAVAIL: i32 = 99;

/// Errors from netlink link/address/route work.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("netlink in {netns}: {step}: {source}")]
    Setup { netns: PathBuf, step: &'static str, source: io::Error },
    #[error("{step} {object}: {source}")]
    Request { step: &'static str, object: String, source: Box<rtnetlink::Error> },
    #[error("link {name}: not found")]
    NotFound { name: String },
}

impl LinkError {
    fn request(step: &'static str, object: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let object = object.into();
        move |source| LinkError::Request { step, object, source: Box::new(source) }
    }
}

/// The positive errno carried by a netlink error reply, if any.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io().raw_os_error(),
        _ => None,
    }
}

/// Runs `work` with a netlink handle bound to the namespace at `netns` (caller's namespace if `None`).
#[tracing::instrument(level = "debug", name = "netlink", skip(work))]
pub fn with_netlink<T, F, Fut>(netns: Option<&Path>, work: F) -> Result<T, LinkError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let label = netns.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("(current)"));
    run_in_netns(netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| LinkError::Setup { netns: label.clone(), step: "start runtime", source })?;
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| LinkError::Setup {
                netns: label,
                step: "open socket",
                source,
            })?;
            let driver = tokio::spawn(connection);
            let result = work(handle).await;
            driver.abort();
            result
        })
    })?
}

/// Index of the link called `name`, or `None` if there is none.
pub async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, LinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
        Err(e) => Err(LinkError::request("look up link", name)(e)),
    }
}

async fn require_index(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    link_index(handle, name).await?.ok_or_else(|| LinkError::NotFound { name: name.to_string() })
}

/// MTU of link `name`, or `None` if there is no such link.
pub async fn link_mtu(handle: &Handle, name: &str) -> Result<Option<u32>, LinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })),
        Ok(None) => Ok(None),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
        Err(e) => Err(LinkError::request("look up link", name)(e)),
    }
}

/// Names of all links starting with `prefix`.
pub async fn link_names_with_prefix(handle: &Handle, prefix: &str) -> Result<Vec<String>, LinkError> {
    let mut links = handle.link().get().execute();
    let mut names = Vec::new();
    while let Some(msg) = links.try_next().await.map_err(LinkError::request("list links", prefix))? {
        for attr in msg.attributes {
            if let LinkAttribute::IfName(name) = attr
                && name.starts_with(prefix)
            {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// The IPv4 networks this namespace reaches directly, each with the name of its link: the network
/// of every address, and every main-table route with a destination of /8 or narrower (default
/// routes have none; wider ones are a VPN's split default).
pub async fn ipv4_networks(handle: &Handle) -> Result<Vec<(String, Ipv4Net)>, LinkError> {
    let mut names = HashMap::new();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await.map_err(LinkError::request("list", "links"))? {
        if let Some(name) = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        }) {
            names.insert(msg.header.index, name);
        }
    }
    let name_of = |index: u32| names.get(&index).cloned().unwrap_or_else(|| format!("link #{index}"));
    let mut networks = Vec::new();
    let mut addresses = handle.address().get().execute();
    while let Some(msg) = addresses.try_next().await.map_err(LinkError::request("list", "addresses"))? {
        for attr in &msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) = attr
                && let Ok(net) = Ipv4Net::new(*ip, msg.header.prefix_len)
            {
                networks.push((name_of(msg.header.index), net.trunc()));
            }
        }
    }
    let mut routes = handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
    while let Some(msg) = routes.try_next().await.map_err(LinkError::request("list", "routes"))? {
        let mut table = u32::from(msg.header.table);
        let (mut destination, mut link) = (None, None);
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = Some(*ip),
                RouteAttribute::Oif(index) => link = Some(*index),
                _ => {}
            }
        }
        // Very wide routes (a VPN's 0.0.0.0/1 + 128.0.0.0/1 "split default") stand for the default
        // route, not for a network of their own.
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) || msg.header.destination_prefix_length < 8 {
            continue;
        }
        if let Some(net) =
            destination.and_then(|ip| Ipv4Net::new(ip, msg.header.destination_prefix_length).ok())
        {
            let via = link.map(name_of).unwrap_or_else(|| "a route".into());
            networks.push((via, net.trunc()));
        }
    }
    networks.sort();
    networks.dedup();
    Ok(networks)
}

/// Sets link `name` up.
pub async fn set_up(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    let index = require_index(handle, name).await?;
    set_up_index(handle, index, name).await?;
    Ok(index)
}

/// Sets link `index` up (`name` only labels an error).
pub async fn set_up_index(handle: &Handle, index: u32, name: &str) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(LinkError::request("set up link", name))
}

/// The permanent addresses of global scope of link `index`, of either family, as `(address,
/// prefix length)` (what moving a link to another namespace must carry over: the kernel drops
/// every address on the move).
pub async fn permanent_global_addresses(handle: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, LinkError> {
    use rtnetlink::packet_route::address::{AddressFlags, AddressHeaderFlags, AddressScope};
    let mut out = Vec::new();
    let mut addresses = handle.address().get().set_link_index_filter(index).execute();
    while let Some(msg) = addresses
        .try_next()
        .await
        .map_err(LinkError::request("list addresses of link", format!("#{index}")))?
    {
        // The 32-bit IFA_FLAGS attribute, when present, supersedes the header's 8 bits.
        let permanent = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Flags(f) => Some(f.contains(AddressFlags::Permanent)),
                _ => None,
            })
            .unwrap_or(msg.header.flags.contains(AddressHeaderFlags::Permanent));
        if msg.header.index != index || !permanent || msg.header.scope != AddressScope::Universe {
            continue;
        }
        // IPv4 names the interface's own address `Local` (`Address` is the peer's on a
        // point-to-point link); IPv6 sends only `Address`.
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(address) {
            out.push((ip, msg.header.prefix_len));
        }
    }
    Ok(out)
}

/// Moves link `index` into the network namespace open as `netns_fd`, renamed to `new_name` there
/// when given (a name with `%d` lets the kernel pick a free number).
pub async fn move_to_netns(
    handle: &Handle,
    index: u32,
    netns_fd: RawFd,
    new_name: Option<&str>,
) -> Result<(), LinkError> {
    let mut message = LinkUnspec::new_with_index(index).setns_by_fd(netns_fd);
    if let Some(name) = new_name {
        message = message.name(name.to_string());
    }
    handle
        .link()
        .set(message.build())
        .execute()
        .await
        .map_err(LinkError::request("move link to another network namespace", format!("#{index}")))
}

/// Adds `addr/prefix` to link `name` (replacing an identical one: idempotent).
pub async fn add_address(handle: &Handle, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), LinkError> {
    let index = require_index(handle, name).await?;
    handle
        .address()
        .add(index, addr.into(), prefix)
        .replace()
        .execute()
        .await
        .map_err(LinkError::request("add address", format!("{addr}/{prefix} on {name}")))
}

/// The link holding IPv4 address `addr`: its index and hardware address (`None`: no link has it).
pub async fn link_with_address(handle: &Handle, addr: Ipv4Addr) -> Result<Option<(u32, Vec<u8>)>, LinkError> {
    let Some(index) = address_messages(handle, addr).await?.first().map(|m| m.header.index) else {
        return Ok(None);
    };
    let mut links = handle.link().get().match_index(index).execute();
    let msg = links.try_next().await.map_err(LinkError::request("look up link of", addr.to_string()))?;
    let mac = msg
        .and_then(|m| {
            m.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Address(mac) => Some(mac),
                _ => None,
            })
        })
        .unwrap_or_default();
    Ok(Some((index, mac)))
}

/// The address messages for `addr` on any link.
async fn address_messages(handle: &Handle, addr: Ipv4Addr) -> Result<Vec<AddressMessage>, LinkError> {
    let mut out = Vec::new();
    let mut addresses = handle.address().get().execute();
    while let Some(msg) = addresses.try_next().await.map_err(LinkError::request("list", "addresses"))? {
        if msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == addr))
        {
            out.push(msg);
        }
    }
    Ok(out)
}

/// Adds `addr/prefix` to the link with `index` (replacing an identical one: idempotent).
pub async fn add_address_to(handle: &Handle, index: u32, addr: IpAddr, prefix: u8) -> Result<(), LinkError> {
    handle
        .address()
        .add(index, addr, prefix)
        .replace()
        .execute()
        .await
        .map_err(LinkError::request("add address", format!("{addr}/{prefix} on link #{index}")))
}

/// Deletes `addr/prefix` from whichever link has it; succeeds if none has.
pub async fn delete_address(handle: &Handle, addr: Ipv4Addr, prefix: u8) -> Result<(), LinkError> {
    for msg in address_messages(handle, addr).await? {
        if msg.header.prefix_len != prefix {
            continue;
        }
        match handle.address().del(msg).execute().await {
            Ok(()) => {}
            Err(e) if matches!(errno(&e), Some(EADDRNOTAVAIL) | Some(ENODEV)) => {}
            Err(e) => return Err(LinkError::request("delete address", format!("{addr}/{prefix}"))(e)),
        }
    }
    Ok(())
}

/// Creates bridge `name` if missing, gives it `gateway/prefix`, sets it up; returns its index.
pub async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<u32, LinkError> {
    if link_index(handle, name).await?.is_none() {
        match handle.link().add(LinkBridge::new(name).build()).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(LinkError::request("create bridge", name)(e)),
        }
    }
    add_address(handle, name, gateway, prefix).await?;
    set_up(handle, name).await
}

/// Deletes link `name`; succeeds if it does not exist.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<(), LinkError> {
    let Some(index) = link_index(handle, name).await? else { return Ok(()) };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(()),
        Err(e) => Err(LinkError::request("delete link", name)(e)),
    }
}

/// Creates a veth pair: `host_name` here and `peer_name` directly inside the namespace open as
/// `peer_netns_fd` (so the peer may be called `eth0` without clashing). Replaces a stale `host_name`.
pub async fn create_veth_into(
    handle: &Handle,
    host_name: &str,
    peer_name: &str,
    peer_netns_fd: RawFd,
    mtu: u32,
) -> Result<u32, LinkError> {
    delete_link(handle, host_name).await?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer_name.to_string())
        .mtu(mtu)
        .setns_by_fd(peer_netns_fd)
        .build();
    let message = LinkVeth::new(host_name, peer_name)
        .mtu(mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    handle
        .link()
        .add(message)
        .execute()
        .await
        .map_err(LinkError::request("create veth", format!("{host_name} (peer {peer_name})")))?;
    require_index(handle, host_name).await
}

/// Attaches link `port` to bridge `bridge`, sets hairpin mode, and brings the port up.
pub async fn attach_to_bridge(
    handle: &Handle,
    port: &str,
    bridge: &str,
    hairpin: bool,
) -> Result<(), LinkError> {
    let bridge_index = require_index(handle, bridge).await?;
    let port_index = require_index(handle, port).await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(port_index).controller(bridge_index).up().build())
        .execute()
        .await
        .map_err(LinkError::request("attach to bridge", format!("{port} -> {bridge}")))?;
    handle
        .link()
        .set_port(LinkBridgePort::new(port_index).hairpin(hairpin).build())
        .execute()
        .await
        .map_err(LinkError::request("set hairpin", port))
}

/// Replaces the default route with one via `gateway` on link `dev`.
pub async fn set_default_route(handle: &Handle, dev: &str, gateway: Ipv4Addr) -> Result<(), LinkError> {
    let index = require_index(handle, dev).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(index).build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(LinkError::request("add default route", format!("via {gateway} dev {dev}")))
}

/// The route to `destination` via `gateway` (host-gw: another node's pod CIDR).
fn gateway_route(destination: Ipv4Net, gateway: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(destination.network(), destination.prefix_len())
        .gateway(gateway)
        .build()
}

/// Replaces the route to `destination` with one via `gateway` (host-gw: another node's pod CIDR).
pub async fn set_route(handle: &Handle, destination: Ipv4Net, gateway: Ipv4Addr) -> Result<(), LinkError> {
    handle
        .route()
        .add(gateway_route(destination, gateway))
        .replace()
        .execute()
        .await
        .map_err(LinkError::request("add route", format!("{destination} via {gateway}")))
}

/// Deletes the route to `destination` via `gateway`; succeeds if there is none.
pub async fn delete_route(handle: &Handle, destination: Ipv4Net, gateway: Ipv4Addr) -> Result<(), LinkError> {
    match handle.route().del(gateway_route(destination, gateway)).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(ESRCH) | Some(ENOENT)) => Ok(()),
        Err(e) => Err(LinkError::request("delete route", format!("{destination} via {gateway}"))(e)),
    }
}

/// Inside a pod namespace: `lo` up, `ifname` gets `addr/prefix`, up, default route via `gateway`.
pub async fn configure_pod_interface(
    handle: &Handle,
    ifname: &str,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<(), LinkError> {
    set_up(handle, "lo").await?;
    add_address(handle, ifname, addr, prefix).await?;
    set_up(handle, ifname).await?;
    set_default_route(handle, ifname, gateway).await
}
