//! Certificates for cluster TLS, made at run time: a CA of the cluster's own and one
//! certificate per node, for `parley-sim up --cluster-tls` and the tests. The repository
//! holds no private key.
//!
//! ```text
//! <directory>/ca.pem                 the cluster's CA (every node trusts it)
//! <directory>/<node_name>.pem        the node's certificate, issued by the CA
//! <directory>/<node_name>.key        its private key (mode 0600)
//! ```
//!
//! Every node certificate carries the same DNS name, `parley-cluster` (the node's
//! `--cluster-tls-server-name` default), because nodes dial each other by address; and
//! it is good for both server and client authentication, since each node is both.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// The name every node certificate carries, as the node checks it by default.
pub const CLUSTER_SERVER_NAME: &str = "parley-cluster";

/// A CA that issues node certificates.
pub struct ClusterCertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl ClusterCertificateAuthority {
    /// A new CA with a fresh key; `name` becomes its common name (tells CAs apart in errors).
    pub fn generate(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().context("generating the CA key")?;
        let issuer = CertifiedIssuer::self_signed(params, key).context("self-signing the CA certificate")?;
        Ok(Self { issuer })
    }

    /// Writes the CA's certificate (not its key: nothing needs it after the run).
    pub fn write_certificate(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.issuer.pem()).with_context(|| format!("writing {}", path.display()))
    }

    /// Issues `node_name`'s certificate and writes it with its key into `directory`.
    pub fn write_node_certificate(&self, directory: &Path, node_name: &str) -> anyhow::Result<()> {
        let mut params = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_owned()])
            .context("the cluster server name as a subject alternative name")?;
        params.distinguished_name.push(DnType::CommonName, node_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().with_context(|| format!("generating {node_name}'s key"))?;
        let certificate = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("issuing {node_name}'s certificate"))?;
        let certificate_path = node_certificate_path(directory, node_name);
        std::fs::write(&certificate_path, certificate.pem())
            .with_context(|| format!("writing {}", certificate_path.display()))?;
        write_private(&node_key_path(directory, node_name), &key.serialize_pem())
    }
}

/// A fresh CA and a certificate for each node, in `directory` (created if needed).
pub fn write_cluster_certificates(directory: &Path, node_names: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
    let authority = ClusterCertificateAuthority::generate("parley cluster CA")?;
    authority.write_certificate(&ca_certificate_path(directory))?;
    for node_name in node_names {
        authority.write_node_certificate(directory, node_name)?;
    }
    Ok(())
}

/// The node flags for the files in `directory`, with the launcher's `{{node_name}}`
/// placeholder so one list serves every node.
pub fn cluster_tls_node_args(directory: &Path) -> Vec<String> {
    let placeholder = "{{node_name}}";
    vec![
        "--cluster-tls-cert".to_owned(),
        node_certificate_path(directory, placeholder).display().to_string(),
        "--cluster-tls-key".to_owned(),
        node_key_path(directory, placeholder).display().to_string(),
        "--cluster-tls-ca".to_owned(),
        ca_certificate_path(directory).display().to_string(),
    ]
}

/// Where the cluster CA's certificate is written in `directory`.
pub fn ca_certificate_path(directory: &Path) -> PathBuf {
    directory.join("ca.pem")
}

/// Where `node_name`'s certificate is written in `directory`.
pub fn node_certificate_path(directory: &Path, node_name: &str) -> PathBuf {
    directory.join(format!("{node_name}.pem"))
}

/// Where `node_name`'s private key is written in `directory` (mode 0600).
pub fn node_key_path(directory: &Path, node_name: &str) -> PathBuf {
    directory.join(format!("{node_name}.key"))
}

/// Writes a private key readable by its owner only, from the moment it exists.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_and_each_nodes_certificate_and_private_key() {
        let directory = tempfile::tempdir().unwrap();
        let names = ["node-1".to_owned(), "node-2".to_owned()];
        write_cluster_certificates(directory.path(), &names).unwrap();
        let ca = std::fs::read_to_string(ca_certificate_path(directory.path())).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        for name in &names {
            let certificate = std::fs::read_to_string(node_certificate_path(directory.path(), name)).unwrap();
            assert!(certificate.starts_with("-----BEGIN CERTIFICATE-----"));
            let key_path = node_key_path(directory.path(), name);
            assert!(std::fs::read_to_string(&key_path).unwrap().contains("PRIVATE KEY"));
            let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_path).unwrap().permissions());
            assert_eq!(mode & 0o777, 0o600, "{name}'s key is readable by others");
        }
        let args = cluster_tls_node_args(directory.path());
        assert!(args.iter().any(|arg| arg.ends_with("{{node_name}}.pem")), "{args:?}");
    }
}
