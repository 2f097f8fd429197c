//! The Kubernetes-compatible HTTP API server (axum): discovery, OpenAPI, CRUD, watch, patch,
//! Table output, subresources and `Status` errors over the [`registry::Registry`].

pub mod alloc;
pub mod auth;
pub mod authapi;
pub mod authz;
pub mod builtin;
pub mod cluster;
pub mod discovery;
pub mod health;
pub mod metricsapi;
pub mod namespaces;
pub mod nodecert;
pub mod openapi;
pub mod protobuf;
pub mod proxy;
pub mod rbac;
pub mod registry;
pub mod resources;
pub mod satoken;
pub mod serve;
pub mod status;
pub mod table;
pub mod watchcache;

pub use auth::Auth;

use crate::api::meta;
use crate::api::selectors::{FieldSelector, LabelSelector};
use auth::{Authenticated, PeerIdentity};
use authz::{Decision, RegistryGraph};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use registry::{DeleteOptions, FieldValidation, Part, PatchType, Registry, Selectors, WriteOptions};
use resources::ResourceInfo;
use serde_json::{Value, json};
use status::ApiStatus;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Shared server state.
pub struct ApiServer {
    pub registry: Arc<Registry>,
    pub auth: Auth,
    /// Signing node certificates (`None` in plain-HTTP mode, which has no CA).
    pub node_join: Option<nodecert::NodeJoin>,
    /// TLS client configuration for dialling nodes (`tls::kubelet_client_config`): pods' log,
    /// exec and port-forward are proxied to their node with it; `None` answers them with 502.
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK (kube-apiserver: 1 min).
    pub bookmark_interval: Duration,
}

/// kube-apiserver's bookmark frequency.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// The axum router serving the whole API.
pub fn router(state: Arc<ApiServer>) -> Router {
    Router::new()
        .route("/api/v1/namespaces/{ns}/pods/{name}/{sub}", axum::routing::any(proxy::route))
        .fallback(dispatch)
        .layer(axum::middleware::from_fn(record_request))
        .with_state(state)
}

/// Records every request in the `apiserver_request_*` metrics; watches and streams are counted
/// in `apiserver_longrunning_requests` until their body ends.
async fn record_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let start = std::time::Instant::now();
    let uri = req.uri();
    let query = uri.query().unwrap_or("");
    let (mut watch, mut dry_run) = (false, false);
    if !query.is_empty() {
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "watch" => watch = v == "true" || v == "1",
                "dryRun" => dry_run = v == "All",
                _ => {}
            }
        }
    }
    let apply = is_apply_patch(req.headers());
    let info = crate::master::metrics::request_info(
        req.method().as_str(),
        uri.path(),
        watch,
        dry_run,
        apply,
        |g, v, r| resources::find(g, v, r).is_some() || metricsapi::served(g, v, r),
    );
    let m = crate::master::metrics::global();
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let in_flight = m.in_flight(mutating);
    let resp = next.run(req).await;
    drop(in_flight);
    m.observe_request(&info, resp.status().as_u16(), start.elapsed());
    if !info.long_running || resp.status() != StatusCode::OK {
        return resp;
    }
    let guard = m.long_running(info.kind);
    let (parts, body) = resp.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _open = &guard;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// Largest request body read (axum's default for a `Bytes` body).
const BODY_LIMIT: usize = 2 * 1024 * 1024;

async fn dispatch(State(app): State<Arc<ApiServer>>, req: axum::extract::Request) -> Response {
    dispatch_request(app, req).await
}

/// Serves a request that is not a streaming subresource.
pub(crate) async fn dispatch_request(app: Arc<ApiServer>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let peer = parts.extensions.get::<PeerIdentity>().cloned();
    let q: Q = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, format!("reading the request body: {e}")).into_response();
        }
    };
    serve_parts(&app, parts.method, parts.uri, parts.headers, peer, q, body).await
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

type Q = HashMap<String, String>;

