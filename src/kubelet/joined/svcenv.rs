//! The Service environment the kubelet gives every container (`<SVC>_SERVICE_HOST`, `<SVC>_PORT_…`,
//! Docker-links style): the Services of the pod's namespace when `enableServiceLinks` is not false,
//! and always the `kubernetes` Service of `default`. A container's own `env` wins over these.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Pod, Service};

fn env_name(service: &str) -> String {
    service.to_uppercase().replace('-', "_")
}

fn vars_of(svc: &Service, out: &mut BTreeMap<String, String>) {
    let Some(spec) = svc.spec.as_ref() else { return };
    let ip = spec.cluster_ip.as_deref().unwrap_or("");
    if ip.is_empty() || ip == "None" {
        return;
    }
    let name = env_name(svc.metadata.name.as_deref().unwrap_or(""));
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    let Some(first) = ports.first() else { return };
    out.insert(format!("{name}_SERVICE_HOST"), ip.to_string());
    out.insert(format!("{name}_SERVICE_PORT"), first.port.to_string());
    for p in ports {
        if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.insert(format!("{name}_SERVICE_PORT_{}", env_name(port_name)), p.port.to_string());
        }
    }
    let proto =
        |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
    out.insert(format!("{name}_PORT"), format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port));
    for p in ports {
        let (upper, lower) = (proto(p).to_uppercase(), proto(p).to_lowercase());
        let prefix = format!("{name}_PORT_{}_{upper}", p.port);
        out.insert(prefix.clone(), format!("{lower}://{ip}:{}", p.port));
        out.insert(format!("{prefix}_PROTO"), lower);
        out.insert(format!("{prefix}_PORT"), p.port.to_string());
        out.insert(format!("{prefix}_ADDR"), ip.to_string());
    }
}

/// The Service variables for a pod in `namespace` (pure), sorted by name.
pub fn service_env<S: Borrow<Service>>(services: &[S], namespace: &str, links: bool) -> Vec<EnvVar> {
    let mut vars = BTreeMap::new();
    for svc in services {
        let svc: &Service = svc.borrow();
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let master = ns == "default" && svc.metadata.name.as_deref() == Some("kubernetes");
        if (links && ns == namespace) || master {
            vars_of(svc, &mut vars);
        }
    }
    vars.into_iter().map(|(name, value)| EnvVar { name, value: Some(value), value_from: None }).collect()
}

/// `pod` with the Service variables added in front of each container's own `env` (which wins).
pub fn with_service_env<S: Borrow<Service>>(pod: &Pod, services: &[S]) -> Pod {
    let mut pod = pod.clone();
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let Some(spec) = pod.spec.as_mut() else { return pod };
    let vars = service_env(services, &namespace, spec.enable_service_links != Some(false));
    if vars.is_empty() {
        return pod;
    }
    let containers = spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut());
    for c in containers {
        let own = c.env.take().unwrap_or_default();
        let mut env: Vec<EnvVar> =
            vars.iter().filter(|v| !own.iter().any(|o| o.name == v.name)).cloned().collect();
        env.extend(own);
        c.env = Some(env);
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| ServicePort {
                            name: n.map(String::from),
                            port: *p,
                            protocol: Some(proto.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn get<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
        env.iter().find(|e| e.name == name).and_then(|e| e.value.as_deref())
    }

    #[test]
    fn docker_links_variables_as_the_kubelet_sets_them() {
        let services = [
            svc("default", "kubernetes", "10.96.0.1", &[(Some("https"), 443, "TCP")]),
            svc("web", "redis-primary", "10.96.0.20", &[(None, 6379, "TCP"), (Some("metrics"), 9121, "UDP")]),
            svc("web", "headless", "None", &[(None, 80, "TCP")]),
            svc("other", "db", "10.96.0.30", &[(None, 5432, "TCP")]),
        ];
        let env = service_env(&services, "web", true);
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get(&env, "REDIS_PRIMARY_SERVICE_HOST"), Some("10.96.0.20"));
        assert_eq!(get(&env, "REDIS_PRIMARY_SERVICE_PORT"), Some("6379"));
        assert_eq!(get(&env, "REDIS_PRIMARY_SERVICE_PORT_METRICS"), Some("9121"));
        assert_eq!(get(&env, "REDIS_PRIMARY_PORT"), Some("tcp://10.96.0.20:6379"));
        assert_eq!(get(&env, "REDIS_PRIMARY_PORT_9121_UDP"), Some("udp://10.96.0.20:9121"));
        assert_eq!(get(&env, "REDIS_PRIMARY_PORT_9121_UDP_PROTO"), Some("udp"));
        assert_eq!(get(&env, "REDIS_PRIMARY_PORT_6379_TCP_ADDR"), Some("10.96.0.20"));
        assert!(get(&env, "HEADLESS_SERVICE_HOST").is_none() && get(&env, "DB_SERVICE_HOST").is_none());
        // enableServiceLinks: false keeps only the API server's.
        let env = service_env(&services, "web", false);
        assert!(env.iter().all(|e| e.name.starts_with("KUBERNETES_")), "{env:?}");

        // A container's own variable wins.
        let pod = Pod {
            metadata: ObjectMeta { namespace: Some("web".into()), ..Default::default() },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    env: Some(vec![EnvVar {
                        name: "REDIS_PRIMARY_SERVICE_HOST".into(),
                        value: Some("mine".into()),
                        value_from: None,
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let env = with_service_env(&pod, &services).spec.unwrap().containers[0].env.clone().unwrap();
        assert_eq!(env.iter().filter(|e| e.name == "REDIS_PRIMARY_SERVICE_HOST").count(), 1);
        assert_eq!(get(&env, "REDIS_PRIMARY_SERVICE_HOST"), Some("mine"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT"), Some("443"));
    }
}
