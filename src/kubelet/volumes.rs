//! Pod volumes on the host: emptyDir (a pod directory, or the pod tmpfs for `medium: Memory`),
//! hostPath, configMap, secret and projected (configMap, secret, downwardAPI metadata and
//! serviceAccountToken sources; anything holding a secret or token on the pod tmpfs), and each
//! container's volumeMounts as bind mounts, with `subPath` resolved inside the volume by the kernel
//! (`openat2` with `RESOLVE_IN_ROOT`) so a symlink planted in a volume cannot point the mount at
//! the host.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret, Volume, VolumeProjection};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::projection::{self, CONFIG_MAP_DEFAULT_MODE, SECRET_DEFAULT_MODE};
use super::spec::BindMount;
use crate::sys::openat::open_in_root;

/// Why a volume could not be prepared, naming the volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume:?}: {message}")]
    Invalid { volume: String, message: String },
    #[error("volume {volume:?}: {step} {path}: {source}")]
    Io { volume: String, step: &'static str, path: PathBuf, source: io::Error },
    #[error("container {container}: volumeMounts[{index}]: {message}")]
    Mount { container: String, index: usize, message: String },
}

/// The host directory (or file) of every pod volume, by name.
pub type VolumePaths = HashMap<String, PathBuf>;

fn entries_of_config_map(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())).collect();
    out.extend(cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
    out
}

fn entries_of_secret(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    out.extend(secret.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())));
    out
}

/// What volumes draw from besides the host: the objects that came with the pod, the ServiceAccount
/// tokens the node requested for it (none for file pods), and the pod's own metadata.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    pub config_maps: &'a [ConfigMap],
    pub secrets: &'a [Secret],
    /// One per projected serviceAccountToken source, named by [`token_key`].
    pub tokens: &'a [TokenRequest],
    pub pod: &'a ObjectMeta,
}

/// The name under which a node passes the token of projected volume `volume`'s source `index`.
pub fn token_key(volume: &str, index: usize) -> String {
    format!("{volume}-{index}")
}

/// Checks that every volume can be prepared (sources and keys exist) without touching the host.
pub fn check(volumes: &[Volume], sources: &Sources) -> Result<(), VolumeError> {
    for v in volumes {
        plan_files(v, sources)?;
    }
    Ok(())
}

