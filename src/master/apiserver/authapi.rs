//! The authentication.k8s.io and authorization.k8s.io endpoints clients call about themselves:
//! TokenRequest (`serviceaccounts/<n>/token`, what `kubectl create token` and nodes use),
//! SelfSubjectAccessReview (`kubectl auth can-i`), SelfSubjectRulesReview (`kubectl auth can-i
//! --list`) and SelfSubjectReview (`kubectl auth whoami`); plus the check that a ServiceAccount
//! token's objects still exist.

use super::ApiServer;
use super::authz::{self, Decision, RegistryGraph, RequestAttributes, ResourceAttributes, UserInfo};
use super::rbac;
use super::resources;
use super::satoken::{self, Claims, ObjectRef, TokenSpec};
use super::status::ApiStatus;
use crate::api::{meta, time};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};
use serde_json::{Value, json};

fn decode<T: serde::de::DeserializeOwned>(kind: &str, body: &Value) -> Result<T, ApiStatus> {
    serde_json::from_value(body.clone()).map_err(|e| {
        ApiStatus::bad_request(format!("{kind} in version \"v1\" cannot be handled as a {kind}: {e}"))
    })
}

fn token_invalid(field: &str, value: &Value, detail: &str) -> ApiStatus {
    let mut s = ApiStatus::bad_request("");
    s.code = 422;
    s.reason = "Invalid";
    s.message = format!(
        "TokenRequest.authentication.k8s.io \"\" is invalid: {field}: Invalid value: {value}: {detail}"
    );
    s.details = Some(json!({"group": "authentication.k8s.io", "kind": "TokenRequest", "name": "",
        "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {detail}"), "field": field}]}));
    s
}

