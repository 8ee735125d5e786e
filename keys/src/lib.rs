//! Node identity for spdu.
//!
//! Every site has its own ed25519 keypair, generated at the site and never leaving it. This crate
//! owns everything that touches that key:
//!
//! - [`SecretKey`] / [`PublicKey`]: generation, the private-key file (PKCS#8 v1 PEM, mode 0600,
//!   refused when others can read or replace it: [`private_file`]), and the printable public-key
//!   token that operators paste into each other's rosters.
//! - Domain-separated signatures ([`SecretKey::sign`], [`PublicKey::verify`]): what is signed always
//!   starts with a context string and the cluster id, so a signature made for one message kind or
//!   one cluster never verifies for another.
//! - [`tls`]: the node's TLS identity (a self-signed certificate carrying exactly its ed25519 key)
//!   and rustls verifiers that accept only keys in the roster — pinning, no CA, no shared secret.

mod identity;
pub mod private_file;
mod sign;
pub mod tls;

pub use identity::{KeyError, PublicKey, SecretKey};
pub use sign::{Signature, SignatureError};
