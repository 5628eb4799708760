//! Helpers shared by the collector's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use memgap_collector::bundle::{pack, Manifest};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/realdata");

/// Every file of a bundle by host path (packs expanded), plus its manifest and top folder.
pub struct Unpacked {
    pub top: String,
    pub files: BTreeMap<String, Vec<u8>>,
    pub entries: Vec<String>,
    pub manifest: Manifest,
    pub raw_tar: Vec<u8>,
}

pub fn unpack(gz: &[u8]) -> Unpacked {
    let mut raw_tar = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut raw_tar)
        .expect("valid gzip");
    let mut ar = tar::Archive::new(&raw_tar[..]);
    let mut files = BTreeMap::new();
    let mut entries = Vec::new();
    let mut top = String::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let (t, rel) = path.split_once('/').unwrap();
        top = t.to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push(rel.to_string());
        if let Some(dir) = rel.strip_suffix(&format!("/{}", pack::PACK_NAME)) {
            for item in pack::entries(&data) {
                let (name, content) = item.unwrap();
                files.insert(format!("{dir}/{name}"), content.to_vec());
            }
        } else {
            files.insert(rel.to_string(), data);
        }
    }
    let manifest: Manifest = serde_json::from_slice(&files["manifest.json"]).unwrap();
    Unpacked {
        top,
        files,
        entries,
        manifest,
        raw_tar,
    }
}

/// Copies a directory tree (fixture files) into `dest`.
pub fn copy_tree(src: &Path, dest: &Path) {
    for e in walkdir::WalkDir::new(src) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(src).unwrap();
        let to = dest.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(FIXTURES).join(rel)
}

pub fn config(root: &Path) -> memgap_collector::Config {
    memgap_collector::Config {
        root: root.to_path_buf(),
        kmsg: None,
        jobs: 2,
        read_timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    }
}

pub fn collect_to_vec(cfg: &memgap_collector::Config) -> (Manifest, Vec<u8>) {
    memgap_collector::collect(cfg, Vec::new()).expect("collection succeeds")
}

pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}
