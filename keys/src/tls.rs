//! TLS identity and roster pinning for QUIC.
//!
//! A node's TLS certificate is self-signed (rcgen) with the node's own ed25519 key, so the
//! certificate's SubjectPublicKeyInfo *is* the node identity. Both directions authenticate: the
//! [`PinnedKeys`] verifier, used as server verifier on the client and as client verifier on the
//! server, accepts an end-entity certificate only if its ed25519 key is in the roster and never
//! looks at names, CAs or validity dates. TLS 1.2 is refused (QUIC is TLS 1.3 only), and the only
//! signature scheme offered or accepted is ED25519. ring is the one crypto provider.
//!
//! Session resumption is off both ways (a resumed session would skip the key check, so a key
//! removed from the roster by a reload could come back on an old ticket).
//!
//! A client whose key the server refuses still sees its connect finish (the TLS 1.3 client
//! finishes first); the refusal arrives as a connection close with a crypto error. Callers must
//! therefore treat a peer as authenticated only once they have exchanged application data.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::{PublicKey, SecretKey};

/// ALPN protocol id of spdu's gossip protocol.
pub const ALPN: &[u8] = b"spdu/1";

/// The DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Errors building TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rcgen could not make the self-signed certificate.
    #[error("cannot build certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot build TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("cannot build QUIC crypto config: {0}")]
    Quic(String),
}

/// The set of keys this node trusts (its roster, without itself), shared by both verifiers.
/// Replaced as a whole on a reload ([`PinnedKeys::replace`]): every handshake from then on is
/// checked against the new set (connections already established are the caller's to close).
///
/// Counts every refused handshake so operators can see strangers knocking.
#[derive(Debug)]
pub struct PinnedKeys {
    keys: RwLock<HashSet<PublicKey>>,
    refused: AtomicU64,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedKeys {
    /// Pins exactly `keys`.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Arc<Self> {
        Arc::new(Self {
            keys: RwLock::new(keys.into_iter().collect()),
            refused: AtomicU64::new(0),
            algorithms: provider().signature_verification_algorithms,
        })
    }

    /// Whether `key` is pinned.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).contains(key)
    }

    /// Pins exactly `keys` from now on (a reload's new roster).
    pub fn replace(&self, keys: impl IntoIterator<Item = PublicKey>) {
        let keys: HashSet<PublicKey> = keys.into_iter().collect();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
    }

    /// How many handshakes were refused because the peer's key is not pinned (or unusable).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let accepted = certificate_key(end_entity).filter(|k| self.contains(k));
        if accepted.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(())
    }
}

/// The ed25519 key carried by a certificate, if it carries one.
pub fn certificate_key(cert: &CertificateDer<'_>) -> Option<PublicKey> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = ee.subject_public_key_info();
    let raw = spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    PublicKey::from_bytes(raw.try_into().ok()?).ok()
}

/// The authenticated key of the peer of an established QUIC connection.
pub fn peer_key(conn: &quinn::Connection) -> Option<PublicKey> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certificate_key(chain.first()?)
}

#[derive(Debug)]
struct Verifier(Arc<PinnedKeys>);

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.check(end_entity).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for Verifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.check(end_entity).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn identity(key: &SecretKey) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let der = PrivatePkcs8KeyDer::from(key.to_pkcs8_der());
    let key_pair = rcgen::KeyPair::try_from(&der)?;
    let cert = rcgen::CertificateParams::new(vec!["spdu".to_owned()])?.self_signed(&key_pair)?;
    Ok((vec![cert.der().clone()], PrivateKeyDer::Pkcs8(der)))
}

