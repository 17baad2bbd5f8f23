//! Property tests of the two archive readers: the certificate-bundle reader behind
//! `certs-secure` and the reference worker's source unpacker. Archives are built
//! byte by byte (so names the zip writer would refuse, duplicates and symbolic-link
//! modes can be tried), then cut, flipped and filled: neither reader panics,
//! neither writes outside its directory, and what they accept is what was stored.

use std::io::Write;
use std::path::Path;

use agent_bridge::certs::{BundleError, read_bundle};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use freeagent::worker::unpack::{UnpackError, unpack};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// One archive entry: raw name bytes, content, Unix mode (`None`: no Unix attributes).
#[derive(Debug, Clone)]
struct Entry {
    name: Vec<u8>,
    data: Vec<u8>,
    mode: Option<u32>,
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A zip of stored (uncompressed) entries, written field by field.
fn raw_zip(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for entry in entries {
        let offset = out.len() as u32;
        let (crc, size, name_len) = (crc32(&entry.data), entry.data.len() as u32, entry.name.len() as u16);
        let utf8_flag: u16 = if std::str::from_utf8(&entry.name).is_ok() { 1 << 11 } else { 0 };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        for v in [20u16, utf8_flag, 0, 0, 0x21] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [crc, size, size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&entry.name);
        out.extend_from_slice(&entry.data);

        let made_by: u16 = if entry.mode.is_some() { (3 << 8) | 20 } else { 20 };
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        for v in [made_by, 20, utf8_flag, 0, 0, 0x21] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        for v in [crc, size, size] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        for v in [name_len, 0, 0, 0, 0] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        central.extend_from_slice(&(entry.mode.unwrap_or(0) << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&entry.name);
    }
    let central_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, entries.len() as u16, entries.len() as u16] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

const FILE: u32 = 0o100_644;
const SYMLINK: u32 = 0o120_777;

/// Names a bundle or a project could hold, and names meant to escape.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "cert.p12", "dist/CERT.P12", "password.txt", "sub/password.txt", "a.mobileprovision",
            "p/b.mobileprovision", "._cert.p12", "README.md", "src/", "src/App.tsx", "app.json",
        ]).prop_map(|n| n.as_bytes().to_vec()),
        3 => prop::sample::select(vec![
            "../evil.p12", "a/../../evil", "/etc/evil", "\\evil.p12", "a\\..\\evil", "..", "../",
            "C:/evil", "//evil", "a/./b", "", ".", "./x.p12", "x/..", "..\\x",
        ]).prop_map(|n| n.as_bytes().to_vec()),
        1 => "[a-z./\\\\]{0,12}".prop_map(|n| n.into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        name(),
        prop::collection::vec(any::<u8>(), 0..200),
        prop_oneof![3 => Just(Some(FILE)), 1 => Just(None), 1 => Just(Some(SYMLINK))],
    )
        .prop_map(|(name, data, mode)| Entry { name, data, mode })
}

/// The entries as a zip reader sees them: a repeated name is one entry, in the
/// place of its first appearance, with the last appearance's content and mode.
fn effective(entries: &[Entry]) -> Vec<Entry> {
    let mut seen: Vec<Entry> = Vec::new();
    for entry in entries {
        match seen.iter_mut().find(|e| e.name == entry.name) {
            Some(earlier) => *earlier = entry.clone(),
            None => seen.push(entry.clone()),
        }
    }
    seen
}

fn unsafe_name(name: &str) -> bool {
    name.contains("..") || name.starts_with('/') || name.contains('\\')
}

fn base_of(name: &str) -> String {
    name.to_ascii_lowercase().rsplit('/').next().unwrap_or_default().to_owned()
}

