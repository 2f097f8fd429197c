//! `pods/log`, `pods/exec` and `pods/portforward`: the pod's node is resolved (`spec.nodeName` →
//! Node → InternalIP and `daemonEndpoints.kubeletEndpoint.Port`), dialled over mutual TLS (our
//! kubelet-client certificate; the node's serving certificate verified against the cluster CA
//! for that IP), and the request relayed: logs as a streamed body, exec and port-forward as a
//! byte-level upgrade proxy (the node terminates WebSocket and SPDY; no frame is parsed here).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::ApiServer;
use super::resources;
use super::status::ApiStatus;

/// The streaming subresources of pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Log,
    Exec,
    PortForward,
}

/// Query parameters the node receives for each subresource, renamed as kube-apiserver does.
fn node_query(kind: Stream, pairs: &[(String, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        let renamed = match (kind, k.as_str()) {
            (
                Stream::Log,
                "follow" | "previous" | "timestamps" | "sinceSeconds" | "sinceTime" | "tailLines"
                | "limitBytes",
            ) => Some(k.as_str()),
            (Stream::Exec, "command") => Some("command"),
            (Stream::Exec, "stdin") => Some("input"),
            (Stream::Exec, "stdout") => Some("output"),
            (Stream::Exec, "stderr") => Some("error"),
            (Stream::Exec, "tty") => Some("tty"),
            (Stream::PortForward, "ports") => Some("port"),
            _ => None,
        };
        let Some(name) = renamed else { continue };
        let value = match (kind, name) {
            (Stream::Exec, "input" | "output" | "error" | "tty") => {
                if v == "true" || v == "1" {
                    "1"
                } else {
                    continue;
                }
            }
            _ => v.as_str(),
        };
        out.append_pair(name, value);
    }
    out.finish()
}

/// The container a request names, defaulted as kube-apiserver does (the only container), or
/// its error message.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, String> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let names = |path: &str| -> Vec<String> {
        pod.pointer(path)
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter().filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from)).collect()
            })
            .unwrap_or_default()
    };
    let containers = names("/spec/containers");
    let others: Vec<String> =
        names("/spec/initContainers").into_iter().chain(names("/spec/ephemeralContainers")).collect();
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&others).any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(format!("container {c} is not valid for pod {name}")),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None if containers.is_empty() => Err(format!("pod {name} does not have any containers")),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !others.is_empty() {
                msg.push_str(&format!(" or one of the init containers: [{}]", others.join(" ")));
            }
            Err(msg)
        }
    }
}

/// Where a node's kubelet API listens: its InternalIP (else any address that is an IP) and
/// `daemonEndpoints.kubeletEndpoint.Port` (default 10250).
pub fn kubelet_address(node: &Value) -> Option<SocketAddr> {
    let addrs = node.pointer("/status/addresses").and_then(Value::as_array)?;
    let of_type = |t: &str| {
        addrs
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .find_map(|a| a.get("address").and_then(Value::as_str)?.parse::<IpAddr>().ok())
    };
    let ip = ["InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS"]
        .iter()
        .find_map(|t| of_type(t))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0 && *p <= 65535)
        .unwrap_or(10250) as u16;
    Some(SocketAddr::new(ip, port))
}

fn backend_error(msg: impl std::fmt::Display) -> Response {
    let mut s = ApiStatus::internal(format!("error dialing backend: {msg}"));
    s.code = 502;
    s.into_response()
}

