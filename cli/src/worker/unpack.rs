//! Unpacking a source zip safely: no path may leave the target directory, no
//! symbolic links, and limits on entries and unpacked bytes (zip bombs).

use std::io::Read;
use std::path::Path;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Not a zip.
    #[error("not a zip archive: {0}")]
    NotZip(String),
    /// A path that would leave the directory, or an absolute one.
    #[error("unsafe path in the archive: {0}")]
    UnsafePath(String),
    /// A symbolic link.
    #[error("symbolic links are not allowed: {0}")]
    Symlink(String),
    /// Too many entries or bytes.
    #[error("the archive is larger than allowed ({0})")]
    TooLarge(String),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Most entries accepted.
pub const MAX_ENTRIES: usize = 200_000;

/// Unpacks `zip` into `dir`, at most `max_bytes` bytes in all.
pub fn unpack(zip: &Path, dir: &Path, max_bytes: u64) -> Result<u64, UnpackError> {
    let file = std::fs::File::open(zip)?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| UnpackError::NotZip(e.to_string()))?;
    if archive.len() > MAX_ENTRIES {
        return Err(UnpackError::TooLarge(format!("{} entries", archive.len())));
    }
    let mut total = 0u64;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|e| UnpackError::NotZip(e.to_string()))?;
        let raw_name = entry.name().map(|n| n.to_string()).unwrap_or_default();
        if raw_name.starts_with('/') || raw_name.contains('\\') {
            return Err(UnpackError::UnsafePath(raw_name));
        }
        let Some(relative) = entry.enclosed_name() else {
            return Err(UnpackError::UnsafePath(raw_name));
        };
        if entry.unix_mode().is_some_and(|m| m & 0o170000 == 0o120000) {
            return Err(UnpackError::Symlink(raw_name));
        }
        let target = dir.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::File::create(&target)?;
        let budget = max_bytes.saturating_sub(total);
        let copied = std::io::copy(&mut (&mut entry).take(budget.saturating_add(1)), &mut out)?;
        total += copied;
        if total > max_bytes {
            return Err(UnpackError::TooLarge(format!("more than {max_bytes} bytes")));
        }
        #[cfg(unix)]
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode & 0o755))?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_with(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        {
            let mut zip = zip::ZipWriter::new(file.as_file_mut());
            for (name, content) in entries {
                zip.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
                zip.write_all(content).unwrap();
            }
            zip.finish().unwrap();
        }
        file
    }

    #[test]
    fn a_normal_project_unpacks() {
        let zip = zip_with(&[("app.json", b"{}"), ("src/App.tsx", b"x")]);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(unpack(zip.path(), dir.path(), 1024).unwrap(), 3);
        assert!(dir.path().join("src/App.tsx").is_file());
    }

    #[test]
    fn traversal_absolute_paths_and_bombs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["../evil", "/etc/evil", "a/../../evil"] {
            let zip = zip_with(&[(name, b"x")]);
            assert!(matches!(unpack(zip.path(), dir.path(), 1024), Err(UnpackError::UnsafePath(_))), "{name}");
        }
        let zip = zip_with(&[("big", &[0u8; 4096])]);
        assert!(matches!(unpack(zip.path(), dir.path(), 1000), Err(UnpackError::TooLarge(_))));
        assert!(!dir.path().parent().unwrap().join("evil").exists());
    }
}
