//! Cross-node pod routes (host-gw, as flannel's host-gw backend): every other Node's `spec.podCIDR` via
//! its InternalIP, learned from the Node objects and kept current as nodes come, change and go. Pods on
//! different nodes reach each other by IP without NAT (the node NAT leaves the cluster CIDR alone).
//! The routes this node installed are recorded in a file, so a restarted node removes the ones whose
//! Node vanished while it was down.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};

use crate::api::nodes::internal_ips;
use crate::network::link::{self, LinkError};

/// Destination pod CIDR → the node address it is reached through.
pub type Routes = BTreeMap<Ipv4Net, Ipv4Addr>;

/// Why routes could not be programmed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("programming pod routes: {0}")]
    Netlink(#[from] LinkError),
    #[error("recording pod routes in {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
}

/// The routes node `me` needs (pure): each other node with a pod CIDR and an InternalIP.
pub fn desired<N: std::borrow::Borrow<Node>>(nodes: &[N], me: &str) -> Routes {
    let mut out = Routes::new();
    for n in nodes {
        let n: &Node = n.borrow();
        if n.metadata.name.as_deref() == Some(me) || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(cidr) = n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).and_then(|c| c.parse().ok())
        else {
            continue;
        };
        let Some(ip) = internal_ips(n).next().and_then(|a| a.parse().ok()) else {
            continue;
        };
        out.insert(cidr, ip);
    }
    out
}

/// One route: a pod CIDR via a node address.
pub type Route = (Ipv4Net, Ipv4Addr);

/// What to change to go from `installed` to `wanted` (pure): routes to add or replace, routes to delete.
pub fn plan(installed: &Routes, wanted: &Routes) -> (Vec<Route>, Vec<Route>) {
    let add = wanted.iter().filter(|(c, g)| installed.get(c) != Some(g)).map(|(c, g)| (*c, *g)).collect();
    let delete = installed.iter().filter(|(c, g)| wanted.get(c) != Some(g)).map(|(c, g)| (*c, *g)).collect();
    (add, delete)
}

/// The recorded routes: one `CIDR GATEWAY` line each.
fn read_state(path: &Path) -> Routes {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (cidr, via) = l.split_once(' ')?;
            Some((cidr.parse().ok()?, via.trim().parse().ok()?))
        })
        .collect()
}

fn write_state(path: &Path, routes: &Routes) -> Result<(), RouteError> {
    let state = |source| RouteError::State { path: path.to_path_buf(), source };
    let text: String = routes.iter().map(|(cidr, via)| format!("{cidr} {via}\n")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(state)?;
    std::fs::rename(&tmp, path).map_err(state)
}

/// Moves the routes of the calling thread's namespace from what `state` records to `wanted`.
pub fn apply(state: &Path, wanted: &Routes) -> Result<(), RouteError> {
    let installed = read_state(state);
    let (add, delete) = plan(&installed, wanted);
    if add.is_empty() && delete.is_empty() {
        return Ok(());
    }
    let (to_add, to_delete) = (&add, &delete);
    link::with_netlink(None, |handle| async move {
        for (cidr, via) in to_delete {
            link::delete_route(&handle, *cidr, *via).await?;
        }
        for (cidr, via) in to_add {
            link::set_route(&handle, *cidr, *via).await?;
        }
        Ok(())
    })?;
    for (cidr, via) in &add {
        tracing::info!(%cidr, %via, "pod route");
    }
    write_state(state, wanted)
}

/// Removes every route `state` records (from `rkubelet reset`), then the record.
pub fn remove_all(state: &Path) -> Result<(), RouteError> {
    apply(state, &Routes::new())?;
    match std::fs::remove_file(state) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(RouteError::State { path: state.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// Keeps this node's pod routes current until `stop` changes; `state` records what was installed.
pub async fn route_loop(client: kube::Client, me: String, state: PathBuf, mut stop: watch::Receiver<bool>) {
    let (store, writer) = reflector::store::<Node>();
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    let api: Api<Node> = Api::all(client);
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).default_backoff().reflect(writer).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => notify.notify_one(),
                Err(e) => tracing::warn!("watching nodes: {e}"),
            }
        }
    });
    tokio::select! {
        _ = stop.changed() => { task.abort(); return }
        r = store.wait_until_ready() => if r.is_err() { return },
    }
    loop {
        let wanted = desired(&store.state(), &me);
        let state = state.clone();
        let result = tokio::task::spawn_blocking(move || apply(&state, &wanted))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let retry = result.as_ref().err().map(|e| tracing::warn!("{e}")).map(|()| Duration::from_secs(1));
        tokio::select! {
            _ = stop.changed() => break,
            _ = changed.notified(), if retry.is_none() => {}
            _ = tokio::time::sleep(retry.unwrap_or(Duration::from_secs(60))) => {}
        }
    }
    task.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(NodeSpec { pod_cidr: cidr.map(String::from), ..Default::default() }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| vec![NodeAddress { type_: "InternalIP".into(), address: ip.into() }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn routes_to_every_other_node_and_the_changes_between() {
        let nodes = [
            node("a", Some("10.244.0.0/24"), Some("10.250.0.11")),
            node("b", Some("10.244.1.0/24"), Some("10.250.0.12")),
            node("c", None, Some("10.250.0.13")),
            node("d", Some("10.244.3.0/24"), None),
        ];
        let wanted = desired(&nodes, "a");
        assert_eq!(wanted, Routes::from([("10.244.1.0/24".parse().unwrap(), Ipv4Addr::new(10, 250, 0, 12))]));
        let installed = Routes::from([
            ("10.244.1.0/24".parse().unwrap(), Ipv4Addr::new(10, 250, 0, 99)),
            ("10.244.9.0/24".parse().unwrap(), Ipv4Addr::new(10, 250, 0, 19)),
        ]);
        let (add, delete) = plan(&installed, &wanted);
        assert_eq!(add, vec![("10.244.1.0/24".parse().unwrap(), Ipv4Addr::new(10, 250, 0, 12))]);
        assert_eq!(delete.len(), 2);
        assert_eq!(plan(&wanted, &wanted), (vec![], vec![]));
    }
}
