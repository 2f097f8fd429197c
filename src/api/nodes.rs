//! Node facts shared by the master's controllers and the nodes (pure).

use k8s_openapi::api::core::v1::Node;

/// Whether `node` is Ready and not being deleted: the nodes that serve LoadBalancers and DNS.
pub fn serves(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready && node.metadata.deletion_timestamp.is_none()
}

/// The node's InternalIP addresses.
pub fn internal_ips(node: &Node) -> impl Iterator<Item = &str> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.as_str())
}
