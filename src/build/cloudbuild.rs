//! Cloud Build configs (`cloudbuild.yaml`), pure: the schema subset rkube runs, substitutions
//! (built-in and user `_KEY`s, `$$` escaping, an unknown built-in name is an error), and the plan:
//! steps of the docker builder (`build`, `tag`, `push`) mapped to rkube's own build, tag and push,
//! then the `images:` pushed once every step succeeded. Paths are relative to the source root,
//! which Cloud Build mounts at `/workspace`.
//!
//! The schedule is Cloud Build's: a step without `waitFor` waits for every earlier step, one with
//! `waitFor: ['-']` starts at once, one with ids waits for those steps (ids of earlier steps
//! only). A step starts as soon as the steps it waits for are done ([`ready`]); [`waves`] groups
//! the steps by depth, each wave's steps running concurrently.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a config cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudBuildError {
    #[error("cloudbuild config: {0}")]
    Parse(String),
    #[error("cloudbuild config: {field}: invalid substitution ${name} (escape a literal $ as $$)")]
    UnknownSubstitution { field: String, name: String },
    #[error("cloudbuild config: substitution key {0:?} must match ^_[A-Z0-9_]+$ or be a built-in")]
    BadKey(String),
    #[error("cloudbuild config: step {step}: {message}")]
    Step { step: usize, message: String },
}

/// The parts of a build config rkube reads.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub steps: Vec<Step>,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub substitutions: BTreeMap<String, String>,
    #[serde(default)]
    pub options: Options,
}

/// `options:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    #[serde(default, alias = "substitution_option")]
    pub substitution_option: Option<String>,
}

/// One step.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub name: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub dir: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, alias = "wait_for")]
    pub wait_for: Vec<String>,
    #[serde(default)]
    pub entrypoint: Option<String>,
}

/// The built-in substitutions (values given by the caller; missing ones are empty).
pub const BUILT_INS: &[&str] = &[
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "BUILD_ID",
    "LOCATION",
    "COMMIT_SHA",
    "SHORT_SHA",
    "REVISION_ID",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "REF_NAME",
    "TRIGGER_NAME",
    "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
    "_HEAD_BRANCH",
    "_BASE_BRANCH",
    "_HEAD_REPO_URL",
    "_PR_NUMBER",
];

/// A `docker build` step's arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DockerBuild {
    pub tags: Vec<String>,
    pub file: Option<PathBuf>,
    pub build_args: Vec<String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub platform: Option<String>,
    pub context: PathBuf,
}

/// A step run as a container of its image, the source at `/workspace`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerStep {
    pub image: String,
    pub entrypoint: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Working directory: relative to `/workspace`, or absolute.
    pub dir: String,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Build(DockerBuild),
    Container(ContainerStep),
    Tag { source: String, target: String },
    Push { image: String },
}

/// The plan of a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// For each action, the (earlier) actions it waits for.
    pub waits: Vec<Vec<usize>>,
    pub images: Vec<String>,
}

/// The steps that can start now: not started, and every step they wait for is done.
pub fn ready(waits: &[Vec<usize>], done: &[bool], started: &[bool]) -> Vec<usize> {
    (0..waits.len()).filter(|&i| !started[i] && waits[i].iter().all(|&w| done[w])).collect()
}

/// The steps grouped by depth: wave 0 waits for nothing, wave k for steps of waves below k with
/// at least one in wave k-1.
pub fn waves(waits: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut depth: Vec<usize> = Vec::with_capacity(waits.len());
    let mut out: Vec<Vec<usize>> = Vec::new();
    for w in waits {
        // Steps only wait for earlier ones, so their depth is known.
        let d = w.iter().map(|&j| depth[j] + 1).max().unwrap_or(0);
        if out.len() <= d {
            out.resize(d + 1, Vec::new());
        }
        out[d].push(depth.len());
        depth.push(d);
    }
    out
}

/// Parses a config.
pub fn parse(text: &str) -> Result<Config, CloudBuildError> {
    let config: Config = serde_yaml_ng::from_str(text).map_err(|e| CloudBuildError::Parse(e.to_string()))?;
    if config.steps.is_empty() {
        return Err(CloudBuildError::Parse("no steps".into()));
    }
    Ok(config)
}