async fn serve_parts(
    app: &ApiServer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<PeerIdentity>,
    q: Q,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/');
    if path == "/cacerts" && method == Method::GET {
        return match &app.node_join {
            Some(j) => {
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-pem-file")], j.ca.pem().to_string())
                    .into_response()
            }
            None => ApiStatus::no_route().into_response(),
        };
    }
    let public = matches!(path, "/version" | "/healthz" | "/livez" | "/readyz");
    let mut user = authz::UserInfo::new("system:anonymous", &[rbac::UNAUTHENTICATED]);
    if !public {
        user = match authenticate(app, &headers, peer.as_ref()).await {
            Ok(u) => u,
            Err(_) if path == authz::NODE_CERT_PATH => {
                return ApiStatus::unauthorized_msg("invalid join token").into_response();
            }
            Err(e) => return e.into_response(),
        };
        if let Err(resp) = authorize(app, &user, &method, path, &headers, &q, &body).await {
            return resp;
        }
        if path == authz::NODE_CERT_PATH {
            if method != Method::POST {
                return ApiStatus::method_not_allowed(&format!("{method} {path}")).into_response();
            }
            return match nodecert::handle(app.node_join.as_ref(), &app.registry, &user, &body).await {
                Ok(r) => json_response(StatusCode::OK, &serde_json::to_value(r).unwrap_or_default()),
                Err(e) => e.into_response(),
            };
        }
    }
    if let Some(resp) = health::handle(app, path, uri.query()).await {
        return resp;
    }
    let handled = registry::WARNINGS.scope(Default::default(), async {
        let r = route(app, &user, &method, path, &headers, &q, body).await;
        (r, registry::WARNINGS.with(|w| w.take()))
    });
    let (result, warnings) = handled.await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    for w in warnings {
        let value = format!("299 - {}", serde_json::Value::String(w));
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// Authenticates a request and runs the authorizer on it (streaming subresources, whose bodies
/// are not read here); the error is the response to send.
pub(crate) async fn admit(
    app: &ApiServer,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    peer: Option<&PeerIdentity>,
    q: &Q,
) -> Result<(), Response> {
    let user = authenticate(app, headers, peer).await.map_err(IntoResponse::into_response)?;
    authorize(app, &user, method, path, headers, q, &Bytes::new()).await
}

/// Authenticates a request: [`Auth::authenticate`], then for ServiceAccount tokens the check that
/// their objects still exist. Failures are the 401 to send.
async fn authenticate(
    app: &ApiServer,
    headers: &HeaderMap,
    peer: Option<&PeerIdentity>,
) -> Result<authz::UserInfo, ApiStatus> {
    match app.auth.authenticate(headers, peer) {
        Authenticated::User(user) => Ok(user),
        Authenticated::ServiceAccount(claims) => authapi::check_token_objects(app, &claims)
            .await
            .map_err(|e| if e.code == 401 { ApiStatus::unauthorized() } else { e }),
        _ => Err(ApiStatus::unauthorized()),
    }
}

/// Runs the authorizer unless the user is an administrator; the error is the response to send.
async fn authorize(
    app: &ApiServer,
    user: &authz::UserInfo,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    q: &Q,
    body: &Bytes,
) -> Result<(), Response> {
    if user.in_group(authz::MASTERS) {
        return Ok(());
    }
    let watch = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    let fs = q.get("fieldSelector").map(String::as_str).unwrap_or("");
    let mut attrs =
        authz::request_attributes(method.as_str(), path, fs, watch).map_err(IntoResponse::into_response)?;
    if let Some(r) = attrs.resource.as_mut().filter(|r| r.name.is_empty() && attrs.verb == "create") {
        // A create names its object in the body.
        if let Ok(obj) = decode_body(headers, body) {
            r.name = meta::name(&obj).to_string();
        }
    }
    match authz::authorize(user, &attrs, &RegistryGraph(&app.registry)).await {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(authz::forbidden(user, &attrs, &reason).into_response()),
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn route(
    app: &ApiServer,
    user: &authz::UserInfo,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    q: &Q,
    body: Bytes,
) -> Result<Response, ApiStatus> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let accept = header_str(headers, header::ACCEPT);
    let get = method == Method::GET;
    let doc = |d: Option<Value>| d.map(|d| json_response(StatusCode::OK, &d)).ok_or_else(ApiStatus::no_route);
    match segs.as_slice() {
        ["version"] if get => Ok(json_response(StatusCode::OK, &discovery::version())),
        ["metrics"] if get => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, crate::master::metrics::CONTENT_TYPE)],
            crate::master::metrics::global().encode(),
        )
            .into_response()),
        ["apis", metricsapi::GROUP, metricsapi::VERSION, rest @ ..] if get => {
            metricsapi::handle(app, rest, q).await
        }
        ["api"] if get && discovery::wants_aggregated(accept) => Ok(aggregated(discovery::aggregated(true))),
        ["api"] if get => {
            let host = header_str(headers, header::HOST);
            Ok(json_response(StatusCode::OK, &discovery::api_versions(host)))
        }
        ["apis"] if get && discovery::wants_aggregated(accept) => {
            Ok(aggregated(discovery::aggregated(false)))
        }
        ["apis"] if get => Ok(json_response(StatusCode::OK, &discovery::api_group_list())),
        ["apis", g] if get => doc(discovery::api_group(g)),
        ["api", v] if get => doc(discovery::resource_list("", v)),
        ["apis", g, v] if get => doc(discovery::resource_list(g, v)),
        ["openapi", "v3"] if get => Ok(json_response(StatusCode::OK, &openapi::index())),
        ["openapi", "v3", "api", v] if get => openapi_doc(openapi::document("", v)),
        ["openapi", "v3", "apis", g, v] if get => openapi_doc(openapi::document(g, v)),
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] if *method == Method::POST => {
            let review =
                authapi::self_subject_access_review(app, user, &decode_body(headers, &body)?).await?;
            Ok(json_response(StatusCode::CREATED, &review))
        }
        ["apis", "authorization.k8s.io", "v1", "selfsubjectrulesreviews"] if *method == Method::POST => {
            let review = authapi::self_subject_rules_review(app, user, &decode_body(headers, &body)?).await?;
            Ok(json_response(StatusCode::CREATED, &review))
        }
        ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"] if *method == Method::POST => {
            Ok(json_response(StatusCode::CREATED, &authapi::self_subject_review(user)))
        }
        ["api", v, rest @ ..] => resource_request(app, user, method, "", v, rest, headers, q, body).await,
        ["apis", g, v, rest @ ..] => resource_request(app, user, method, g, v, rest, headers, q, body).await,
        _ => Err(ApiStatus::no_route()),
    }
}

