//! `rkubelet build --config cloudbuild.yaml [--substitutions K=V,...] [SOURCE_DIR]`: runs the plan of
//! [`crate::build::cloudbuild`] with rkube's own build, tag and push; `images:` are pushed last.

use crate::build::cloudbuild::{self, Action};
use crate::cli::build::{Args, build_one};
use crate::cli::image::{local_name, run_push};
use crate::image::config::RegistriesConfig;
use crate::image::store::Store;
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::Path;

/// Runs a Cloud Build config against the source directory.
pub fn run(args: &Args, config: &Path, source: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let parsed = cloudbuild::parse(&text)?;
    let mut given = BTreeMap::new();
    for kv in args.substitutions.iter().filter(|s| !s.is_empty()) {
        let (k, v) =
            kv.split_once('=').with_context(|| format!("--substitutions {kv:?}: KEY=VALUE expected"))?;
        given.insert(k.to_string(), v.to_string());
    }
    given.entry("BUILD_ID".to_string()).or_insert_with(|| uuid::Uuid::new_v4().to_string());
    let values = cloudbuild::values(&parsed, &given)?;
    let plan = cloudbuild::plan(&parsed, &values)?;
    let source =
        std::fs::canonicalize(source).with_context(|| format!("source directory {}", source.display()))?;
    let store = Store::open(&args.root)
        .with_context(|| format!("opening the image store at {}", args.root.display()))?;
    for (n, action) in plan.actions.iter().enumerate() {
        if !args.quiet {
            eprintln!("cloudbuild step {}: {action:?}", n + 1);
        }
        match action {
            Action::Build(b) => {
                let mut step = args.clone();
                step.config = None;
                step.tags = b.tags.clone();
                step.file = b.file.as_ref().map(|f| source.join(f));
                step.build_args = b.build_args.clone();
                step.target = b.target.clone();
                step.no_cache = b.no_cache || args.no_cache;
                step.platform = b.platform.clone();
                step.push = false;
                step.quiet = true;
                let context = source.join(&b.context);
                let digest = build_one(&step, &context).with_context(|| format!("step {}", n + 1))?;
                if !args.quiet {
                    eprintln!("step {}: built {} {digest}", n + 1, b.tags.join(" "));
                }
            }
            Action::Container(c) => {
                let code = crate::cli::build::run_step_container(args, c, &source)
                    .with_context(|| format!("step {} ({})", n + 1, c.image))?;
                if code != 0 {
                    bail!("step {} ({}): exit code {code}", n + 1, c.image);
                }
            }
            Action::Tag { source: from, target } => {
                let digest = store
                    .tag(&local_name(from)?)?
                    .with_context(|| format!("step {}: no such image: {from}", n + 1))?;
                store.set_tag(&local_name(target)?, &digest)?;
            }
            Action::Push { image } => {
                let registries = RegistriesConfig::load(&args.registries_config)?;
                run_push(&store, registries, image, None).with_context(|| format!("step {}", n + 1))?;
            }
        }
    }
    // images: pushed only after every step succeeded; each must exist.
    for image in &plan.images {
        if store.tag(&local_name(image)?)?.is_none() {
            bail!("images: {image} was not built by any step (PUSH_IMAGE_NOT_FOUND)");
        }
    }
    let registries = RegistriesConfig::load(&args.registries_config)?;
    for image in &plan.images {
        run_push(&store, registries.clone(), image, None).with_context(|| format!("pushing {image}"))?;
    }
    Ok(0)
}
