//! Optional TLS between cluster nodes, with mutual authentication.
//!
//! ```text
//! node A (client side)                       node B (server side, NodeServer listener)
//!   presents its certificate  ──────────────▶  requires a client certificate issued by the CA
//!   checks B's certificate    ◀──────────────  presents its certificate
//!     against the CA, for the fixed
//!     server name (default `parley-cluster`)
//! ```
//!
//! Nodes dial each other by address (`node-2:4369`, `127.0.0.1:40123`), which says
//! nothing a certificate could vouch for; so every node certificate carries one shared
//! DNS name in its subject alternative names and the client checks that name. Any
//! certificate the CA issued admits a node: the CA must be dedicated to the cluster.
//! The cookie challenge still runs inside the TLS session.
//!
//! rustls needs a crypto provider. The workspace enables both of rustls' providers
//! (aws-lc-rs through ractor_cluster, ring through the HTTP and MySQL clients), so
//! rustls cannot pick a process default and would panic; the configs here name
//! aws-lc-rs explicitly instead of relying on one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::{aws_lc_rs, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{version, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The DNS name every node certificate carries when no other is configured.
pub const DEFAULT_CLUSTER_SERVER_NAME: &str = "parley-cluster";

/// Where a node finds its TLS material (PEM files) and which name peers' certificates
/// must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    /// This node's certificate chain, leaf first.
    pub certificate: PathBuf,
    /// This node's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// The cluster's CA: peers' certificates must chain to it.
    pub certificate_authority: PathBuf,
    /// The DNS name checked in a peer's certificate when this node dials it.
    pub server_name: String,
}

/// Why the cluster's TLS material cannot be used. Each message carries its cause
/// (`cause`, not `source`, so an error chain does not print it twice).
#[derive(Debug, thiserror::Error)]
pub enum ClusterTlsError {
    /// A file could not be read (missing, no permission).
    #[error("cannot read the cluster TLS {what} {path}: {cause}")]
    Unreadable {
        /// Which file: `certificate`, `private key` or `CA`.
        what: &'static str,
        /// The path as configured.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A certificate or CA file holds no `CERTIFICATE` PEM block.
    #[error("the cluster TLS {what} {path} holds no PEM certificate")]
    NoCertificate {
        /// Which file: `certificate` or `CA`.
        what: &'static str,
        /// The path as configured.
        path: PathBuf,
    },
    /// A file is not valid PEM.
    #[error("the cluster TLS {what} {path} is not valid PEM: {cause}")]
    BadPem {
        /// Which file: `certificate` or `CA`.
        what: &'static str,
        /// The path as configured.
        path: PathBuf,
        /// What the PEM parser found wrong.
        cause: tokio_rustls::rustls::pki_types::pem::Error,
    },
    /// The private key file holds no key rustls can use (none, or an unsupported kind).
    #[error("the cluster TLS private key {path} holds no usable private key: {cause}")]
    BadPrivateKey {
        /// The path as configured.
        path: PathBuf,
        /// What the PEM parser found wrong.
        cause: tokio_rustls::rustls::pki_types::pem::Error,
    },
    /// A CA certificate cannot be used as a trust anchor.
    #[error("the cluster TLS CA {path} holds a certificate that cannot be a trust anchor: {cause}")]
    BadCertificateAuthority {
        /// The path as configured.
        path: PathBuf,
        /// Why rustls refused it.
        cause: tokio_rustls::rustls::Error,
    },
    /// The configured server name is not a valid DNS name; holds the name.
    #[error("cluster TLS server name {0:?} is not a valid DNS name")]
    BadServerName(String),
    /// rustls refused the material for one side (e.g. the key does not match the
    /// certificate).
    #[error("cannot build the cluster TLS {side} configuration: {reason}")]
    Configuration {
        /// `server` (the acceptor) or `client` (the connector).
        side: &'static str,
        /// rustls's message.
        reason: String,
    },
}

/// Ready-made TLS for the cluster: the listener's acceptor, the dialler's connector and
/// the name a dialled peer's certificate must carry.
#[derive(Clone)]
pub struct ClusterTls {
    /// Accepts peers' connections; requires a client certificate issued by the CA.
    pub acceptor: TlsAcceptor,
    /// Dials peers, presenting this node's certificate and checking theirs against the CA.
    pub connector: TlsConnector,
    /// The name every peer's certificate must carry (one name for the whole cluster).
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configs hold the private key: show only what identifies the setup.
        formatter
            .debug_struct("ClusterTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Reads the PEM files and builds both sides: the server requires a client
    /// certificate issued by the CA, the client checks the server's certificate against
    /// the CA and the server name. TLS 1.3 only: every peer is a Parley node.
    pub fn load(files: &ClusterTlsFiles) -> Result<ClusterTls, ClusterTlsError> {
        let server_name = ServerName::try_from(files.server_name.clone())
            .map_err(|_| ClusterTlsError::BadServerName(files.server_name.clone()))?;
        let certificate_chain = read_certificates("certificate", &files.certificate)?;
        let private_key = read_private_key(&files.private_key)?;
        let trust_anchors = Arc::new(read_trust_anchors(&files.certificate_authority)?);
        let provider: Arc<CryptoProvider> = Arc::new(aws_lc_rs::default_provider());

        let client_verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&trust_anchors), provider.clone())
            .build()
            .map_err(|error| configuration_error("server", error))?;
        let server_config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&version::TLS13])
            .map_err(|error| configuration_error("server", error))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(certificate_chain.clone(), private_key.clone_key())
            .map_err(|error| configuration_error("server", error))?;
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&version::TLS13])
            .map_err(|error| configuration_error("client", error))?
            .with_root_certificates(trust_anchors)
            .with_client_auth_cert(certificate_chain, private_key)
            .map_err(|error| configuration_error("client", error))?;
        Ok(ClusterTls {
            acceptor: TlsAcceptor::from(Arc::new(server_config)),
            connector: TlsConnector::from(Arc::new(client_config)),
            server_name,
        })
    }
}

