//! A throwaway certificate authority for TLS tests: rcgen issues a CA and leaves for
//! `localhost` and 127.0.0.1 into a directory, as PEM files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use testkit::TlsFiles;

/// A certificate authority whose certificate is `<dir>/<name>.pem`.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl Ca {
    /// A new self-signed CA named `name`, written to `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA");
        std::fs::write(dir.join(format!("{name}.pem")), issuer.pem()).expect("write CA");
        Ca {
            issuer,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// The CA certificate's file.
    pub fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// A leaf for `localhost` and the IP address 127.0.0.1 with the common name `cn` (rcgen's
    /// default validity, 1975 to 4096), written to `<file>.pem` and `<file>.key`; its files, with this
    /// CA as the peer's CA.
    pub fn issue(&self, file: &str, cn: &str) -> TlsFiles {
        self.leaf(file, cn, None)
    }

    /// [`Ca::issue`] for a leaf that expires on 1 January of `year`.
    pub fn issue_until(&self, file: &str, cn: &str, year: i32) -> TlsFiles {
        self.leaf(file, cn, Some(year))
    }

    fn leaf(&self, file: &str, cn: &str, until: Option<i32>) -> TlsFiles {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(year) = until {
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = TlsFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            ca: self.pem(),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}