/// A downward API `fieldRef` of the pod's metadata, as the kubelet renders it (labels and
/// annotations as sorted `key="value"` lines).
fn metadata_field(meta: &ObjectMeta, path: &str) -> Option<String> {
    let lines = |m: &Option<BTreeMap<String, String>>| {
        m.iter().flatten().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n")
    };
    let key_of = |prefix: &str| path.strip_prefix(prefix)?.strip_suffix("']").map(String::from);
    match path {
        "metadata.name" => Some(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Some(meta.namespace.clone().unwrap_or_else(|| "default".into())),
        "metadata.uid" => Some(meta.uid.clone().unwrap_or_default()),
        "metadata.labels" => Some(lines(&meta.labels)),
        "metadata.annotations" => Some(lines(&meta.annotations)),
        _ => {
            if let Some(k) = key_of("metadata.labels['") {
                return Some(meta.labels.as_ref().and_then(|l| l.get(&k)).cloned().unwrap_or_default());
            }
            let k = key_of("metadata.annotations['")?;
            Some(meta.annotations.as_ref().and_then(|l| l.get(&k)).cloned().unwrap_or_default())
        }
    }
}

/// Whether a projected source holds a secret or a token (the volume then lives on the tmpfs).
fn sensitive(p: &VolumeProjection) -> bool {
    p.secret.is_some() || p.service_account_token.is_some()
}

/// The files of a projected volume, every source merged into one directory.
fn plan_projected(v: &Volume, sources: &Sources) -> Result<Vec<projection::ProjectedFile>, VolumeError> {
    let invalid = |message: String| VolumeError::Invalid { volume: v.name.clone(), message };
    let Some(p) = &v.projected else { return Ok(Vec::new()) };
    let default_mode = match p.default_mode {
        Some(m) => projection::checked_mode("projected", m).map_err(|e| invalid(e.to_string()))?,
        None => CONFIG_MAP_DEFAULT_MODE,
    };
    let mut files = Vec::new();
    for (index, src) in p.sources.iter().flatten().enumerate() {
        let at = format!("sources[{index}]");
        if let Some(cm) = &src.config_map {
            let name = cm.name.as_str();
            match sources.config_maps.iter().find(|c| c.metadata.name.as_deref() == Some(name)) {
                Some(found) => files.extend(
                    projection::project(
                        &format!("{at}: configmap {name:?}"),
                        &entries_of_config_map(found),
                        cm.items.as_deref(),
                        default_mode,
                    )
                    .map_err(|e| invalid(e.to_string()))?,
                ),
                None if cm.optional == Some(true) => {}
                None => return Err(invalid(format!("{at}: configmap {name:?} not found"))),
            }
        } else if let Some(sec) = &src.secret {
            let name = sec.name.as_str();
            match sources.secrets.iter().find(|c| c.metadata.name.as_deref() == Some(name)) {
                Some(found) => files.extend(
                    projection::project(
                        &format!("{at}: secret {name:?}"),
                        &entries_of_secret(found),
                        sec.items.as_deref(),
                        default_mode,
                    )
                    .map_err(|e| invalid(e.to_string()))?,
                ),
                None if sec.optional == Some(true) => {}
                None => return Err(invalid(format!("{at}: secret {name:?} not found"))),
            }
        } else if let Some(d) = &src.downward_api {
            for (i, item) in d.items.iter().flatten().enumerate() {
                let field = |m: &str| invalid(format!("{at}.downwardAPI.items[{i}]: {m}"));
                if !projection::is_safe_relative(&item.path) {
                    return Err(field(&format!("path {:?} must be a relative path without '..'", item.path)));
                }
                let Some(fr) = &item.field_ref else {
                    return Err(field("only fieldRef is supported by rkube (not resourceFieldRef)"));
                };
                let value = metadata_field(sources.pod, &fr.field_path).ok_or_else(|| {
                    field(&format!("fieldRef.fieldPath {:?} is not supported", fr.field_path))
                })?;
                let mode = match item.mode {
                    Some(m) => {
                        projection::checked_mode("downwardAPI", m).map_err(|e| invalid(e.to_string()))?
                    }
                    None => default_mode,
                };
                files.push(projection::ProjectedFile {
                    path: item.path.clone().into(),
                    data: value.into_bytes(),
                    mode,
                });
            }
        } else if let Some(t) = &src.service_account_token {
            if !projection::is_safe_relative(&t.path) {
                return Err(invalid(format!(
                    "{at}.serviceAccountToken.path {:?} must be a relative path without '..'",
                    t.path
                )));
            }
            let key = token_key(&v.name, index);
            let token = sources
                .tokens
                .iter()
                .find(|tr| tr.metadata.name.as_deref() == Some(key.as_str()))
                .and_then(|tr| tr.status.as_ref())
                .map(|s| s.token.clone())
                .ok_or_else(|| {
                    invalid(format!(
                        "{at}.serviceAccountToken: ServiceAccount tokens exist only for pods from the API server \
                         (rkubelet join); a pod run from a file has none"
                    ))
                })?;
            files.push(projection::ProjectedFile {
                path: t.path.clone().into(),
                data: token.into_bytes(),
                mode: default_mode,
            });
        } else {
            return Err(invalid(format!(
                "{at}: only configMap, secret, downwardAPI and serviceAccountToken sources are supported"
            )));
        }
    }
    Ok(files)
}

/// The projected files of a configMap, secret or projected volume (`None` for other kinds).
fn plan_files(v: &Volume, sources: &Sources) -> Result<Option<Vec<projection::ProjectedFile>>, VolumeError> {
    let (config_maps, secrets) = (sources.config_maps, sources.secrets);
    if v.projected.is_some() {
        return plan_projected(v, sources).map(Some);
    }
    let invalid = |message: String| VolumeError::Invalid { volume: v.name.clone(), message };
    if let Some(src) = &v.config_map {
        let name = src.name.as_str();
        let Some(cm) = config_maps.iter().find(|c| c.metadata.name.as_deref() == Some(name)) else {
            if src.optional == Some(true) {
                return Ok(Some(vec![]));
            }
            return Err(invalid(format!("configmap {name:?} not found")));
        };
        let mode = match src.default_mode {
            Some(m) => projection::checked_mode(&format!("configmap {name:?}"), m)
                .map_err(|e| invalid(e.to_string()))?,
            None => CONFIG_MAP_DEFAULT_MODE,
        };
        return projection::project(
            &format!("configmap {name:?}"),
            &entries_of_config_map(cm),
            src.items.as_deref(),
            mode,
        )
        .map(Some)
        .map_err(|e| invalid(e.to_string()));
    }
    if let Some(src) = &v.secret {
        let name = src.secret_name.as_deref().unwrap_or_default();
        let Some(secret) = secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name)) else {
            if src.optional == Some(true) {
                return Ok(Some(vec![]));
            }
            return Err(invalid(format!("secret {name:?} not found")));
        };
        let mode = match src.default_mode {
            Some(m) => projection::checked_mode(&format!("secret {name:?}"), m)
                .map_err(|e| invalid(e.to_string()))?,
            None => SECRET_DEFAULT_MODE,
        };
        return projection::project(
            &format!("secret {name:?}"),
            &entries_of_secret(secret),
            src.items.as_deref(),
            mode,
        )
        .map(Some)
        .map_err(|e| invalid(e.to_string()));
    }
    if v.empty_dir.is_none() && v.host_path.is_none() {
        return Err(invalid(
            "only emptyDir, hostPath, configMap, secret and projected volumes are supported".into(),
        ));
    }
    Ok(None)
}