fn configuration_error(side: &'static str, error: impl std::fmt::Display) -> ClusterTlsError {
    ClusterTlsError::Configuration {
        side,
        reason: error.to_string(),
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ClusterTlsError> {
    std::fs::read(path).map_err(|cause| ClusterTlsError::Unreadable {
        what,
        path: path.to_path_buf(),
        cause,
    })
}

fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ClusterTlsError> {
    let pem = read_file(what, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|cause| ClusterTlsError::BadPem {
            what,
            path: path.to_path_buf(),
            cause,
        })?;
    if certificates.is_empty() {
        return Err(ClusterTlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ClusterTlsError> {
    let pem = read_file("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|cause| ClusterTlsError::BadPrivateKey {
        path: path.to_path_buf(),
        cause,
    })
}

fn read_trust_anchors(path: &Path) -> Result<RootCertStore, ClusterTlsError> {
    let mut trust_anchors = RootCertStore::empty();
    for certificate in read_certificates("CA", path)? {
        trust_anchors
            .add(certificate)
            .map_err(|cause| ClusterTlsError::BadCertificateAuthority {
                path: path.to_path_buf(),
                cause,
            })?;
    }
    Ok(trust_anchors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Authority = CertifiedIssuer<'static, KeyPair>;

    fn new_authority() -> Authority {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// Writes `authority`'s certificate as `<ca_name>-ca.pem` and a certificate it issued
    /// for the cluster server name as `<node>.pem` and `<node>.key`, all in `directory`.
    fn issue(directory: &Path, authority: &Authority, ca_name: &str, node: &str) -> ClusterTlsFiles {
        let mut params = CertificateParams::new(vec![DEFAULT_CLUSTER_SERVER_NAME.to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, authority).unwrap();
        let files = ClusterTlsFiles {
            certificate: directory.join(format!("{node}.pem")),
            private_key: directory.join(format!("{node}.key")),
            certificate_authority: directory.join(format!("{ca_name}-ca.pem")),
            server_name: DEFAULT_CLUSTER_SERVER_NAME.to_owned(),
        };
        std::fs::write(&files.certificate, certificate.pem()).unwrap();
        std::fs::write(&files.private_key, key.serialize_pem()).unwrap();
        std::fs::write(&files.certificate_authority, authority.pem()).unwrap();
        files
    }

    /// A handshake between `client` and `server` over an in-memory pipe, then one byte
    /// each way: Ok only if both sides accepted the other.
    async fn handshake(client: &ClusterTls, server: &ClusterTls) -> Result<(), String> {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let acceptor = server.acceptor.clone();
        let accepting = tokio::spawn(async move {
            let mut stream = acceptor.accept(server_end).await.map_err(|error| error.to_string())?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.map_err(|error| error.to_string())?;
            stream.write_all(&byte).await.map_err(|error| error.to_string())?;
            stream.flush().await.map_err(|error| error.to_string())
        });
        let connecting = async {
            let mut stream = client
                .connector
                .connect(client.server_name.clone(), client_end)
                .await
                .map_err(|error| error.to_string())?;
            stream.write_all(b"x").await.map_err(|error| error.to_string())?;
            stream.flush().await.map_err(|error| error.to_string())?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.map_err(|error| error.to_string())
        };
        let client_outcome = connecting.await;
        let server_outcome = accepting.await.unwrap();
        client_outcome?;
        server_outcome
    }

    #[tokio::test]
    async fn nodes_of_one_ca_authenticate_each_other_both_ways() {
        let directory = tempfile::tempdir().unwrap();
        let authority = new_authority();
        let node_1 = ClusterTls::load(&issue(directory.path(), &authority, "cluster", "node-1")).unwrap();
        let node_2 = ClusterTls::load(&issue(directory.path(), &authority, "cluster", "node-2")).unwrap();
        handshake(&node_1, &node_2).await.unwrap();
        handshake(&node_2, &node_1).await.unwrap();
    }

    #[tokio::test]
    async fn a_node_of_another_ca_is_refused_both_as_client_and_as_server() {
        let directory = tempfile::tempdir().unwrap();
        let member = ClusterTls::load(&issue(directory.path(), &new_authority(), "cluster", "node-1")).unwrap();
        let stranger = ClusterTls::load(&issue(directory.path(), &new_authority(), "other", "stranger")).unwrap();
        assert!(
            handshake(&stranger, &member).await.is_err(),
            "the member accepted a stranger"
        );
        assert!(
            handshake(&member, &stranger).await.is_err(),
            "the member trusted a stranger"
        );
    }

    #[tokio::test]
    async fn a_certificate_without_the_expected_server_name_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let mut files = issue(directory.path(), &new_authority(), "cluster", "node-1");
        let server = ClusterTls::load(&files).unwrap();
        files.server_name = "another-cluster".to_owned();
        let client = ClusterTls::load(&files).unwrap();
        let refused = handshake(&client, &server).await.unwrap_err();
        assert!(refused.contains("not valid for name"), "{refused}");
    }

    #[test]
    fn unusable_files_are_refused_with_their_path() {
        let directory = tempfile::tempdir().unwrap();
        let files = issue(directory.path(), &new_authority(), "cluster", "node-1");
        let refuse = |files: &ClusterTlsFiles| ClusterTls::load(files).unwrap_err();

        let mut missing = files.clone();
        missing.certificate = directory.path().join("absent.pem");
        let refused = refuse(&missing);
        assert!(matches!(refused, ClusterTlsError::Unreadable { .. }), "{refused}");
        assert!(refused.to_string().contains("absent.pem"), "{refused}");

        let mut not_a_key = files.clone();
        not_a_key.private_key = files.certificate.clone();
        assert!(matches!(refuse(&not_a_key), ClusterTlsError::BadPrivateKey { .. }));

        let mut empty_ca = files.clone();
        empty_ca.certificate_authority = directory.path().join("empty.pem");
        std::fs::write(&empty_ca.certificate_authority, "").unwrap();
        assert!(matches!(refuse(&empty_ca), ClusterTlsError::NoCertificate { .. }));

        // Another node's key with this node's certificate.
        let mut mismatched = files.clone();
        mismatched.private_key = issue(directory.path(), &new_authority(), "other", "node-2").private_key;
        let refused = refuse(&mismatched);
        assert!(matches!(refused, ClusterTlsError::Configuration { .. }), "{refused}");

        let mut bad_name = files;
        bad_name.server_name = "not a name".to_owned();
        assert!(matches!(refuse(&bad_name), ClusterTlsError::BadServerName(_)));
    }
}