/// Substitutes `$KEY`/`${KEY}` in `s`; `$$` is a literal `$`.
pub fn substitute(
    s: &str,
    values: &BTreeMap<String, String>,
    loose: bool,
    field: &str,
) -> Result<String, CloudBuildError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                let end = chars[i + 2..].iter().position(|c| *c == '}').map(|p| p + i + 2);
                let Some(end) = end else {
                    out.push('$');
                    i += 1;
                    continue;
                };
                let name: String = chars[i + 2..end].iter().collect();
                out.push_str(&lookup(&name, values, loose, field)?);
                i = end + 1;
            }
            Some(c) if c.is_ascii_uppercase() || *c == '_' => {
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_ascii_uppercase() || chars[j].is_ascii_digit() || chars[j] == '_')
                {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(&lookup(&name, values, loose, field)?);
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

fn lookup(
    name: &str,
    values: &BTreeMap<String, String>,
    loose: bool,
    field: &str,
) -> Result<String, CloudBuildError> {
    if let Some(v) = values.get(name) {
        return Ok(v.clone());
    }
    // An undefined user key or a built-in without a value is empty (Cloud Build only warns).
    if name.starts_with('_') || BUILT_INS.contains(&name) || loose {
        return Ok(String::new());
    }
    Err(CloudBuildError::UnknownSubstitution { field: field.to_string(), name: name.to_string() })
}

/// The substitution values: the config's defaults, then the caller's (built-ins and `_KEY`s).
pub fn values(
    config: &Config,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, CloudBuildError> {
    let mut out = BTreeMap::new();
    for (k, v) in config.substitutions.iter().chain(given.iter()) {
        let user = k.starts_with('_')
            && k.len() > 1
            && k[1..].chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !user && !BUILT_INS.contains(&k.as_str()) {
            return Err(CloudBuildError::BadKey(k.clone()));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// Whether a step image is the docker builder.
pub fn is_docker_builder(name: &str) -> bool {
    let repo = name.split('@').next().unwrap_or(name);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    matches!(repo, "gcr.io/cloud-builders/docker" | "docker" | "docker.io/library/docker")
}

/// Turns a config into actions, substituting every field.
pub fn plan(config: &Config, values: &BTreeMap<String, String>) -> Result<Plan, CloudBuildError> {
    let loose = config.options.substitution_option.as_deref() == Some("ALLOW_LOOSE");
    let mut ids: Vec<(String, usize)> = Vec::new();
    let mut actions = Vec::new();
    let mut waits = Vec::new();
    for (n, step) in config.steps.iter().enumerate() {
        let number = n + 1;
        let sub = |s: &str, field: &str| substitute(s, values, loose, &format!("steps[{n}].{field}"));
        let name = sub(&step.name, "name")?;
        let args: Vec<String> = step.args.iter().map(|a| sub(a, "args")).collect::<Result<_, _>>()?;
        let dir = step.dir.as_deref().map(|d| sub(d, "dir")).transpose()?;
        let mut wait = Vec::new();
        if step.wait_for.is_empty() {
            wait.extend(0..n);
        }
        for w in step.wait_for.iter().filter(|w| *w != "-") {
            let Some((_, j)) = ids.iter().find(|(id, _)| id == w) else {
                return Err(CloudBuildError::Step {
                    step: number,
                    message: format!("waitFor {w:?} names no earlier step id"),
                });
            };
            if !wait.contains(j) {
                wait.push(*j);
            }
        }
        waits.push(wait);
        if let Some(id) = &step.id {
            if ids.iter().any(|(known, _)| known == id) {
                return Err(CloudBuildError::Step {
                    step: number,
                    message: format!("duplicate step id {id:?}"),
                });
            }
            ids.push((id.clone(), n));
        }
        let env: Vec<String> = step.env.iter().map(|e| sub(e, "env")).collect::<Result<_, _>>()?;
        if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
            return Err(CloudBuildError::Step {
                step: number,
                message: format!("env {bad:?}: KEY=VALUE expected"),
            });
        }
        let entrypoint = step.entrypoint.as_deref().map(|e| sub(e, "entrypoint")).transpose()?;
        if !is_docker_builder(&name) || entrypoint.as_deref().is_some_and(|e| e != "docker") {
            actions.push(Action::Container(ContainerStep {
                image: name,
                entrypoint,
                args,
                env,
                dir: dir.unwrap_or_default(),
            }));
            continue;
        }
        let base = workspace_path(Path::new(""), dir.as_deref().unwrap_or(""));
        let step_err = |message: String| CloudBuildError::Step { step: number, message };
        let action = match args.first().map(String::as_str) {
            Some("build") => Action::Build(docker_build(&args[1..], &base).map_err(step_err)?),
            Some("tag") => match &args[1..] {
                [s, t] => Action::Tag { source: s.clone(), target: t.clone() },
                _ => return Err(step_err("docker tag takes SOURCE and TARGET".into())),
            },
            Some("push") => match &args[1..] {
                [i] => Action::Push { image: i.clone() },
                _ => return Err(step_err("docker push takes one IMAGE".into())),
            },
            other => {
                return Err(step_err(format!(
                    "docker {}: not supported (build, tag, push)",
                    other.unwrap_or("")
                )));
            }
        };
        actions.push(action);
    }
    let images =
        config.images.iter().map(|i| substitute(i, values, loose, "images")).collect::<Result<_, _>>()?;
    Ok(Plan { actions, waits, images })
}

/// A path of a step relative to the source root (`/workspace`): absolute `/workspace/...` paths
/// are mapped back, relative ones join `dir`.
fn workspace_path(dir: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("/workspace") {
        return PathBuf::from(rest.trim_start_matches('/'));
    }
    if p.starts_with('/') {
        return PathBuf::from(p);
    }
    dir.join(p)
}

/// `docker build` arguments.
fn docker_build(args: &[String], dir: &Path) -> Result<DockerBuild, String> {
    let mut b = DockerBuild::default();
    let mut context = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("docker build {name} needs a value"))
        };
        match flag {
            "-t" | "--tag" => b.tags.push(value(flag)?),
            "-f" | "--file" => b.file = Some(workspace_path(dir, &value(flag)?)),
            "--build-arg" => b.build_args.push(value(flag)?),
            "--target" => b.target = Some(value(flag)?),
            "--platform" => b.platform = Some(value(flag)?),
            "--no-cache" => b.no_cache = true,
            "--pull" | "-q" | "--quiet" | "--rm" | "--force-rm" => {}
            "--network" | "--cache-from" | "--label" | "--progress" => {
                return Err(format!("docker build {flag} is not supported"));
            }
            f if f.starts_with('-') && f != "-" => return Err(format!("docker build {f} is not supported")),
            _ => {
                if context.is_some() {
                    return Err("docker build takes one context".into());
                }
                context = Some(a.clone());
            }
        }
    }
    let context = context.ok_or("docker build needs a context")?;
    if context == "-" {
        return Err("docker build - (context from stdin) is not supported".into());
    }
    b.context = workspace_path(dir, &context);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "steps:\n  - name: 'gcr.io/cloud-builders/docker'\n    # build blue\n    args: ['build', '-t', 'gcr.io/$PROJECT_ID/imageview:blue', './blue']\n  - name: 'gcr.io/cloud-builders/docker'\n    args: ['build', '-t', 'gcr.io/$PROJECT_ID/imageview:green', './green']\nimages: ['gcr.io/$PROJECT_ID/imageview:blue', 'gcr.io/$PROJECT_ID/imageview:green']\n";

    fn vals(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_seed_config() {
        let c = parse(SEED).unwrap();
        let v = values(&c, &vals(&[("PROJECT_ID", "hello-docker")])).unwrap();
        let p = plan(&c, &v).unwrap();
        assert_eq!(p.actions.len(), 2);
        assert_eq!(
            p.actions[0],
            Action::Build(DockerBuild {
                tags: vec!["gcr.io/hello-docker/imageview:blue".into()],
                context: PathBuf::from("./blue"),
                ..Default::default()
            })
        );
        assert_eq!(p.images, ["gcr.io/hello-docker/imageview:blue", "gcr.io/hello-docker/imageview:green"]);
    }

    #[test]
    fn substitutions() {
        let v = vals(&[("PROJECT_ID", "p"), ("_X", "x")]);
        let s = |t: &str| substitute(t, &v, false, "f");
        assert_eq!(s("$PROJECT_ID/${_X}").unwrap(), "p/x");
        assert_eq!(s("$$HOME costs $$5").unwrap(), "$HOME costs $5");
        assert_eq!(
            s("${_UNSET}|$BUILD_ID").unwrap(),
            "|",
            "undefined user keys and value-less built-ins are empty"
        );
        assert_eq!(s("a$").unwrap(), "a$");
        assert_eq!(s("$lower").unwrap(), "$lower", "only [A-Z_] names are substitutions");
        assert!(matches!(s("$HOME"), Err(CloudBuildError::UnknownSubstitution { .. })));
        assert_eq!(substitute("$HOME", &v, true, "f").unwrap(), "", "ALLOW_LOOSE");
        let c = parse("steps: [{name: docker, args: [push, x]}]\nsubstitutions: {_A: def}\n").unwrap();
        assert_eq!(values(&c, &vals(&[])).unwrap()["_A"], "def");
        assert_eq!(values(&c, &vals(&[("_A", "given")])).unwrap()["_A"], "given");
        assert!(matches!(values(&c, &vals(&[("lower", "x")])), Err(CloudBuildError::BadKey(_))));
    }

    #[test]
    fn docker_steps_and_dirs() {
        let c = parse("steps:\n- name: gcr.io/cloud-builders/docker:20.10\n  dir: app\n  id: b\n  args: [build, --build-arg=V=1, -f, docker/Dockerfile, --no-cache, --target, final, -t, x, .]\n- name: docker\n  waitFor: [b]\n  args: [tag, x, y]\n- name: docker\n  wait_for: ['-']\n  args: [push, y]\n").unwrap();
        let p = plan(&c, &BTreeMap::new()).unwrap();
        assert_eq!(
            p.actions[0],
            Action::Build(DockerBuild {
                tags: vec!["x".into()],
                file: Some(PathBuf::from("app/docker/Dockerfile")),
                build_args: vec!["V=1".into()],
                target: Some("final".into()),
                no_cache: true,
                platform: None,
                context: PathBuf::from("app/."),
            })
        );
        assert_eq!(p.actions[1], Action::Tag { source: "x".into(), target: "y".into() });
        assert_eq!(p.actions[2], Action::Push { image: "y".into() });
        let bad = parse("steps: [{name: docker, waitFor: [nope], args: [push, x]}]").unwrap();
        assert!(plan(&bad, &BTreeMap::new()).unwrap_err().to_string().contains("names no earlier step"));
        let other = parse(
            "steps: [{name: 'busybox', entrypoint: sh, args: [-c, 'echo $$X'], env: ['X=$_V'], dir: sub}]",
        )
        .unwrap();
        assert_eq!(
            plan(&other, &vals(&[("_V", "v")])).unwrap().actions,
            [Action::Container(ContainerStep {
                image: "busybox".into(),
                entrypoint: Some("sh".into()),
                args: vec!["-c".into(), "echo $X".into()],
                env: vec!["X=v".into()],
                dir: "sub".into(),
            })]
        );
        assert!(parse("steps: []").is_err());
        assert!(parse("steps: [{args: [x]}]").is_err(), "a step needs a name");
        assert_eq!(workspace_path(Path::new("d"), "/workspace/x"), PathBuf::from("x"));
    }

    #[test]
    fn wait_for_schedules_like_cloud_build() {
        // a, b start at once; c (no waitFor) waits for all earlier; d waits for a only; e for c, d.
        let c = parse(
            "steps:\n\
             - {name: docker, id: a, waitFor: ['-'], args: [push, x]}\n\
             - {name: docker, id: b, waitFor: ['-'], args: [push, x]}\n\
             - {name: docker, id: c, args: [push, x]}\n\
             - {name: docker, id: d, waitFor: [a], args: [push, x]}\n\
             - {name: docker, waitFor: [c, d, c], args: [push, x]}\n",
        )
        .unwrap();
        let p = plan(&c, &BTreeMap::new()).unwrap();
        assert_eq!(p.waits, vec![vec![], vec![], vec![0, 1], vec![0], vec![2, 3]]);
        assert_eq!(waves(&p.waits), vec![vec![0, 1], vec![2, 3], vec![4]]);
        let n = p.waits.len();
        let (mut done, mut started) = (vec![false; n], vec![false; n]);
        assert_eq!(ready(&p.waits, &done, &started), [0, 1]);
        started[0] = true;
        started[1] = true;
        assert!(ready(&p.waits, &done, &started).is_empty(), "running steps are not started again");
        done[0] = true;
        assert_eq!(ready(&p.waits, &done, &started), [3], "d needs only a; c needs b too");
        started[3] = true;
        done[1] = true;
        assert_eq!(ready(&p.waits, &done, &started), [2]);
        // The seed: no waitFor anywhere, so the steps run one after another.
        let seed = plan(&parse(SEED).unwrap(), &vals(&[("PROJECT_ID", "p")])).unwrap();
        assert_eq!(waves(&seed.waits), vec![vec![0], vec![1]]);
        // Ids must name earlier steps, once each.
        let later = parse("steps:\n- {name: docker, waitFor: [z], args: [push, x]}\n- {name: docker, id: z, args: [push, x]}\n").unwrap();
        assert!(plan(&later, &BTreeMap::new()).unwrap_err().to_string().contains("step 1: waitFor \"z\""));
        let dup = parse(
            "steps:\n- {name: docker, id: z, args: [push, x]}\n- {name: docker, id: z, args: [push, x]}\n",
        )
        .unwrap();
        assert!(plan(&dup, &BTreeMap::new()).unwrap_err().to_string().contains("step 2: duplicate step id"));
    }
}