fn config(cases: u32) -> Config {
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// A valid bundle made by the zip writer (deflated), for cutting and flipping.
fn deflated_bundle(p12: &[u8], password: &[u8]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("cert.p12", options).unwrap();
    zip.write_all(p12).unwrap();
    zip.start_file("password.txt", options).unwrap();
    zip.write_all(password).unwrap();
    zip.start_file("team.mobileprovision", options).unwrap();
    zip.write_all(b"PROFILE").unwrap();
    zip.finish().unwrap();
    out.into_inner()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_bundle_reader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read_bundle(&bytes, 1 << 20);
        let mut zipish = b"PK\x03\x04".to_vec();
        zipish.extend_from_slice(&bytes);
        let _ = read_bundle(&zipish, 1 << 20);
    }

    #[test]
    fn the_bundle_reader_accepts_only_safe_names_and_returns_what_was_stored(
        entries in prop::collection::vec(entry(), 0..8),
        limit in prop_oneof![0u64..2048, Just(u64::MAX)],
    ) {
        let zip = raw_zip(&entries);
        // Refusals are fine; what matters is that nothing unsafe was accepted.
        if let Ok(material) = read_bundle(&zip, limit) {
            let entries = effective(&entries);
            let names: Vec<String> = entries.iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect();
            prop_assert!(!names.iter().any(|n| unsafe_name(n)), "accepted an unsafe name: {names:?}");
            let wanted = |e: &&Entry, f: &dyn Fn(&str) -> bool| {
                let name = String::from_utf8_lossy(&e.name);
                let base = base_of(&name);
                !name.ends_with('/') && !base.starts_with("._") && f(&base)
            };
            let p12 = entries.iter().rfind(|e| wanted(e, &|b| b.ends_with(".p12"))).expect("a .p12");
            prop_assert_eq!(&material.p12, &STANDARD.encode(&p12.data));
            let password = entries.iter().rfind(|e| wanted(e, &|b| b == "password.txt"));
            let expected = password.map(|p| String::from_utf8_lossy(&p.data).trim().to_owned()).unwrap_or_default();
            prop_assert_eq!(&material.p12_password, &expected);
            let profiles = entries.iter().filter(|e| wanted(e, &|b| b.ends_with(".mobileprovision"))).count();
            prop_assert_eq!(material.provisioning_profiles.len(), profiles);
            let read: u64 = entries
                .iter()
                .filter(|e| wanted(e, &|b| b.ends_with(".p12") || b == "password.txt" || b.ends_with(".mobileprovision")))
                .map(|e| e.data.len() as u64)
                .sum();
            prop_assert!(read <= limit, "{read} bytes read past the limit {limit}");
        }
    }

    #[test]
    fn a_cut_or_flipped_bundle_is_refused_or_read_but_never_panics(
        p12 in prop::collection::vec(any::<u8>(), 1..512),
        password in prop::collection::vec(any::<u8>(), 0..32),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let bundle = deflated_bundle(&p12, &password);
        let whole = read_bundle(&bundle, 1 << 20).expect("a valid bundle");
        prop_assert_eq!(&whole.p12, &STANDARD.encode(&p12));
        prop_assert_eq!(&whole.p12_password, &String::from_utf8_lossy(&password).trim().to_owned());
        let _ = read_bundle(&bundle[..cut.index(bundle.len())], 1 << 20);
        let mut flipped = bundle.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= 1 << bit;
        let _ = read_bundle(&flipped, 1 << 20);
    }
}

