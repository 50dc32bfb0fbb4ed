//! TLS for every Quipu listener and connection, on rustls with the aws-lc-rs provider (no
//! OpenSSL). aws-lc-rs rather than ring: its AES-GCM uses the CPU's 512-bit vector AES where it
//! has one, and a read over TLS is bound by the cipher; in one paired run it cost a node 7–10%
//! less CPU per byte read over TLS than ring, and handshakes were 7% faster
//! (`docs/benchmarks.md`, "aws-lc-rs instead of ring").
//!
//! - [`ServerTls`]: a listener's certificate, key and (for client certificates) CA, read from
//!   PEM files and read again when they change ([`Reload`]): new connections use the new
//!   certificates, open ones keep theirs.
//! - [`ClientTls`]: the CA a client trusts and, for mutual TLS, its own certificate; reloaded
//!   the same way. [`Connector`] makes tonic channels over it.
//! - [`node_of`]: the node id a node certificate names (a DNS subject alternative name
//!   `quipu-node-ID`), which the Raft transport checks against every message's sender.
//! - [`dev`]: a throwaway CA and certificates (rcgen), for `quipu dev --tls` and tests.
//!
//! Invariant: a configuration that fails to load never replaces a working one; a listener whose
//! files are broken at start does not start.

mod client;
pub mod dev;
mod error;
mod identity;
mod pem;
mod server;
mod subject;

use std::sync::Arc;
use std::time::Duration;

pub use client::{ClientFiles, ClientTls, Connector};
pub use error::TlsError;
pub use identity::{NODE_NAME_PREFIX, node_name, node_of, node_of_file};
pub use server::{ClientAuth, ServerFiles, ServerTls};
pub use subject::subject_of;

/// The longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often certificate files are checked for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Encrypted bytes a connection may hold before it writes them to the socket, in bytes (rustls's
/// `set_buffer_limit`). rustls's default, 64 KiB, made every 64 KiB of a large answer (a fetch)
/// its own `writev`; 1 MiB writes 64 records per system call, and cost a node 5–6% less CPU per
/// byte read over TLS than 256 KiB (`docs/benchmarks.md`). The memory is held only while a
/// client is slower than the node writes: at most this much per connection, within each
/// listener's connection limits.
pub const SEND_BUFFER_BYTES: usize = 1024 * 1024;

/// Something that reads its certificate files again.
pub trait Reload: Send + Sync + std::fmt::Debug {
    /// Reads the files again if they changed since they were last read (or at once with
    /// `force`) and uses them from now on; returns whether it did. On an error the configuration
    /// in use stays.
    fn reload(&self, force: bool) -> Result<bool, TlsError>;
}

/// Reloads each of `items` (`force`: even if unchanged), logging what happened.
pub fn reload_all(items: &[Arc<dyn Reload>], force: bool) {
    for item in items {
        match item.reload(force) {
            Ok(true) => tracing::info!(tls = ?item, "certificates reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(tls = ?item, error = &e as &dyn std::error::Error, "certificates not reloaded: the previous ones stay in use");
            }
        }
    }
}

/// Checks `items` for changed files every [`RELOAD_CHECK_INTERVAL`] and reloads those that
/// changed, until the returned task is aborted.
pub fn spawn_reloader(items: Vec<Arc<dyn Reload>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(RELOAD_CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            reload_all(&items, false);
        }
    })
}

/// The crypto provider of every configuration: aws-lc-rs's, with its cipher suites in the order a
/// server here chooses them: AES-128-GCM first (as Go's TLS does: it costs 10 AES rounds a block
/// to AES-256's 14, and reading warm segments over TLS is bound by the cipher), then AES-256-GCM,
/// then ChaCha20-Poly1305; TLS 1.3 suites before TLS 1.2 ones.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite_rank(suite.suite()));
    Arc::new(provider)
}

/// Where a cipher suite comes in [`provider`]'s order (lower first).
fn suite_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 4,
        _ => 5,
    }
}
