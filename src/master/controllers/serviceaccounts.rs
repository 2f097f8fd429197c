//! The serviceaccounts controller and the root-ca-cert-publisher of kube-controller-manager, in
//! one loop: every namespace that is not terminating has a `default` ServiceAccount and a
//! `kube-root-ca.crt` ConfigMap holding the cluster CA under `ca.crt` (what pods' projected
//! `kube-api-access-*` volumes mount).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::runner::{Trigger, run_loop};
use crate::master::client::{ApiError, ClusterApi, is_terminating};

/// The ConfigMap the publisher writes into every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal \
     endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across \
     distributions of Kubernetes clusters.";

/// What to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreateServiceAccount { namespace: String },
    CreateRootCa(ConfigMap),
    UpdateRootCa(ConfigMap),
}

fn root_ca(namespace: &str, ca: &str, base: Option<&ConfigMap>) -> ConfigMap {
    let mut cm = base.cloned().unwrap_or_else(|| ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CA_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        ..Default::default()
    });
    cm.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert("kubernetes.io/description".into(), DESCRIPTION.into());
    cm.data = Some(BTreeMap::from([("ca.crt".to_string(), ca.to_string())]));
    cm.binary_data = None;
    cm
}

/// The writes that bring every live namespace to a `default` ServiceAccount and (with a CA) an
/// up-to-date `kube-root-ca.crt`.
pub fn reconcile(
    namespaces: &[Namespace],
    accounts: &[ServiceAccount],
    config_maps: &[ConfigMap],
    ca: Option<&str>,
) -> Vec<Action> {
    let mut out = Vec::new();
    for ns in namespaces.iter().filter(|n| !is_terminating(&n.metadata)) {
        let Some(name) = ns.metadata.name.as_deref() else { continue };
        let in_ns =
            |m: &ObjectMeta, n: &str| m.namespace.as_deref() == Some(name) && m.name.as_deref() == Some(n);
        if !accounts.iter().any(|a| in_ns(&a.metadata, "default")) {
            out.push(Action::CreateServiceAccount { namespace: name.into() });
        }
        let Some(ca) = ca else { continue };
        match config_maps.iter().find(|c| in_ns(&c.metadata, ROOT_CA_CONFIGMAP)) {
            None => out.push(Action::CreateRootCa(root_ca(name, ca, None))),
            Some(cm) => {
                let want = root_ca(name, ca, Some(cm));
                if want.data != cm.data || want.metadata.annotations != cm.metadata.annotations {
                    out.push(Action::UpdateRootCa(want));
                }
            }
        }
    }
    out
}

async fn sync<C: ClusterApi>(client: &Arc<C>, ca: Option<&str>) -> Result<(), ApiError> {
    let namespaces = client.list::<Namespace>(None).await?.items;
    let accounts = client.list::<ServiceAccount>(None).await?.items;
    // One read per namespace, not a list of every ConfigMap in the cluster: ConfigMaps are many
    // and written often, and only one name matters here.
    let mut config_maps = Vec::new();
    if ca.is_some() {
        for ns in namespaces.iter().filter(|n| !is_terminating(&n.metadata)) {
            let ns = ns.metadata.name.as_deref();
            match client.get::<ConfigMap>(ns, ROOT_CA_CONFIGMAP).await {
                Ok(cm) => config_maps.push(cm),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    for action in reconcile(&namespaces, &accounts, &config_maps, ca) {
        let result = match action {
            Action::CreateServiceAccount { namespace } => {
                let sa = ServiceAccount {
                    metadata: ObjectMeta {
                        name: Some("default".into()),
                        namespace: Some(namespace),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                client.create(&sa).await.map(drop)
            }
            Action::CreateRootCa(cm) => client.create(&cm).await.map(drop),
            Action::UpdateRootCa(cm) => client.update(&cm).await.map(drop),
        };
        match result {
            // A namespace being deleted meanwhile, or a concurrent writer: the next pass sees it.
            Err(e) if e.is_already_exists() || e.is_conflict() || matches!(e, ApiError::Forbidden { .. }) => {
            }
            Err(ApiError::NotFound { .. }) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Runs the loop; `ca` is the cluster CA (PEM) to publish, `None` in plain-HTTP mode. Woken by
/// Namespace and ServiceAccount changes; a changed or deleted `kube-root-ca.crt` is repaired by the
/// periodic pass (watching every ConfigMap write would cost a pass per write).
pub async fn run<C: ClusterApi>(client: Arc<C>, ca: Option<String>) {
    let trigger =
        Trigger::default().watch::<Namespace, C>(&client).await.watch::<ServiceAccount, C>(&client).await;
    run_loop("serviceaccounts", trigger, Duration::from_secs(30), || sync(&client, ca.as_deref())).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::client::memory::MemoryCluster;

    fn ns(name: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn plans_accounts_and_ca_per_live_namespace() {
        let mut gone = ns("gone");
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::chrono::Utc::now()));
        let have = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some("a".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let stale = root_ca("a", "OLD", None);
        let actions = reconcile(&[ns("a"), ns("b"), gone], &[have], &[stale], Some("NEW"));
        assert_eq!(actions.len(), 3, "{actions:?}");
        assert!(
            matches!(&actions[0], Action::UpdateRootCa(cm) if cm.data.as_ref().unwrap()["ca.crt"] == "NEW")
        );
        assert_eq!(actions[1], Action::CreateServiceAccount { namespace: "b".into() });
        assert!(
            matches!(&actions[2], Action::CreateRootCa(cm) if cm.metadata.namespace.as_deref() == Some("b"))
        );
        // Without a CA only the accounts.
        assert_eq!(
            reconcile(&[ns("b")], &[], &[], None),
            vec![Action::CreateServiceAccount { namespace: "b".into() }]
        );
    }

    #[tokio::test]
    async fn sync_converges() {
        let client = Arc::new(MemoryCluster::default());
        client.create(&ns("team")).await.unwrap();
        sync(&client, Some("PEM")).await.unwrap();
        let sa: ServiceAccount = client.get(Some("team"), "default").await.unwrap();
        assert_eq!(sa.metadata.name.as_deref(), Some("default"));
        let cm: ConfigMap = client.get(Some("team"), ROOT_CA_CONFIGMAP).await.unwrap();
        assert_eq!(cm.data.unwrap()["ca.crt"], "PEM");
        sync(&client, Some("PEM")).await.unwrap();
    }
}
