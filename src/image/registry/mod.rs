//! A client for the OCI Distribution API: challenge parsing, bearer tokens, and the HTTP client itself.

pub mod challenge;
pub mod client;
pub mod token;

pub use client::{RegistryClient, RegistryError};
