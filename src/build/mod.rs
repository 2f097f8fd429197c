//! Image builds: `rkubelet build` from a Dockerfile on rkube's own runtime and store, and
//! `rkubelet build --config cloudbuild.yaml`.
//!
//! `dockerfile` and `lex` parse and expand (pure), `ignore` is `.dockerignore`; the executor
//! (`executor`) runs stages over the store's layers; `layer` turns an overlay upper dir into an
//! OCI layer; `context` reads the build context safely; `cache` keys steps like BuildKit;
//! `cloudbuild` runs a Cloud Build config.

pub mod chmod;
pub mod cloudbuild;
pub mod context;
pub mod dockerfile;
pub mod executor;
pub mod ignore;
pub mod layer;
pub mod lex;
