//! Images: references, registry client, auth and credentials, content store, unpack.

pub mod compression;
pub mod digest;
pub mod import;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use store::{Store, StoreError};