fn openapi_doc(text: Option<&'static str>) -> Result<Response, ApiStatus> {
    let text = text.ok_or_else(ApiStatus::no_route)?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text).into_response())
}

fn aggregated(v: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, discovery::AGGREGATED_CT)], v.to_string()).into_response()
}

/// A request for one resource path, parsed.
struct Target<'a> {
    r: &'static ResourceInfo,
    ns: Option<&'a str>,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn parse_target<'a>(group: &str, version: &str, rest: &[&'a str]) -> Result<Target<'a>, ApiStatus> {
    let find = |p: &str| resources::find(group, version, p);
    if rest.len() >= 3 && rest[0] == "namespaces" {
        if let Some(r) = find(rest[2]).filter(|r| r.namespaced) {
            if rest.len() > 5 {
                return Err(ApiStatus::no_route());
            }
            return Ok(Target {
                r,
                ns: Some(rest[1]),
                name: rest.get(3).copied(),
                sub: rest.get(4).copied(),
            });
        }
        if rest[2] == "bindings" && rest.len() == 3 {
            let r = find("pods").ok_or_else(ApiStatus::no_route)?;
            return Ok(Target { r, ns: Some(rest[1]), name: None, sub: Some("bindings") });
        }
    }
    let r = rest.first().and_then(|p| find(p)).ok_or_else(ApiStatus::no_route)?;
    if rest.len() > 3 {
        return Err(ApiStatus::no_route());
    }
    Ok(Target { r, ns: None, name: rest.get(1).copied(), sub: rest.get(2).copied() })
}

/// The collection path of a named object's path (`…/configmaps/x` → `…/configmaps`).
fn path_without_name(rest: &[&str], group: &str, version: &str) -> String {
    let base = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    let n = rest.len().saturating_sub(1);
    format!("{base}/{}", rest[..n].join("/"))
}

fn decode_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiStatus> {
    let ct = header_str(headers, header::CONTENT_TYPE);
    if ct.contains("yaml") {
        return serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiStatus::bad_request(format!("invalid YAML body: {e}")));
    }
    if ct.contains("protobuf") {
        return protobuf::decode(body);
    }
    serde_json::from_slice(body).map_err(|e| ApiStatus::bad_request(format!("invalid JSON body: {e}")))
}

fn write_options(q: &Q, headers: &HeaderMap) -> WriteOptions {
    WriteOptions {
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        validation: FieldValidation::from_query(q.get("fieldValidation").map(String::as_str)),
        subresource: false,
        manager: Some(update_manager(q, headers).into()),
        applied: false,
    }
}

/// The manager of a non-apply write: `fieldManager`, else the User-Agent up to its first `/`
/// (kube-apiserver's managerOrUserAgent), at most 128 characters.
fn update_manager(q: &Q, headers: &HeaderMap) -> String {
    let m = match q.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.as_str(),
        None => header_str(headers, header::USER_AGENT).split('/').next().unwrap_or(""),
    };
    m.chars().take(128).collect()
}

