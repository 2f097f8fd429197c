//! Images: references, registry client, auth and credentials, content store, unpack.

pub mod digest;

pub use digest::Digest;