#[test]
fn a_bundle_bomb_is_refused_after_reading_no_more_than_the_limit() {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    zip.start_file("cert.p12", zip::write::SimpleFileOptions::default()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        zip.write_all(&zeros).unwrap();
    }
    zip.finish().unwrap();
    let bomb = out.into_inner();
    assert!(bomb.len() < 1 << 20, "64 MiB in {} bytes", bomb.len());
    let started = std::time::Instant::now();
    assert!(matches!(read_bundle(&bomb, 1 << 20), Err(BundleError::TooLarge(_))));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn nested_archives_and_symbolic_links_in_a_bundle_are_only_bytes() {
    let inner = deflated_bundle(b"INNER", b"inner-password");
    let bundle = raw_zip(&[
        Entry { name: b"cert.p12".to_vec(), data: inner.clone(), mode: Some(FILE) },
        Entry { name: b"password.txt".to_vec(), data: b"/etc/shadow".to_vec(), mode: Some(SYMLINK) },
    ]);
    let material = read_bundle(&bundle, 1 << 20).unwrap();
    assert_eq!(material.p12, STANDARD.encode(&inner), "the nested zip is passed on, not opened");
    assert_eq!(material.p12_password, "/etc/shadow", "a link is its target's name, never followed");
    let missing = read_bundle(&raw_zip(&[Entry { name: b"cert.p12".to_vec(), data: b"P".to_vec(), mode: None }]), 64);
    assert_eq!(missing.unwrap().p12_password, "", "no password.txt: an empty password");
}

/// Every path under `root`, symbolic links included (not followed).
fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn unpacking_never_writes_outside_its_directory_nor_creates_links(
        entries in prop::collection::vec(entry(), 0..8),
        limit in prop_oneof![0u64..2048, Just(u64::MAX)],
    ) {
        let sandbox = tempfile::tempdir().unwrap();
        let target = sandbox.path().join("project");
        std::fs::create_dir(&target).unwrap();
        let archive = sandbox.path().join("source.zip");
        std::fs::write(&archive, raw_zip(&entries)).unwrap();
        let result = unpack(&archive, &target, limit);
        for path in walk(sandbox.path()) {
            prop_assert!(path == archive || path.starts_with(&target), "written outside: {}", path.display());
            prop_assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink(), "a link: {}", path.display());
        }
        if let Ok(total) = result {
            let entries = effective(&entries);
            prop_assert!(total <= limit);
            prop_assert!(!entries.iter().any(|e| e.mode == Some(SYMLINK)), "a link was accepted");
            for e in &entries {
                let name = String::from_utf8_lossy(&e.name);
                prop_assert!(!name.starts_with('/') && !name.contains('\\') && !name.split('/').any(|c| c == ".."));
            }
            // The last entry of each file name holds its content.
            if let Some(last) = entries.iter().rev().find(|e| !e.name.ends_with(b"/")) {
                let name = String::from_utf8_lossy(&last.name).into_owned();
                let path = target.join(&name);
                if path.is_file() && !name.is_empty() {
                    prop_assert_eq!(std::fs::read(&path).unwrap(), last.data.clone());
                }
            }
        }
    }

    #[test]
    fn a_cut_or_flipped_source_archive_never_panics(
        p12 in prop::collection::vec(any::<u8>(), 1..512),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let sandbox = tempfile::tempdir().unwrap();
        let archive = sandbox.path().join("source.zip");
        let mut bytes = deflated_bundle(&p12, b"pw");
        let at = flip.index(bytes.len());
        bytes[at] = bytes[at].wrapping_add(1);
        for candidate in [&bytes[..cut.index(bytes.len())], &bytes[..]] {
            std::fs::write(&archive, candidate).unwrap();
            let target = tempfile::tempdir_in(sandbox.path()).unwrap();
            let _ = unpack(&archive, target.path(), 1 << 20);
        }
    }
}

#[test]
fn a_source_bomb_stops_at_the_limit() {
    let sandbox = tempfile::tempdir().unwrap();
    let archive = sandbox.path().join("bomb.zip");
    let file = std::fs::File::create(&archive).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let zeros = vec![0u8; 1 << 20];
    for n in 0..4 {
        zip.start_file(format!("part{n}"), zip::write::SimpleFileOptions::default()).unwrap();
        for _ in 0..16 {
            zip.write_all(&zeros).unwrap();
        }
    }
    zip.finish().unwrap();
    let target = sandbox.path().join("project");
    assert!(matches!(unpack(&archive, &target, 1 << 20), Err(UnpackError::TooLarge(_))));
    let written: u64 = walk(&target).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    assert!(written <= (1 << 20) + 1, "{written} bytes written");
}