/// `PatchOptions.meta.k8s.io "" is invalid` (422) with one cause.
fn patch_options_invalid(field: &str, reason: &str, detail: &str) -> ApiStatus {
    let mut s = ApiStatus::bad_request("");
    s.code = 422;
    s.reason = "Invalid";
    s.message = format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {detail}");
    s.details = Some(json!({"group": "meta.k8s.io", "kind": "PatchOptions", "name": "",
        "causes": [{"reason": reason, "message": detail, "field": field}]}));
    s
}

/// The options of a server-side apply from the query, checked as kube-apiserver does.
fn apply_options(q: &Q) -> Result<registry::ApplyOptions, ApiStatus> {
    let manager = q.get("fieldManager").cloned().unwrap_or_default();
    if manager.is_empty() {
        return Err(patch_options_invalid(
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch",
        ));
    }
    if manager.chars().count() > 128 {
        return Err(patch_options_invalid(
            "fieldManager",
            "FieldValueTooLong",
            "Too long: may not be more than 128 bytes",
        ));
    }
    let force = match q.get("force").map(String::as_str) {
        None | Some("false" | "0" | "") => false,
        Some("true" | "1") => true,
        Some(v) => return Err(ApiStatus::bad_request(format!("invalid force value {v:?}"))),
    };
    Ok(registry::ApplyOptions { manager, force })
}

/// True for `application/apply-patch+yaml` (kubectl sends JSON in it; YAML is a superset).
fn is_apply_patch(headers: &HeaderMap) -> bool {
    let ct = header_str(headers, header::CONTENT_TYPE);
    ct.split(';').next().unwrap_or("").trim() == "application/apply-patch+yaml"
}

fn selectors(q: &Q) -> Result<Selectors, ApiStatus> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiStatus::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiStatus::bad_request(e.to_string()))?;
    Ok(Selectors { labels, fields })
}

/// What kube-apiserver answers an immediate delete with, except for the kinds whose storage
/// returns the deleted object (Pods, Services, ServiceAccounts: their OpenAPI delete answers the
/// kind): a `Success` Status naming it.
fn deleted_status(r: &ResourceInfo, obj: &Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": meta::name(obj), "group": r.group, "kind": r.plural, "uid": meta::uid(obj)}})
}

/// `obj` (stored as its storage version) in the API version of `r`: Deployments read or written
/// through `extensions/v1beta1` say so, as kube-apiserver answers in the version asked for.
fn served_version(r: &ResourceInfo, mut obj: Value) -> Value {
    if r.group == "extensions" && obj.get("apiVersion").is_some() {
        obj["apiVersion"] = json!(r.api_version());
    }
    obj
}

fn object_response(code: StatusCode, r: &ResourceInfo, obj: Value, accept: &str) -> Response {
    let obj = served_version(r, obj);
    if table::wants_table(accept) {
        let rv = meta::resource_version(&obj).to_string();
        return json_response(code, &table::table(r.storage().kind, &[obj], &rv, true));
    }
    json_response(code, &obj)
}

