//! No Pod field is silently ignored on a node: every field of the Pod types is classified here as
//! honoured, left to the scheduler, harmless on Linux, or not supported by rkube (refused with its
//! path, unless unset or empty). Values the node implements only partly are listed. A test checks
//! these tables against the fields k8s-openapi's types declare, so a field added by a newer
//! Kubernetes version fails the build's tests until it is classified. Pure; runs on the manifest
//! as written (before defaults).

use serde_json::Value;

/// How the node treats one field.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Honoured.
    Yes,
    /// Read by a scheduler or the control plane only; one node has nothing to do with it.
    Scheduler,
    /// Has no effect on what runs here (Windows options, service links nobody reads, in-place
    /// resize hints, the termination message file, the service-account token rkube never mounts).
    Harmless,
    /// Not implemented: refused unless unset, `false`, empty or zero.
    No,
    /// Only these string values are implemented.
    Only(&'static [&'static str]),
    /// An object whose fields follow this table.
    Object(&'static Table),
    /// A list of objects, each following this table.
    Objects(&'static Table),
}

type Table = [(&'static str, Rule)];
use Rule::*;

const POD_SPEC: &Table = &[
    ("activeDeadlineSeconds", No),
    ("affinity", Scheduler),
    ("automountServiceAccountToken", Harmless),
    ("containers", Objects(CONTAINER)),
    ("dnsConfig", Object(DNS_CONFIG)),
    // Without a cluster DNS, ClusterFirst falls back to the node's resolvers, as the kubelet does.
    ("dnsPolicy", Only(&["ClusterFirst", "Default", "ClusterFirstWithHostNet", "None"])),
    ("enableServiceLinks", Harmless),
    ("ephemeralContainers", No),
    ("hostAliases", Objects(HOST_ALIAS)),
    ("hostIPC", Yes),
    ("hostNetwork", Yes),
    ("hostPID", Yes),
    ("hostUsers", Yes),
    ("hostname", Yes),
    ("imagePullSecrets", Yes),
    ("initContainers", Objects(CONTAINER)),
    ("nodeName", Scheduler),
    ("nodeSelector", Scheduler),
    ("os", Object(POD_OS)),
    ("overhead", Scheduler),
    ("preemptionPolicy", Scheduler),
    ("priority", Scheduler),
    ("priorityClassName", Scheduler),
    ("readinessGates", Scheduler),
    ("resourceClaims", No),
    ("resources", No),
    ("restartPolicy", Yes),
    ("runtimeClassName", No),
    ("schedulerName", Scheduler),
    ("schedulingGates", Scheduler),
    ("securityContext", Object(POD_SECURITY_CONTEXT)),
    ("serviceAccount", Harmless),
    ("serviceAccountName", Yes),
    ("setHostnameAsFQDN", No),
    ("shareProcessNamespace", Yes),
    ("subdomain", Yes),
    ("terminationGracePeriodSeconds", Yes),
    ("tolerations", Scheduler),
    ("topologySpreadConstraints", Scheduler),
    ("volumes", Objects(VOLUME)),
];

const DNS_CONFIG: &Table = &[("nameservers", Yes), ("options", Objects(DNS_OPTION)), ("searches", Yes)];

const DNS_OPTION: &Table = &[("name", Yes), ("value", Yes)];

const HOST_ALIAS: &Table = &[("hostnames", Yes), ("ip", Yes)];

const POD_OS: &Table = &[("name", Only(&["linux"]))];

const CONTAINER: &Table = &[
    ("args", Yes),
    ("command", Yes),
    ("env", Yes),
    ("envFrom", Yes),
    ("image", Yes),
    ("imagePullPolicy", Yes),
    ("lifecycle", Object(LIFECYCLE)),
    ("livenessProbe", Object(PROBE)),
    ("name", Yes),
    ("ports", Yes),
    ("readinessProbe", Object(PROBE)),
    ("resizePolicy", Harmless),
    ("resources", Object(RESOURCES)),
    ("restartPolicy", No),
    ("securityContext", Object(SECURITY_CONTEXT)),
    ("startupProbe", Object(PROBE)),
    ("stdin", No),
    ("stdinOnce", No),
    ("terminationMessagePath", Harmless),
    ("terminationMessagePolicy", Harmless),
    ("tty", No),
    ("volumeDevices", No),
    ("volumeMounts", Objects(VOLUME_MOUNT)),
    ("workingDir", Yes),
];

const RESOURCES: &Table = &[("claims", No), ("limits", Yes), ("requests", Yes)];

const SECURITY_CONTEXT: &Table = &[
    ("allowPrivilegeEscalation", Yes),
    ("appArmorProfile", Object(APPARMOR)),
    ("capabilities", Yes),
    ("privileged", Yes),
    ("procMount", Only(&["Default", "Unmasked"])),
    ("readOnlyRootFilesystem", Yes),
    ("runAsGroup", Yes),
    ("runAsNonRoot", Yes),
    ("runAsUser", Yes),
    ("seLinuxOptions", No),
    ("seccompProfile", Yes),
    ("windowsOptions", Harmless),
];

const POD_SECURITY_CONTEXT: &Table = &[
    ("appArmorProfile", Object(APPARMOR)),
    ("fsGroup", No),
    ("fsGroupChangePolicy", No),
    ("runAsGroup", Yes),
    ("runAsNonRoot", Yes),
    ("runAsUser", Yes),
    ("seLinuxChangePolicy", No),
    ("seLinuxOptions", No),
    ("seccompProfile", Yes),
    ("supplementalGroups", Yes),
    ("supplementalGroupsPolicy", Only(&["Merge"])),
    ("sysctls", Yes),
    ("windowsOptions", Harmless),
];

/// rkube has no AppArmor support: only `Unconfined` describes what runs.
const APPARMOR: &Table = &[("localhostProfile", No), ("type", Only(&["Unconfined"]))];

const PROBE: &Table = &[
    ("exec", Yes),
    ("failureThreshold", Yes),
    ("grpc", No),
    ("httpGet", Object(HTTP_GET)),
    ("initialDelaySeconds", Yes),
    ("periodSeconds", Yes),
    ("successThreshold", Yes),
    ("tcpSocket", Yes),
    ("terminationGracePeriodSeconds", No),
    ("timeoutSeconds", Yes),
];

const HTTP_GET: &Table =
    &[("host", Yes), ("httpHeaders", No), ("path", Yes), ("port", Yes), ("scheme", Only(&["HTTP"]))];

const LIFECYCLE: &Table = &[("postStart", Object(HANDLER)), ("preStop", Object(HANDLER))];

const HANDLER: &Table = &[("exec", Yes), ("httpGet", No), ("sleep", No), ("tcpSocket", No)];

const VOLUME_MOUNT: &Table = &[
    ("mountPath", Yes),
    ("mountPropagation", Only(&["None"])),
    ("name", Yes),
    ("readOnly", Yes),
    ("recursiveReadOnly", Only(&["Disabled"])),
    ("subPath", Yes),
    ("subPathExpr", No),
];

/// Volume sources besides these five are refused by `volumes::check` with the list of supported
/// ones (which also checks the sources of projected volumes).
const VOLUME: &Table = &[
    ("name", Yes),
    ("emptyDir", Object(EMPTY_DIR)),
    ("hostPath", Object(HOST_PATH)),
    ("configMap", Yes),
    ("secret", Yes),
    ("projected", Yes),
];

const EMPTY_DIR: &Table = &[("medium", Only(&["", "Memory"])), ("sizeLimit", No)];

const HOST_PATH: &Table =
    &[("path", Yes), ("type", Only(&["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File"]))];

/// Refuses the first field of `pod` (a v1 Pod as JSON) that rkube does not implement, naming it:
/// `spec.runtimeClassName: not supported by rkube`.
pub fn check_pod(pod: &Value) -> Result<(), String> {
    match pod.get("spec") {
        Some(spec) => check(spec, POD_SPEC, "spec"),
        None => Ok(()),
    }
}

fn check(value: &Value, table: &Table, path: &str) -> Result<(), String> {
    let Some(object) = value.as_object() else { return Ok(()) };
    for (key, value) in object {
        // Keys k8s-openapi does not know are refused by strict decoding, with a better message;
        // volume sources other than the four above are refused by the volume check.
        let Some((_, rule)) = table.iter().find(|(name, _)| name == key) else { continue };
        let at = format!("{path}.{key}");
        match *rule {
            Yes | Scheduler | Harmless => {}
            No if is_empty(value) => {}
            No => return Err(format!("{at}: not supported by rkube")),
            Only(values) => {
                if let Some(s) = value.as_str()
                    && !values.contains(&s)
                {
                    let supported: Vec<String> =
                        values.iter().filter(|v| !v.is_empty()).map(|v| format!("{v:?}")).collect();
                    return Err(format!(
                        "{at}: {s:?} is not supported by rkube (supported: {})",
                        supported.join(", ")
                    ));
                }
            }
            Object(inner) => check(value, inner, &at)?,
            Objects(inner) => {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    check(item, inner, &format!("{at}[{i}]"))?;
                }
            }
        }
    }
    Ok(())
}

/// Unset in effect: null, false, zero, "", [] or {}.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeSet;

    use k8s_openapi::api::core::v1 as core;
    use serde::de::{self, Visitor};
    use serde_json::json;

    use super::*;

    /// A deserializer that records the field names a type's `Deserialize` declares and stops.
    struct FieldNames<'a>(&'a Cell<&'static [&'static str]>);

    impl<'de> de::Deserializer<'de> for FieldNames<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    fn fields_of<T: de::DeserializeOwned>() -> BTreeSet<&'static str> {
        let cell = Cell::new(&[][..]);
        let _ = T::deserialize(FieldNames(&cell));
        cell.get().iter().copied().collect()
    }

    fn names(table: &Table) -> BTreeSet<&'static str> {
        table.iter().map(|(name, _)| *name).collect()
    }

    #[test]
    fn every_field_of_the_pod_types_is_classified() {
        let cases: [(&str, BTreeSet<&str>, &Table); 17] = [
            ("PodSpec", fields_of::<core::PodSpec>(), POD_SPEC),
            ("Container", fields_of::<core::Container>(), CONTAINER),
            ("SecurityContext", fields_of::<core::SecurityContext>(), SECURITY_CONTEXT),
            ("PodSecurityContext", fields_of::<core::PodSecurityContext>(), POD_SECURITY_CONTEXT),
            ("AppArmorProfile", fields_of::<core::AppArmorProfile>(), APPARMOR),
            ("Probe", fields_of::<core::Probe>(), PROBE),
            ("HTTPGetAction", fields_of::<core::HTTPGetAction>(), HTTP_GET),
            ("Lifecycle", fields_of::<core::Lifecycle>(), LIFECYCLE),
            ("LifecycleHandler", fields_of::<core::LifecycleHandler>(), HANDLER),
            ("VolumeMount", fields_of::<core::VolumeMount>(), VOLUME_MOUNT),
            ("ResourceRequirements", fields_of::<core::ResourceRequirements>(), RESOURCES),
            ("EmptyDirVolumeSource", fields_of::<core::EmptyDirVolumeSource>(), EMPTY_DIR),
            ("HostPathVolumeSource", fields_of::<core::HostPathVolumeSource>(), HOST_PATH),
            ("HostAlias", fields_of::<core::HostAlias>(), HOST_ALIAS),
            ("PodDNSConfig", fields_of::<core::PodDNSConfig>(), DNS_CONFIG),
            ("PodDNSConfigOption", fields_of::<core::PodDNSConfigOption>(), DNS_OPTION),
            ("PodOS", fields_of::<core::PodOS>(), POD_OS),
        ];
        for (name, declared, table) in cases {
            assert!(!declared.is_empty(), "{name}: no fields recorded");
            assert_eq!(declared, names(table), "{name}: the table must list exactly the type's fields");
        }
        // Volume: the name and the four implemented sources; the volume check refuses the rest.
        let volume = fields_of::<core::Volume>();
        assert!(names(VOLUME).is_subset(&volume) && volume.len() > 20);
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn unimplemented_fields_are_refused_by_path() {
        let c = |extra: Value| {
            let mut c = json!({"name": "c", "image": "busybox"});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            c
        };
        let cases = [
            (
                json!({"runtimeClassName": "gvisor", "containers": [c(json!({}))]}),
                "spec.runtimeClassName: not supported by rkube",
            ),
            (
                json!({"containers": [c(json!({})), c(json!({"tty": true}))]}),
                "spec.containers[1].tty: not supported by rkube",
            ),
            (
                json!({"initContainers": [c(json!({"securityContext": {"procMount": "Raw"}}))], "containers": [c(json!({}))]}),
                "spec.initContainers[0].securityContext.procMount: \"Raw\" is not supported by rkube (supported: \"Default\", \"Unmasked\")",
            ),
            (
                json!({"containers": [c(json!({"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}))]}),
                "spec.containers[0].securityContext.appArmorProfile.type: \"RuntimeDefault\" is not supported by rkube (supported: \"Unconfined\")",
            ),
            (
                json!({"containers": [c(json!({"livenessProbe": {"grpc": {"port": 1}}}))]}),
                "spec.containers[0].livenessProbe.grpc: not supported by rkube",
            ),
            (
                json!({"containers": [c(json!({"volumeMounts": [{"name": "v", "mountPath": "/v", "subPathExpr": "$(X)"}]}))]}),
                "spec.containers[0].volumeMounts[0].subPathExpr: not supported by rkube",
            ),
            (
                json!({"volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}}], "containers": [c(json!({}))]}),
                "spec.volumes[0].emptyDir.sizeLimit: not supported by rkube",
            ),
            (
                json!({"os": {"name": "windows"}, "containers": [c(json!({}))]}),
                "spec.os.name: \"windows\" is not supported by rkube (supported: \"linux\")",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(check_pod(&pod(spec)).unwrap_err(), want);
        }
    }

    #[test]
    fn implemented_defaults_and_empty_values_pass() {
        let spec = json!({
            "hostNetwork": true, "hostPID": true, "hostIPC": false, "hostUsers": true,
            "dnsPolicy": "ClusterFirst", "tolerations": [], "nodeSelector": {"disk": "ssd"},
            "os": {"name": "linux"}, "activeDeadlineSeconds": null,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}, "sysctls": []},
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["db"]}],
            "volumes": [{"name": "v", "emptyDir": {"medium": "Memory"}}, {"name": "h", "hostPath": {"path": "/x", "type": "Directory"}}],
            "containers": [{
                "name": "c", "image": "busybox", "tty": false, "stdin": false,
                "securityContext": {"procMount": "Default", "appArmorProfile": {"type": "Unconfined"}, "privileged": false},
                "livenessProbe": {"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}},
                "lifecycle": {"preStop": {"exec": {"command": ["true"]}}},
                "volumeMounts": [{"name": "v", "mountPath": "/v", "mountPropagation": "None"}],
                "terminationMessagePath": "/dev/termination-log"
            }]
        });
        assert_eq!(check_pod(&pod(spec)), Ok(()));
    }
}
