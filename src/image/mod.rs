//! Images: references, registry client, auth and credentials, content store, unpack.

pub mod compression;
pub mod config;
pub mod credentials;
pub mod digest;
pub mod import;
pub mod manifest;
pub mod platform;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use store::{Store, StoreError};