/// Refuses a write of an RBAC object that would grant permissions its writer does not hold (403, as
/// kube-apiserver's escalation check); `system:masters` hold everything.
async fn no_escalation(
    app: &ApiServer,
    user: &authz::UserInfo,
    r: &ResourceInfo,
    ns: &str,
    obj: &Value,
) -> Result<(), ApiStatus> {
    if r.group != rbac::GROUP || user.in_group(authz::MASTERS) {
        return Ok(());
    }
    match rbac::check_escalation(user, r.kind, ns, obj, &RegistryGraph(&app.registry)).await {
        Ok(()) => Ok(()),
        Err(reason) => Err(ApiStatus::forbidden(r, meta::name(obj), &reason)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn resource_request(
    app: &ApiServer,
    user: &authz::UserInfo,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    headers: &HeaderMap,
    q: &Q,
    body: Bytes,
) -> Result<Response, ApiStatus> {
    let t = parse_target(group, version, rest)?;
    let reg = &app.registry;
    let accept = header_str(headers, header::ACCEPT);
    let ns = t.ns.unwrap_or("");
    let r = t.r;
    if r.namespaced && t.ns.is_none() && (t.name.is_some() || *method != Method::GET) {
        return Err(ApiStatus::no_route());
    }
    match (method.clone(), t.name, t.sub) {
        (Method::GET, None, None) => {
            let sel = selectors(q)?;
            if q.get("watch").is_some_and(|v| v == "true" || v == "1") {
                return watch(app, r, t.ns, q, sel, accept).await;
            }
            let limit = match q.get("limit").map(String::as_str).filter(|v| !v.is_empty()) {
                Some(v) => Some(v.parse::<usize>().map_err(|_| {
                    ApiStatus::bad_request(format!("invalid limit {v:?}: must be a non-negative integer"))
                })?),
                None => None,
            };
            let token = q.get("continue").map(String::as_str).filter(|v| !v.is_empty());
            if token.is_some() && q.get("resourceVersion").is_some_and(|v| !v.is_empty() && v != "0") {
                return Err(ApiStatus::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let page = reg.list_page(r, t.ns, &sel, limit, token).await?;
            let mut list_meta = json!({"resourceVersion": page.revision.to_string()});
            if let Some(c) = &page.continue_token {
                list_meta["continue"] = json!(c);
            }
            if let Some(n) = page.remaining {
                list_meta["remainingItemCount"] = json!(n);
            }
            if table::wants_table(accept) {
                let mut t = table::table(r.storage().kind, &page.items, &page.revision.to_string(), true);
                t["metadata"] = list_meta;
                return Ok(json_response(StatusCode::OK, &t));
            }
            let items: Vec<Value> = page.items.into_iter().map(|o| served_version(r, o)).collect();
            let list = json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(),
                "metadata": list_meta, "items": items});
            Ok(json_response(StatusCode::OK, &list))
        }
        (Method::GET, Some(name), None | Some("status")) => {
            let obj = reg.get(r, ns, name).await?;
            Ok(object_response(StatusCode::OK, r, obj, accept))
        }
        (Method::GET, Some(name), Some("scale")) if r.subresources.contains(&"scale") => {
            let obj = reg.get(r, ns, name).await?;
            Ok(json_response(StatusCode::OK, &scale_of(&obj)))
        }
        (Method::POST, None, None) => {
            let obj = decode_body(headers, &body)?;
            no_escalation(app, user, r, ns, &obj).await?;
            let created = reg.create(r, ns, obj, write_options(q, headers)).await?;
            Ok(object_response(StatusCode::CREATED, r, created, accept))
        }
        (Method::POST, Some(name), Some("token")) if r.kind == "ServiceAccount" => {
            let req = decode_body(headers, &body)?;
            let out = authapi::token_request(app, user, ns, name, &req).await?;
            Ok(json_response(StatusCode::CREATED, &out))
        }
        (Method::POST, name, Some("binding" | "bindings")) if r.kind == "Pod" => {
            let b = decode_body(headers, &body)?;
            let pod = name.map(String::from).unwrap_or_else(|| meta::name(&b).to_string());
            let node = b.pointer("/target/name").and_then(Value::as_str).unwrap_or("");
            if node.is_empty() {
                return Err(ApiStatus::bad_request("binding target.name is required"));
            }
            reg.bind(ns, &pod, node).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}),
            ))
        }
        (Method::PUT, Some(name), Some("finalize")) if r.kind == "Namespace" => {
            let obj = decode_body(headers, &body)?;
            Ok(object_response(StatusCode::OK, r, reg.finalize_namespace(name, &obj).await?, accept))
        }
        (Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let part = if sub.is_some() { Part::Status } else { Part::Main };
            let obj = decode_body(headers, &body)?;
            no_escalation(app, user, r, ns, &obj).await?;
            let updated = reg.update(r, ns, name, obj, part, write_options(q, headers)).await?;
            Ok(object_response(StatusCode::OK, r, updated, accept))
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status"))) if is_apply_patch(headers) => {
            let ao = apply_options(q)?;
            let config: Value = serde_yaml_ng::from_slice(&body)
                .map_err(|e| ApiStatus::bad_request(format!("error decoding YAML: {e}")))?;
            let part = if sub.is_some() { Part::Status } else { Part::Main };
            if !user.in_group(authz::MASTERS) {
                let current = match reg.get(r, ns, name).await {
                    Ok(c) => Some(c),
                    Err(e) if e.code == 404 => None,
                    Err(e) => return Err(e),
                };
                if current.is_none() {
                    // Creating through apply needs `create` as well as `patch`.
                    let collection = path_without_name(rest, group, version);
                    authorize(app, user, &Method::POST, &collection, headers, &HashMap::new(), &body)
                        .await
                        .map_err(|_| {
                        ApiStatus::forbidden(
                            r,
                            name,
                            &format!(
                                "User {:?} cannot create resource {:?} in API group {:?}{}",
                                user.name,
                                r.plural,
                                r.group,
                                if ns.is_empty() {
                                    String::new()
                                } else {
                                    format!(" in the namespace {ns:?}")
                                }
                            ),
                        )
                    })?;
                }
                if r.group == rbac::GROUP {
                    let base = current.unwrap_or_else(|| json!({}));
                    no_escalation(app, user, r, ns, &crate::api::ssa::merge(&base, &config)).await?;
                }
            }
            let (obj, created) = reg.apply(r, ns, name, config, part, &ao, write_options(q, headers)).await?;
            let code = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok(object_response(code, r, obj, accept))
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            if q.contains_key("force") {
                return Err(patch_options_invalid(
                    "force",
                    "FieldValueForbidden",
                    "Forbidden: may not be specified for non-apply patch",
                ));
            }
            let ct = header_str(headers, header::CONTENT_TYPE);
            let ptype = PatchType::from_content_type(ct).ok_or_else(|| ApiStatus::unsupported_media(ct))?;
            let patch: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiStatus::bad_request(format!("invalid patch: {e}")))?;
            let part = if sub.is_some() { Part::Status } else { Part::Main };
            if r.group == rbac::GROUP && !user.in_group(authz::MASTERS) {
                let patched = registry::apply_patch(&reg.get(r, ns, name).await?, ptype, &patch)?;
                no_escalation(app, user, r, ns, &patched).await?;
            }
            let updated = reg.patch(r, ns, name, ptype, &patch, part, write_options(q, headers)).await?;
            Ok(object_response(StatusCode::OK, r, updated, accept))
        }
        (Method::PATCH | Method::PUT, Some(name), Some("scale")) if r.subresources.contains(&"scale") => {
            let current = reg.get(r, ns, name).await?;
            let scale = scale_of(&current);
            let new_scale = if *method == Method::PUT {
                decode_body(headers, &body)?
            } else {
                let ct = header_str(headers, header::CONTENT_TYPE);
                let ptype =
                    PatchType::from_content_type(ct).ok_or_else(|| ApiStatus::unsupported_media(ct))?;
                let patch: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiStatus::bad_request(format!("invalid patch: {e}")))?;
                registry::apply_patch(&scale, ptype, &patch)?
            };
            let replicas = new_scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
            let mut obj = current.clone();
            obj["spec"]["replicas"] = json!(replicas);
            let rv = meta::resource_version(&new_scale);
            if !rv.is_empty() {
                meta::set_str(&mut obj, "resourceVersion", rv);
            }
            let opts = WriteOptions { subresource: true, ..write_options(q, headers) };
            let updated = reg.update(r, ns, name, obj, Part::Main, opts).await?;
            Ok(json_response(StatusCode::OK, &scale_of(&updated)))
        }
        (Method::DELETE, Some(name), None) => {
            let opts = delete_options(headers, &body, q)?;
            let (obj, gone) = reg.delete(r, ns, name, &opts).await?;
            if gone && !matches!(r.storage().kind, "Pod" | "Service" | "ServiceAccount") {
                return Ok(json_response(StatusCode::OK, &deleted_status(r, &obj)));
            }
            Ok(object_response(StatusCode::OK, r, obj, accept))
        }
        (Method::DELETE, None, None) => {
            let opts = delete_options(headers, &body, q)?;
            let (items, rev) = reg.list(r, t.ns, &selectors(q)?).await?;
            let mut deleted = Vec::new();
            for o in items {
                if let Ok((obj, _)) = reg.delete(r, meta::namespace(&o), meta::name(&o), &opts).await {
                    deleted.push(obj);
                }
            }
            let list = json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(),
                "metadata": {"resourceVersion": rev.to_string()}, "items": deleted});
            Ok(json_response(StatusCode::OK, &list))
        }
        (m, _, sub) => Err(ApiStatus::method_not_allowed(&format!(
            "{m} {}{}",
            r.plural,
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

fn delete_options(headers: &HeaderMap, body: &Bytes, q: &Q) -> Result<DeleteOptions, ApiStatus> {
    let b: Value = if body.is_empty() { json!({}) } else { decode_body(headers, body)? };
    let grace = b
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| q.get("gracePeriodSeconds").and_then(|v| v.parse().ok()));
    let propagation = b
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| q.get("propagationPolicy").cloned())
        .or_else(|| match b.get("orphanDependents").and_then(Value::as_bool) {
            Some(true) => Some("Orphan".into()),
            _ => None,
        });
    let dry = b.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All"))
        || q.get("dryRun").is_some_and(|v| v == "All");
    Ok(DeleteOptions {
        propagation,
        grace_period_seconds: grace,
        precondition_uid: b.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from),
        precondition_rv: b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        dry_run: dry,
    })
}

