//! Reading a submitter's certificate bundle for the build VM (`certs-secure`).
//!
//! The bundle is a zip holding a `.p12`, an optional `password.txt` and any number
//! of `.mobileprovision` files. Entry names with `..`, a leading `/` or a backslash
//! are refused, and so is a bundle larger than the unzipped limit (zip bombs).
//! Nothing touches the filesystem: entries are read into memory (at most the
//! limit), a nested archive or a symbolic-link entry is just bytes, a duplicate
//! name means the last one counts, and the `.p12` and its password are passed to
//! the VM as they are (the VM's keychain import checks the password).

use std::io::Read;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The VM's view of a bundle (wire names are camelCase).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningMaterial {
    /// The last `.p12` entry, base64.
    pub p12: String,
    /// `password.txt`, trimmed ("" when absent).
    pub p12_password: String,
    /// A fresh random password for the VM's temporary keychain.
    pub keychain_password: String,
    /// Every `.mobileprovision` entry, base64.
    pub provisioning_profiles: Vec<String>,
}

/// Why a bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a zip archive (for example a raw `.p12`).
    #[error("not a zip archive")]
    NotZip,
    /// An entry name that could escape a directory.
    #[error("unsafe entry name in the bundle")]
    UnsafeName,
    /// Too large once unzipped.
    #[error("the bundle is larger than {0} bytes unzipped")]
    TooLarge(u64),
    /// No `.p12` inside.
    #[error("no .p12 certificate in the bundle")]
    NoP12,
    /// An entry could not be read.
    #[error("unreadable entry: {0}")]
    Corrupt(String),
}

/// Reads a bundle from its bytes, unzipping at most `max_unzipped` bytes.
pub fn read_bundle(zip_bytes: &[u8], max_unzipped: u64) -> Result<SigningMaterial, BundleError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).map_err(|_| BundleError::NotZip)?;
    let mut total = 0u64;
    let mut p12 = None;
    let mut password = String::new();
    let mut profiles = Vec::new();
    for index in 0..archive.len() {
        let entry = archive.by_index(index).map_err(|e| BundleError::Corrupt(e.to_string()))?;
        let name = entry.name().map_err(|_| BundleError::UnsafeName)?.to_string();
        if name.contains("..") || name.starts_with('/') || name.contains('\\') {
            return Err(BundleError::UnsafeName);
        }
        if entry.is_dir() {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        let base = lower.rsplit('/').next().unwrap_or_default().to_owned();
        let wanted = base.ends_with(".p12") || base == "password.txt" || base.ends_with(".mobileprovision");
        if !wanted || base.starts_with("._") {
            continue;
        }
        // Never trust the declared size: read at most what is left of the budget.
        let budget = max_unzipped.saturating_sub(total);
        let mut content = Vec::new();
        entry
            .take(budget.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(|e| BundleError::Corrupt(e.to_string()))?;
        total += content.len() as u64;
        if total > max_unzipped {
            return Err(BundleError::TooLarge(max_unzipped));
        }
        if base.ends_with(".p12") {
            p12 = Some(content);
        } else if base == "password.txt" {
            password = String::from_utf8_lossy(&content).trim().to_owned();
        } else {
            profiles.push(STANDARD.encode(&content));
        }
    }
    let p12 = p12.ok_or(BundleError::NoP12)?;
    let mut keychain = [0u8; 24];
    getrandom_fill(&mut keychain);
    Ok(SigningMaterial {
        p12: STANDARD.encode(p12),
        p12_password: password,
        keychain_password: STANDARD.encode(keychain),
        provisioning_profiles: profiles,
    })
}

fn getrandom_fill(buf: &mut [u8]) {
    // A token is 32 random bytes; take what we need from one.
    let token = dispatcher::auth::generate_token();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).expect("tokens are base64url");
    buf.copy_from_slice(&bytes[..buf.len()]);
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut out);
        for (name, content) in entries {
            writer.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            writer.write_all(content).unwrap();
        }
        writer.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn a_bundle_yields_its_certificate_password_and_profiles() {
        let bundle = zip_of(&[
            ("cert.p12", b"P12DATA"),
            ("password.txt", b"  hunter2\n"),
            ("a.mobileprovision", b"PROFILE-A"),
            ("dir/b.mobileprovision", b"PROFILE-B"),
            ("README.md", b"ignored"),
        ]);
        let material = read_bundle(&bundle, 1024).unwrap();
        assert_eq!(material.p12, STANDARD.encode(b"P12DATA"));
        assert_eq!(material.p12_password, "hunter2");
        assert_eq!(material.provisioning_profiles.len(), 2);
        assert_eq!(STANDARD.decode(&material.keychain_password).unwrap().len(), 24);
    }

    #[test]
    fn unsafe_names_raw_files_and_bombs_are_refused() {
        assert!(matches!(read_bundle(&zip_of(&[("../evil.p12", b"x")]), 1024), Err(BundleError::UnsafeName)));
        assert!(matches!(read_bundle(&zip_of(&[("/abs.p12", b"x")]), 1024), Err(BundleError::UnsafeName)));
        assert!(matches!(read_bundle(b"raw p12 bytes", 1024), Err(BundleError::NotZip)));
        assert!(matches!(read_bundle(&zip_of(&[("a.mobileprovision", b"x")]), 1024), Err(BundleError::NoP12)));
        let big = vec![0u8; 4096];
        assert!(matches!(read_bundle(&zip_of(&[("cert.p12", &big)]), 1024), Err(BundleError::TooLarge(1024))));
    }
}