/// QUIC server config: presents `key`'s certificate, requires a client certificate from `pinned`.
pub fn server_config(key: &SecretKey, pinned: Arc<PinnedKeys>) -> Result<quinn::ServerConfig, TlsError> {
    let (chain, private) = identity(key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(Verifier(pinned)))
        .with_single_cert(chain, private)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption: a resumed session skips the certificate check, so a key removed from the
    // roster could come back on a ticket. Every handshake is a full one.
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

/// QUIC client config: presents `key`'s certificate, accepts only servers in `pinned`.
///
/// Any pinned key is accepted; a caller that dialled a specific peer must compare
/// [`peer_key`] with the key it expected.
pub fn client_config(key: &SecretKey, pinned: Arc<PinnedKeys>) -> Result<quinn::ClientConfig, TlsError> {
    let (chain, private) = identity(key)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier(pinned)))
        .with_client_auth_cert(chain, private)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // See server_config: no resumption, the server's key is checked on every handshake.
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    struct Side {
        key: SecretKey,
        endpoint: quinn::Endpoint,
        pinned: Arc<PinnedKeys>,
    }

    fn side(seed: u8, trusts: &[PublicKey]) -> Side {
        let key = SecretKey::from_bytes(&[seed; 32]);
        let pinned = PinnedKeys::new(trusts.iter().copied());
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut endpoint =
            quinn::Endpoint::server(server_config(&key, pinned.clone()).unwrap(), addr).unwrap();
        endpoint.set_default_client_config(client_config(&key, pinned.clone()).unwrap());
        Side { key, endpoint, pinned }
    }

    fn pk(seed: u8) -> PublicKey {
        SecretKey::from_bytes(&[seed; 32]).public()
    }

    /// Dials `to` from `from`, sends one uni stream, returns what `to` read (or the error).
    async fn exchange(from: &Side, to: &Side) -> Result<(PublicKey, PublicKey), String> {
        let server_addr = to.endpoint.local_addr().unwrap();
        let accept = async {
            let incoming = to.endpoint.accept().await.ok_or("endpoint closed")?;
            let conn = incoming.await.map_err(|e| format!("server: {e}"))?;
            let mut stream = conn.accept_uni().await.map_err(|e| format!("server: {e}"))?;
            let data = stream.read_to_end(64).await.map_err(|e| format!("server: {e}"))?;
            assert_eq!(data, b"hello");
            Ok::<_, String>(peer_key(&conn).unwrap())
        };
        let dial = async {
            let conn = from
                .endpoint
                .connect(server_addr, "spdu")
                .unwrap()
                .await
                .map_err(|e| format!("client: {e}"))?;
            let mut stream = conn.open_uni().await.map_err(|e| format!("client: {e}"))?;
            stream.write_all(b"hello").await.map_err(|e| format!("client: {e}"))?;
            stream.finish().unwrap();
            let server_key = peer_key(&conn).unwrap();
            // Wait until the server has read, or the connection was refused.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
            Ok::<_, String>(server_key)
        };
        let accept = tokio::time::timeout(std::time::Duration::from_secs(5), accept);
        let (a, d) = tokio::join!(accept, dial);
        let client_seen_by_server = a.map_err(|_| "server timed out".to_owned())??;
        Ok((client_seen_by_server, d?))
    }

    #[tokio::test]
    async fn roster_members_authenticate_each_other() {
        let a = side(1, &[pk(2)]);
        let b = side(2, &[pk(1)]);
        let (client, server) = exchange(&a, &b).await.unwrap();
        assert_eq!(client, a.key.public());
        assert_eq!(server, b.key.public());
        assert_eq!(a.pinned.refused() + b.pinned.refused(), 0);
    }

    #[tokio::test]
    async fn server_refuses_unknown_client_key() {
        let stranger = side(9, &[pk(2)]);
        let b = side(2, &[pk(1)]);
        let err = exchange(&stranger, &b).await.unwrap_err();
        assert!(err.contains("server"), "{err}");
        assert_eq!(b.pinned.refused(), 1);
    }

    #[tokio::test]
    async fn client_refuses_unknown_server_key() {
        let a = side(1, &[pk(2)]);
        let impostor = side(9, &[pk(1)]);
        let err = exchange(&a, &impostor).await.unwrap_err();
        assert!(err.contains("client") || err.contains("server"), "{err}");
        assert_eq!(a.pinned.refused(), 1);
    }

    #[tokio::test]
    async fn replaced_keys_apply_to_the_next_handshakes() {
        let a = side(1, &[pk(2)]);
        let b = side(2, &[pk(3)]);
        assert!(exchange(&a, &b).await.is_err(), "b does not pin a yet");
        assert_eq!(b.pinned.refused(), 1);
        b.pinned.replace([pk(1), pk(3)]);
        let (client, _) = exchange(&a, &b).await.unwrap();
        assert_eq!(client, a.key.public());
        // a drops b from its roster: a refuses b as a server from then on.
        a.pinned.replace([pk(3)]);
        assert!(!a.pinned.contains(&pk(2)) && a.pinned.contains(&pk(3)));
        assert!(exchange(&a, &b).await.is_err());
        assert_eq!(a.pinned.refused(), 1);
        // And the other way: b drops a, a (trusting b again) is refused as a client, however
        // recently it was accepted.
        a.pinned.replace([pk(2)]);
        b.pinned.replace([pk(3)]);
        assert!(exchange(&a, &b).await.is_err());
        assert_eq!(b.pinned.refused(), 2);
    }

    #[test]
    fn certificate_carries_exactly_the_node_key() {
        let key = SecretKey::from_bytes(&[5; 32]);
        let (chain, _) = identity(&key).unwrap();
        assert_eq!(certificate_key(&chain[0]), Some(key.public()));
        assert_eq!(certificate_key(&CertificateDer::from(vec![0x30, 0x00])), None);
    }
}
