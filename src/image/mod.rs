//! Images: references, registry client, auth and credentials, content store, unpack.

pub mod config;
pub mod credentials;
pub mod digest;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod registry;

pub use digest::Digest;