/// Whether the pod needs its tmpfs (secret volumes or memory emptyDirs).
pub fn needs_tmpfs(volumes: &[Volume]) -> bool {
    volumes.iter().any(on_tmpfs)
}

/// Whether a volume lives on the pod tmpfs: secrets, projected secrets and tokens, memory emptyDirs.
fn on_tmpfs(v: &Volume) -> bool {
    v.secret.is_some()
        || v.empty_dir.as_ref().is_some_and(|e| e.medium.as_deref() == Some("Memory"))
        || v.projected.iter().flat_map(|p| p.sources.iter().flatten()).any(sensitive)
}

/// Creates every volume of the pod: disk volumes under `disk_dir`, secrets and memory emptyDirs
/// under `tmpfs_dir` (already mounted).
#[tracing::instrument(level = "debug", name = "volumes", skip_all)]
pub fn prepare(
    volumes: &[Volume],
    sources: &Sources,
    disk_dir: &Path,
    tmpfs_dir: &Path,
) -> Result<VolumePaths, VolumeError> {
    let mut paths = VolumePaths::new();
    for v in volumes {
        let io_err = |step: &'static str, path: &Path| {
            let (volume, path) = (v.name.clone(), path.to_path_buf());
            move |source| VolumeError::Io { volume, step, path, source }
        };
        let files = plan_files(v, sources)?;
        let path = if let Some(host) = &v.host_path {
            let path = PathBuf::from(&host.path);
            match host.type_.as_deref().unwrap_or_default() {
                "DirectoryOrCreate" => fs::create_dir_all(&path).map_err(io_err("create", &path))?,
                "FileOrCreate" if !path.exists() => {
                    fs::File::create(&path).map(drop).map_err(io_err("create", &path))?
                }
                "Directory" if !path.is_dir() => {
                    return Err(VolumeError::Invalid {
                        volume: v.name.clone(),
                        message: format!("hostPath {} is not a directory", path.display()),
                    });
                }
                "File" if !path.is_file() => {
                    return Err(VolumeError::Invalid {
                        volume: v.name.clone(),
                        message: format!("hostPath {} is not a file", path.display()),
                    });
                }
                _ => {}
            }
            path
        } else {
            let path = if on_tmpfs(v) { tmpfs_dir.join(&v.name) } else { disk_dir.join(&v.name) };
            match &files {
                Some(files) => {
                    let parent = path.parent().unwrap_or(&path);
                    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
                    projection::write_atomically(&path, files).map_err(io_err("write files into", &path))?
                }
                None => {
                    fs::create_dir_all(&path).map_err(io_err("create", &path))?;
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
                        .map_err(io_err("chmod", &path))?;
                }
            }
            path
        };
        paths.insert(v.name.clone(), path);
    }
    Ok(paths)
}

/// Resolves `sub` inside `volume` as if `volume` were `/`, creating missing directories, and
/// returns the host path it names (checked to be inside `volume`).
pub fn resolve_sub_path(volume: &Path, sub: &str) -> Result<PathBuf, String> {
    if Path::new(sub).components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("subPath {sub:?} must be a relative path without '..'"));
    }
    let root = fs::File::open(volume).map_err(|e| format!("open {}: {e}", volume.display()))?;
    let mut current = PathBuf::new();
    for part in Path::new(sub).components() {
        let Component::Normal(name) = part else { continue };
        let parent = open_in_root(&root, &current, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| format!("subPath {sub:?}: {e}"))?;
        current.push(name);
        match open_in_root(&root, &current, OFlag::O_PATH, Mode::empty()) {
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                // Missing (a dangling symlink also lands here and is refused by mkdirat).
                nix::sys::stat::mkdirat(&parent, name, Mode::from_bits_truncate(0o755))
                    .map_err(|e| format!("subPath {sub:?}: create {}: {e}", current.display()))?;
            }
            Err(e) => return Err(format!("subPath {sub:?}: {e}")),
        }
    }
    let fd = open_in_root(&root, &current, OFlag::O_PATH, Mode::empty())
        .map_err(|e| format!("subPath {sub:?}: {e}"))?;
    let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("subPath {sub:?}: {e}"))?;
    let base = fs::canonicalize(volume).map_err(|e| format!("subPath {sub:?}: {e}"))?;
    if !real.starts_with(&base) {
        return Err(format!("subPath {sub:?} resolves outside its volume"));
    }
    Ok(real)
}