/// `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`.
pub async fn token_request(
    app: &ApiServer,
    user: &UserInfo,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<Value, ApiStatus> {
    let issuer = app.auth.tokens.as_ref().ok_or_else(ApiStatus::no_route)?;
    let mut req: TokenRequest = decode("TokenRequest", body)?;
    let reg = &app.registry;
    let sa_r = resources::find("", "v1", "serviceaccounts").expect("serviceaccounts");
    let sa = reg.get(sa_r, ns, name).await?;
    let secs = req.spec.expiration_seconds.unwrap_or(satoken::DEFAULT_EXPIRATION);
    if secs < satoken::MIN_EXPIRATION {
        return Err(token_invalid(
            "spec.expirationSeconds",
            &json!(secs),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if secs > 1 << 32 {
        return Err(token_invalid(
            "spec.expirationSeconds",
            &json!(secs),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut spec = TokenSpec {
        namespace: ns.into(),
        service_account: ObjectRef { name: name.into(), uid: meta::uid(&sa).into() },
        audiences: req.spec.audiences.clone(),
        expiration_seconds: secs,
        ..Default::default()
    };
    let node_user = user.node_name();
    match &req.spec.bound_object_ref {
        None if node_user.is_some() => {
            return Err(ApiStatus::forbidden(sa_r, name, "node requested token not bound to a pod"));
        }
        None => {}
        Some(b) => {
            let kind = b.kind.as_deref().unwrap_or("");
            let bname = b.name.as_deref().unwrap_or("");
            let (r, obj_ns) = match kind {
                "Pod" => (resources::find("", "v1", "pods").expect("pods"), ns),
                "Secret" => (resources::find("", "v1", "secrets").expect("secrets"), ns),
                "Node" => (resources::find("", "v1", "nodes").expect("nodes"), ""),
                other => {
                    return Err(ApiStatus::bad_request(format!(
                        "cannot bind token for object of kind {other:?}"
                    )));
                }
            };
            if node_user.is_some() && kind != "Pod" {
                return Err(ApiStatus::forbidden(sa_r, name, "node requested token not bound to a pod"));
            }
            let obj = reg.get(r, obj_ns, bname).await?;
            let uid = meta::uid(&obj).to_string();
            if let Some(want) = b.uid.as_deref().filter(|u| !u.is_empty())
                && want != uid
            {
                return Err(ApiStatus::conflict_raw(format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                )));
            }
            let oref = ObjectRef { name: bname.into(), uid };
            match kind {
                "Pod" => {
                    if authz::pod_service_account(&obj) != name {
                        return Err(ApiStatus::bad_request(format!(
                            "cannot bind token to pod {bname:?}: it runs as service account {:?}, not {name:?}",
                            authz::pod_service_account(&obj)
                        )));
                    }
                    let pod_node = meta::str_at(&obj, "/spec/nodeName").unwrap_or("");
                    if let Some(n) = node_user
                        && n != pod_node
                    {
                        return Err(ApiStatus::forbidden(
                            sa_r,
                            name,
                            &format!(
                                "node requested token bound to a pod scheduled on a different node ({pod_node:?})"
                            ),
                        ));
                    }
                    if !pod_node.is_empty() {
                        let nodes = resources::find("", "v1", "nodes").expect("nodes");
                        if let Ok(node) = reg.get(nodes, "", pod_node).await {
                            spec.node =
                                Some(ObjectRef { name: pod_node.into(), uid: meta::uid(&node).into() });
                        }
                    }
                    spec.pod = Some(oref);
                }
                "Secret" => spec.secret = Some(oref),
                _ => spec.node = Some(oref),
            }
        }
    }
    let (token, exp) =
        issuer.issue(&spec, satoken::unix_now()).map_err(|e| ApiStatus::internal(e.to_string()))?;
    req.spec.expiration_seconds = Some(secs);
    if req.spec.audiences.is_empty() {
        req.spec.audiences = issuer.api_audiences().to_vec();
    }
    let mut out = serde_json::to_value(&req).map_err(|e| ApiStatus::internal(e.to_string()))?;
    out["apiVersion"] = json!("authentication.k8s.io/v1");
    out["kind"] = json!("TokenRequest");
    out["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": time::now_rfc3339()});
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp.max(0) as u64);
    out["status"] = json!({"token": token, "expirationTimestamp": time::format_rfc3339(when)});
    Ok(out)
}

/// Checks that a token's ServiceAccount (and the Pod, Secret or Node it is bound to) still exists
/// with the uid in the token; refusals are 401 as kube-apiserver's.
pub async fn check_token_objects(app: &ApiServer, claims: &Claims) -> Result<UserInfo, ApiStatus> {
    let invalid = || ApiStatus::unauthorized_msg("service account token has been invalidated");
    let k = &claims.kubernetes;
    let reg = &app.registry;
    let mut wanted = vec![("serviceaccounts", &k.serviceaccount)];
    if let Some(p) = &k.pod {
        wanted.push(("pods", p));
    }
    if let Some(s) = &k.secret {
        wanted.push(("secrets", s));
    }
    for (plural, want) in wanted {
        let r = resources::find("", "v1", plural).expect("served");
        match reg.get(r, &k.namespace, &want.name).await {
            Ok(obj) if meta::uid(&obj) == want.uid => {}
            Ok(_) => return Err(invalid()),
            Err(e) if e.code == 404 => return Err(invalid()),
            Err(e) => return Err(e),
        }
    }
    Ok(claims.user())
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
pub async fn self_subject_access_review(
    app: &ApiServer,
    user: &UserInfo,
    body: &Value,
) -> Result<Value, ApiStatus> {
    let review: SelfSubjectAccessReview = decode("SelfSubjectAccessReview", body)?;
    let attrs = match (&review.spec.resource_attributes, &review.spec.non_resource_attributes) {
        (Some(ra), _) => RequestAttributes {
            verb: ra.verb.clone().unwrap_or_default(),
            resource: Some(ResourceAttributes {
                group: ra.group.clone().unwrap_or_default(),
                resource: ra.resource.clone().unwrap_or_default(),
                subresource: ra.subresource.clone().unwrap_or_default(),
                namespace: ra.namespace.clone().unwrap_or_default(),
                name: ra.name.clone().unwrap_or_default(),
                ..Default::default()
            }),
            path: String::new(),
        },
        (None, Some(nra)) => RequestAttributes {
            verb: nra.verb.clone().unwrap_or_default(),
            resource: None,
            path: nra.path.clone().unwrap_or_default(),
        },
        (None, None) => {
            return Err(invalid_review(
                "SelfSubjectAccessReview",
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
    };
    let (allowed, reason) = match authz::authorize(user, &attrs, &RegistryGraph(&app.registry)).await {
        Decision::Allow => (true, String::new()),
        Decision::Deny(reason) => (false, reason),
    };
    let mut out = serde_json::to_value(&review).map_err(|e| ApiStatus::internal(e.to_string()))?;
    out["apiVersion"] = json!("authorization.k8s.io/v1");
    out["kind"] = json!("SelfSubjectAccessReview");
    out["metadata"] = json!({"creationTimestamp": null});
    out["status"] = json!({"allowed": allowed});
    if !reason.is_empty() {
        out["status"]["reason"] = json!(reason);
    }
    Ok(out)
}

fn invalid_review(kind: &str, field: &str, detail: &str) -> ApiStatus {
    let mut s = ApiStatus::bad_request("");
    s.code = 422;
    s.reason = "Invalid";
    s.message =
        format!("{kind}.authorization.k8s.io \"\" is invalid: {field}: Invalid value: \"null\": {detail}");
    s
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews`: the RBAC rules that apply in
/// the namespace; incomplete for nodes (their rules are the node authorizer's, not listable).
pub async fn self_subject_rules_review(
    app: &ApiServer,
    user: &UserInfo,
    body: &Value,
) -> Result<Value, ApiStatus> {
    let review: SelfSubjectRulesReview = decode("SelfSubjectRulesReview", body)?;
    let ns = review.spec.namespace.clone().unwrap_or_default();
    let (rules, mut errors) = rbac::rules_for(user, &ns, &RegistryGraph(&app.registry)).await;
    if user.node_name().is_some() {
        errors.push("node authorizer does not support user rule resolution".into());
    }
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in &rules {
        if r.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty()) {
            non_resource_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        } else {
            let mut rr = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if let Some(n) = r.resource_names.as_ref().filter(|n| !n.is_empty()) {
                rr["resourceNames"] = json!(n);
            }
            resource_rules.push(rr);
        }
    }
    let mut status = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
        "incomplete": !errors.is_empty()});
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    Ok(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
        "metadata": {"creationTimestamp": null}, "spec": {"namespace": ns}, "status": status}))
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth whoami`).
pub fn self_subject_review(user: &UserInfo) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": user.name, "groups": user.groups}}})
}