/// The autoscaling/v1 Scale of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| s.to_string_form())
        .unwrap_or_default();
    let md = obj.get("metadata").cloned().unwrap_or(json!({}));
    json!({"kind":"Scale","apiVersion":"autoscaling/v1",
        "metadata": {"name": md.get("name"), "namespace": md.get("namespace"), "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"), "creationTimestamp": md.get("creationTimestamp")},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector}})
}

/// `ListOptions.meta.k8s.io "" is invalid` (422) with one Forbidden field.
fn list_options_invalid(field: &str, detail: &str) -> ApiStatus {
    let mut s = ApiStatus::bad_request("");
    s.code = 422;
    s.reason = "Invalid";
    s.message = format!("ListOptions.meta.k8s.io \"\" is invalid: {field}: Forbidden: {detail}");
    s.details = Some(json!({"group": "meta.k8s.io", "kind": "ListOptions", "name": "",
        "causes": [{"reason": "FieldValueForbidden", "message": format!("Forbidden: {detail}"), "field": field}]}));
    s
}

/// A BOOKMARK event: the watched kind with only `metadata.resourceVersion` (and annotations).
fn bookmark(r: &ResourceInfo, rev: i64, initial_end: bool) -> Bytes {
    let mut md = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let line = json!({"type": "BOOKMARK", "object": {"kind": r.kind, "apiVersion": r.api_version(), "metadata": md}});
    Bytes::from(format!("{line}\n"))
}