/// The bind mounts of a container's volumeMounts.
pub fn container_mounts(container: &Container, paths: &VolumePaths) -> Result<Vec<BindMount>, VolumeError> {
    let mut out = Vec::new();
    for (index, m) in container.volume_mounts.iter().flatten().enumerate() {
        let err = |message: String| VolumeError::Mount { container: container.name.clone(), index, message };
        let Some(volume) = paths.get(&m.name) else {
            return Err(err(format!("no volume named {:?}", m.name)));
        };
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => resolve_sub_path(volume, sub).map_err(err)?,
            None => volume.clone(),
        };
        out.push(BindMount {
            source,
            destination: m.mount_path.clone(),
            read_only: m.read_only == Some(true),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_path_stays_inside_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        fs::create_dir(&vol).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("evil")).unwrap();
        std::os::unix::fs::symlink("../..", vol.join("up")).unwrap();
        let made = resolve_sub_path(&vol, "a/b").unwrap();
        assert!(made.ends_with("vol/a/b") && made.is_dir());
        // The symlink to /etc is resolved inside the volume: vol/etc is created, not /etc used.
        match resolve_sub_path(&vol, "evil/passwd") {
            Ok(p) => assert!(p.starts_with(fs::canonicalize(&vol).unwrap()), "{p:?}"),
            Err(e) => assert!(!e.is_empty()),
        }
        assert!(!Path::new("/etc/passwd/x").exists());
        let up = resolve_sub_path(&vol, "up").unwrap();
        assert_eq!(up, fs::canonicalize(&vol).unwrap());
        assert!(resolve_sub_path(&vol, "../x").is_err());
        assert!(resolve_sub_path(&vol, "/abs").is_err());
    }

    #[test]
    fn projected_api_access_volume() {
        let volume: Volume = serde_json::from_value(serde_json::json!({"name": "kube-api-access-abcde",
            "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                    {"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}}]}}]}}))
        .unwrap();
        let ca: ConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "kube-root-ca.crt"},
            "data": {"ca.crt": "PEM"}}))
            .unwrap();
        let token: TokenRequest = serde_json::from_value(serde_json::json!({"metadata": {"name": token_key("kube-api-access-abcde", 0)},
            "spec": {"audiences": []}, "status": {"token": "eyJ.x.y", "expirationTimestamp": "2030-01-01T00:00:00Z"}}))
        .unwrap();
        let pod = ObjectMeta {
            namespace: Some("team".into()),
            labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ..Default::default()
        };
        let cms = [ca];
        let tokens = [token];
        let sources = Sources { config_maps: &cms, secrets: &[], tokens: &tokens, pod: &pod };
        let files = plan_files(&volume, &sources).unwrap().unwrap();
        let got: Vec<(String, String)> = files
            .iter()
            .map(|f| (f.path.display().to_string(), String::from_utf8(f.data.clone()).unwrap()))
            .collect();
        let want = [("token", "eyJ.x.y"), ("ca.crt", "PEM"), ("namespace", "team"), ("app", "web")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
        assert!(files.iter().all(|f| f.mode == 0o644));
        assert!(needs_tmpfs(std::slice::from_ref(&volume)));
        // A pod run from a file has no token; the ConfigMap must exist.
        let no_token = Sources { tokens: &[], ..sources };
        let err = check(std::slice::from_ref(&volume), &no_token).unwrap_err().to_string();
        assert!(err.contains("ServiceAccount tokens exist only for pods from the API server"), "{err}");
        let no_ca = Sources { config_maps: &[], ..sources };
        let err = check(std::slice::from_ref(&volume), &no_ca).unwrap_err().to_string();
        assert!(err.contains("configmap \"kube-root-ca.crt\" not found"), "{err}");
    }
}
