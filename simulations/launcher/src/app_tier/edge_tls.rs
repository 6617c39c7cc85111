//! TLS at the edge: the certificate and key nginx serves HTTPS and WSS with on the
//! public port (`parley-sim up --tls-cert FILE --tls-key FILE`). The nodes behind nginx
//! stay plain HTTP on loopback.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The PEM files nginx terminates TLS with. Paths are absolute once
/// [`EdgeTlsFiles::checked`] made them so: nginx resolves relative ones against its own
/// prefix (the state dir), not against the directory parley-sim was started in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeTlsFiles {
    /// The server certificate, optionally followed by its intermediate CAs (PEM).
    pub certificate: PathBuf,
    /// The certificate's private key (PEM).
    pub key: PathBuf,
}

impl EdgeTlsFiles {
    /// Both files made absolute, and checked to be readable PEM, so that a typo is
    /// reported by name here rather than as nginx failing to start.
    pub fn checked(certificate: &Path, key: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            certificate: checked_pem_file(certificate, "CERTIFICATE", "--tls-cert")?,
            key: checked_pem_file(key, "PRIVATE KEY", "--tls-key")?,
        })
    }
}

fn checked_pem_file(path: &Path, expected_label: &str, flag: &str) -> anyhow::Result<PathBuf> {
    let absolute = path
        .canonicalize()
        .with_context(|| format!("{flag} {}: cannot find the file", path.display()))?;
    let contents =
        std::fs::read_to_string(&absolute).with_context(|| format!("{flag} {}: cannot read it", path.display()))?;
    // `-----BEGIN PRIVATE KEY-----`, `-----BEGIN EC PRIVATE KEY-----`, `-----BEGIN RSA …`
    // all end with the label; a certificate is `-----BEGIN CERTIFICATE-----`.
    let has_block = contents
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.trim_end().ends_with(&format!("{expected_label}-----")));
    if !has_block {
        bail!("{flag} {}: no PEM block \"{expected_label}\" in it", path.display());
    }
    Ok(absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_pem_files_and_names_the_flag_of_a_bad_one() {
        let directory = tempfile::tempdir().unwrap();
        let certificate = directory.path().join("cert.pem");
        let key = directory.path().join("key.pem");
        std::fs::write(
            &certificate,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let files = EdgeTlsFiles::checked(&certificate, &key).unwrap();
        assert!(files.certificate.is_absolute() && files.key.is_absolute());

        let error = EdgeTlsFiles::checked(&key, &certificate).unwrap_err();
        assert!(format!("{error:#}").contains("--tls-cert"), "{error:#}");
        let error = EdgeTlsFiles::checked(&certificate, &directory.path().join("missing.pem")).unwrap_err();
        assert!(format!("{error:#}").contains("--tls-key"), "{error:#}");
    }
}