/// A watch, or with `sendInitialEvents=true` (`resourceVersionMatch=NotOlderThan`) a streaming
/// list: every current object as ADDED (sorted by namespace/name, as the store keys are), a
/// BOOKMARK annotated `k8s.io/initial-events-end` when bookmarks are allowed, then live events.
/// With `allowWatchBookmarks=true` a BOOKMARK also comes every [`ApiServer::bookmark_interval`].
async fn watch(
    app: &ApiServer,
    r: &'static ResourceInfo,
    ns: Option<&str>,
    q: &Q,
    sel: Selectors,
    accept: &str,
) -> Result<Response, ApiStatus> {
    use std::sync::atomic::{AtomicI64, Ordering};
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let timeout = q.get("timeoutSeconds").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1800);
    let as_table = table::wants_table(accept);
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let send_initial = flag("sendInitialEvents");
    let bookmarks = flag("allowWatchBookmarks") && !as_table;
    let rv_match = q.get("resourceVersionMatch").map(String::as_str).unwrap_or("");
    if q.contains_key("sendInitialEvents") && rv_match != "NotOlderThan" {
        return Err(list_options_invalid(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if !rv_match.is_empty() && !q.contains_key("sendInitialEvents") {
        return Err(list_options_invalid(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let kind = r.storage().kind;
    let last = Arc::new(AtomicI64::new(0));
    let (initial, live_rv): (Vec<Bytes>, String) = if send_initial {
        let (items, rev) = app.registry.list(r, ns, &sel).await?;
        if let Ok(want) = rv.parse::<i64>()
            && want > rev
        {
            let mut e = ApiStatus::internal("");
            e.code = 504;
            e.reason = "Timeout";
            e.message = format!("Too large resource version: {want}, current: {rev}");
            e.details = Some(
                json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
            );
            return Err(e);
        }
        last.store(rev, Ordering::Relaxed);
        let mut lines: Vec<Bytes> = items
            .into_iter()
            .map(|o| Bytes::from(format!("{}\n", json!({"type": "ADDED", "object": served_version(r, o)}))))
            .collect();
        if bookmarks {
            lines.push(bookmark(r, rev, true));
        }
        (lines, rev.to_string())
    } else {
        (Vec::new(), rv.to_string())
    };
    let seen = last.clone();
    let first: std::pin::Pin<Box<dyn futures_util::Stream<Item = Bytes> + Send>> =
        match app.registry.watch_with(r, ns, &live_rv, sel, bookmarks).await {
            Ok(items) => {
                let mut sent_columns = false;
                Box::pin(items.map(move |item| {
                    let line = match item {
                        Ok(it) => {
                            // The watch cache's own BOOKMARKs count too, so ticks never go back.
                            seen.fetch_max(it.revision, Ordering::Relaxed);
                            let obj = if as_table && it.kind != "BOOKMARK" {
                                let t =
                                    table::table(kind, &[it.object], &it.revision.to_string(), !sent_columns);
                                sent_columns = true;
                                t
                            } else {
                                served_version(r, it.object)
                            };
                            json!({"type": it.kind, "object": obj})
                        }
                        Err(e) => json!({"type": "ERROR", "object": e.to_json()}),
                    };
                    Bytes::from(format!("{line}\n"))
                }))
            }
            Err(e) if e.code == 410 => {
                let line = json!({"type": "ERROR", "object": e.to_json()});
                Box::pin(futures_util::stream::once(async move { Bytes::from(format!("{line}\n")) }))
            }
            Err(e) => return Err(e),
        };
    let events = futures_util::stream::iter(initial).chain(first);
    let stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = Bytes> + Send>> = if bookmarks {
        if let Ok(n) = live_rv.parse::<i64>() {
            last.fetch_max(n, Ordering::Relaxed);
        }
        let every = app.bookmark_interval;
        let ticks = futures_util::stream::unfold(
            tokio::time::interval_at(tokio::time::Instant::now() + every, every),
            |mut t| async move {
                t.tick().await;
                Some(((), t))
            },
        )
        // Nothing is known to be current before the first revision is seen.
        .filter_map(move |()| {
            let rev = last.load(Ordering::Relaxed);
            std::future::ready((rev > 0).then(|| bookmark(r, rev, false)))
        });
        // Live events end the stream (an ERROR, or the server closing it); ticks never do.
        Box::pin(
            futures_util::stream::select(
                events.map(Some).chain(futures_util::stream::once(async { None })),
                ticks.map(Some),
            )
            .take_while(|b| std::future::ready(b.is_some()))
            .filter_map(std::future::ready),
        )
    } else {
        Box::pin(events)
    };
    let deadline = tokio::time::sleep(Duration::from_secs(timeout));
    let stream = stream.take_until(deadline).map(Ok::<_, std::convert::Infallible>);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiStatus::internal("building the watch response").into_response()))
}
