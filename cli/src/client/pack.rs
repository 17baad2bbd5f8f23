//! Packing a project directory into a zip, honouring ignore files.
//!
//! `.gitignore` (also outside a git repository), `.easignore` and `.ignore` rules
//! apply; `.git` is always left out. The zip is written to a temporary file, never
//! held in memory.

use std::io::{Seek, Write};
use std::path::Path;

use ignore::WalkBuilder;
use zip::write::SimpleFileOptions;

/// A packed project.
pub struct Packed {
    /// The zip (deleted when dropped).
    pub file: tempfile::NamedTempFile,
    /// Files inside.
    pub files: usize,
    /// Size of the zip.
    pub bytes: u64,
}

/// Zips `dir` into a temporary file.
pub fn pack_dir(dir: &Path) -> std::io::Result<Packed> {
    let mut file = tempfile::Builder::new().prefix("freeagent-").suffix(".zip").tempfile()?;
    let mut files = 0;
    {
        let mut zip = zip::ZipWriter::new(file.as_file_mut());
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).unix_permissions(0o644);
        let walker = WalkBuilder::new(dir)
            .hidden(false)
            .git_ignore(true)
            .git_exclude(true)
            .require_git(false)
            .add_custom_ignore_filename(".easignore")
            .filter_entry(|e| e.file_name() != ".git")
            .sort_by_file_name(|a, b| a.cmp(b))
            .build();
        for entry in walker {
            let entry = entry.map_err(std::io::Error::other)?;
            let path = entry.path();
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            let relative = path.strip_prefix(dir).map_err(std::io::Error::other)?;
            let name = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            let mode = file_mode(path);
            zip.start_file(name, options.unix_permissions(mode)).map_err(std::io::Error::other)?;
            let mut source = std::fs::File::open(path)?;
            std::io::copy(&mut source, &mut zip)?;
            files += 1;
        }
        zip.finish().map_err(std::io::Error::other)?;
    }
    let file_ref = file.as_file_mut();
    file_ref.flush()?;
    let bytes = file_ref.seek(std::io::SeekFrom::End(0))?;
    Ok(Packed { file, files, bytes })
}

fn file_mode(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            return if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
        }
    }
    0o644
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_files_and_git_stay_out_of_the_zip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("app.json"), b"{}").unwrap();
        std::fs::write(root.join(".gitignore"), b"node_modules/\n*.log\n").unwrap();
        std::fs::write(root.join(".easignore"), b"secrets/\n").unwrap();
        for d in ["node_modules/x", "secrets", ".git", "src"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("node_modules/x/index.js"), b"x").unwrap();
        std::fs::write(root.join("secrets/key.p8"), b"x").unwrap();
        std::fs::write(root.join(".git/HEAD"), b"x").unwrap();
        std::fs::write(root.join("debug.log"), b"x").unwrap();
        std::fs::write(root.join("src/App.tsx"), b"export default 1").unwrap();
        let packed = pack_dir(root).unwrap();
        let archive = zip::ZipArchive::new(std::fs::File::open(packed.file.path()).unwrap()).unwrap();
        let mut names: Vec<String> = archive.file_names().filter_map(|n| n.ok().map(|n| n.to_string())).collect();
        names.sort();
        assert_eq!(names, [".easignore", ".gitignore", "app.json", "src/App.tsx"]);
        assert_eq!(packed.files, 4);
    }
}