/// Headers kept on the request to the node (and on the 101 back): the upgrade handshake.
const UPGRADE_HEADERS: [&str; 7] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// `GET|POST /api/v1/namespaces/{ns}/pods/{name}/{log|exec|portforward}`.
pub async fn handle(
    app: Arc<ApiServer>,
    kind: Stream,
    ns: String,
    name: String,
    mut req: Request,
) -> Response {
    let q: super::Q =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let peer = req.extensions().get::<super::auth::PeerIdentity>().cloned();
    let path = req.uri().path().trim_end_matches('/').to_string();
    if let Err(denied) = super::admit(&app, req.method(), &path, req.headers(), peer.as_ref(), &q).await {
        return denied;
    }
    match (kind, req.method()) {
        (Stream::Log, &Method::GET) | (Stream::Exec | Stream::PortForward, &Method::GET | &Method::POST) => {}
        (_, m) => return ApiStatus::method_not_allowed(&format!("{m} pods/{kind:?}")).into_response(),
    }
    let Some(tls) = app.kubelet_tls.clone() else {
        return backend_error("this API server has no kubelet client certificate");
    };
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let pods = resources::find("", "v1", "pods").expect("pods are served");
    let pod = match app.registry.get(pods, &ns, &name).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let path = match kind {
        Stream::PortForward => format!("/portForward/{ns}/{name}"),
        Stream::Log | Stream::Exec => {
            let requested = pairs.iter().find(|(k, _)| k == "container").map(|(_, v)| v.as_str());
            match pick_container(&pod, requested) {
                Ok(c) => {
                    format!("/{}/{ns}/{name}/{c}", if kind == Stream::Log { "containerLogs" } else { "exec" })
                }
                Err(m) => return ApiStatus::bad_request(m).into_response(),
            }
        }
    };
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    if node_name.is_empty() {
        return ApiStatus::bad_request(format!("pod {name} does not have a host assigned")).into_response();
    }
    let nodes = resources::find("", "v1", "nodes").expect("nodes are served");
    let node = match app.registry.get(nodes, "", node_name).await {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let Some(addr) = kubelet_address(&node) else {
        return backend_error(format!("node {node_name} has no address"));
    };
    let query = node_query(kind, &pairs);
    let uri = if query.is_empty() { path } else { format!("{path}?{query}") };
    let Ok(uri) = uri.parse::<Uri>() else {
        return ApiStatus::bad_request("bad request path").into_response();
    };
    let upgrade = kind != Stream::Log;
    let mut headers = HeaderMap::new();
    if upgrade {
        for h in UPGRADE_HEADERS {
            for v in req.headers().get_all(h) {
                headers.append(h, v.clone());
            }
        }
    }
    let mut upstream = match send(tls, addr, req.method().clone(), uri, headers).await {
        Ok(r) => r,
        Err(e) => return backend_error(e),
    };
    if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = upstream.into_parts();
        return Response::from_parts(parts, Body::new(body));
    }
    if !upgrade {
        return backend_error("the node switched protocols on a log request");
    }
    let mut resp = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for h in UPGRADE_HEADERS.iter().chain(&["sec-websocket-accept"]) {
        for v in upstream.headers().get_all(*h) {
            resp = resp.header(*h, v.clone());
        }
    }
    let node_side = hyper::upgrade::on(&mut upstream);
    let client_side = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let (Ok(client), Ok(node)) = (client_side.await, node_side.await) else { return };
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(node)).await;
    });
    resp.body(Body::empty()).unwrap_or_else(|_| backend_error("building the response"))
}

/// Dials the node over TLS and sends one HTTP/1.1 request (upgrades allowed).
pub(crate) async fn send(
    tls: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("dial tcp {addr}: i/o timeout"))?
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let server_name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls handshake with {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    if let Ok(host) = HeaderValue::from_str(&addr.to_string()) {
        headers.insert(header::HOST, host);
    }
    let mut req = hyper::Request::builder().method(method).uri(uri);
    if let Some(h) = req.headers_mut() {
        *h = headers;
    }
    let req = req.body(Body::empty()).map_err(|e| e.to_string())?;
    sender.send_request(req).await.map_err(|e| format!("{addr}: {e}"))
}

/// The router's entry for the three subresources.
pub async fn route(
    State(app): State<Arc<ApiServer>>,
    UrlPath((ns, name, sub)): UrlPath<(String, String, String)>,
    req: Request,
) -> Response {
    let kind = match sub.as_str() {
        "log" => Stream::Log,
        "exec" => Stream::Exec,
        "portforward" => Stream::PortForward,
        _ => return super::dispatch_request(app, req).await,
    };
    handle(app, kind, ns, name, req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(q: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    #[test]
    fn renames_exec_and_port_forward_parameters() {
        let q = pairs(
            "command=sh&command=-c&command=exit%203&container=c&stdin=true&stdout=true&stderr=false&tty=true",
        );
        assert_eq!(
            node_query(Stream::Exec, &q),
            "command=sh&command=-c&command=exit+3&input=1&output=1&tty=1"
        );
        assert_eq!(node_query(Stream::PortForward, &pairs("ports=80")), "port=80");
        assert_eq!(
            node_query(Stream::Log, &pairs("container=c&follow=true&tailLines=1")),
            "follow=true&tailLines=1"
        );
    }

    #[test]
    fn picks_containers_like_kube_apiserver() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}]}});
        assert_eq!(pick_container(&pod, Some("b")), Ok("b".into()));
        assert_eq!(pick_container(&pod, Some("i")), Ok("i".into()));
        assert_eq!(pick_container(&pod, Some("x")), Err("container x is not valid for pod p".into()));
        assert_eq!(
            pick_container(&pod, None),
            Err("a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]".into())
        );
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, None), Ok("a".into()));
    }

    #[test]
    fn finds_the_kubelet_endpoint() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"},
            {"type": "InternalIP", "address": "127.0.0.1"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 4321}}}});
        assert_eq!(kubelet_address(&node), Some("127.0.0.1:4321".parse().unwrap()));
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}});
        assert_eq!(kubelet_address(&node), Some("10.0.0.5:10250".parse().unwrap()));
        assert_eq!(kubelet_address(&json!({})), None);
    }
}
