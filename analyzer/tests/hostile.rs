//! Bundles from strangers: every malformed or hostile shape gives a clear error or a
//! diagnostic naming the bundle and file, never a panic, and the rest is still analyzed.

mod common;

use memgap_analyzer::model;
use memgap_analyzer::reader::{self, BundleError, Limits};
use memgap_collector::synth::{self, Spec, Version};

fn good_bundle() -> Vec<u8> {
    let d = common::scratch();
    synth::generate(d.path(), &Spec::new(Version::V1, 20, 4)).unwrap();
    let cfg = memgap_collector::Config {
        root: d.path().to_path_buf(),
        kmsg: None,
        ..Default::default()
    };
    memgap_collector::collect(&cfg, Vec::new()).unwrap().1
}

/// A tar.gz with raw headers, so that paths tar-rs would refuse to write can be made.
fn raw_tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_old();
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn read(gz: &[u8]) -> Result<reader::Bundle, BundleError> {
    reader::read_from(gz, "hostile.tar.gz", &Limits::default())
}

const MEMINFO: &[u8] = b"MemTotal: 1000 kB\nMemFree: 500 kB\n";

#[test]
fn links_devices_dotdot_and_absolute_paths_are_refused_and_the_rest_read() {
    let gz = raw_tar(&[
        ("b/proc/meminfo", tar::EntryType::Regular, MEMINFO),
        ("b/../../etc/evil", tar::EntryType::Regular, b"x"),
        ("/etc/evil2", tar::EntryType::Regular, b"x"),
        ("b/link", tar::EntryType::Symlink, b""),
        ("b/hard", tar::EntryType::Link, b""),
        ("b/dev", tar::EntryType::Char, b""),
        ("b/fifo", tar::EntryType::Fifo, b""),
    ]);
    let b = read(&gz).unwrap();
    assert!(b.latest().get("proc/meminfo").is_some());
    let refused: Vec<_> = b
        .diagnostics
        .iter()
        .filter(|d| d.message.starts_with("refused"))
        .collect();
    assert_eq!(refused.len(), 6, "{:#?}", b.diagnostics);
    assert!(refused
        .iter()
        .all(|d| d.bundle == "hostile.tar.gz" && d.file.is_some()));
    let m = model::build(&b);
    assert_eq!(m.node.mem_total_bytes, 1000 * 1024);
}

#[test]
fn truncated_gzip_keeps_the_entries_before_the_cut() {
    let gz = good_bundle();
    let cut = &gz[..gz.len() * 2 / 3];
    let b = read(cut).unwrap();
    assert!(
        b.diagnostics
            .iter()
            .any(|d| d.message.contains("truncated or corrupt")),
        "{:#?}",
        b.diagnostics
    );
    assert!(
        b.diagnostics
            .iter()
            .any(|d| d.file.as_deref() == Some("manifest.json")),
        "missing manifest reported"
    );
    let m = model::build(&b);
    assert!(
        m.node.mem_total_bytes > 0,
        "node files before the cut are analyzed"
    );
}

#[test]
fn not_a_bundle_at_all() {
    for junk in [
        &b""[..],
        b"hello, world",
        &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3][..],
    ] {
        let e = read(junk).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("hostile.tar.gz: not a memgap bundle"),
            "{e}"
        );
    }
}

#[test]
fn future_format_version_is_refused_clearly() {
    let gz = raw_tar(&[
        ("b/proc/meminfo", tar::EntryType::Regular, MEMINFO),
        (
            "b/manifest.json",
            tar::EntryType::Regular,
            br#"{"format_version": 99, "something": "new"}"#,
        ),
    ]);
    let e = read(&gz).unwrap_err();
    assert!(matches!(e, BundleError::TooNew { found: 99, .. }), "{e}");
    assert!(e.to_string().contains("newer than this memgap"));
}

#[test]
fn garbage_manifest_and_garbage_files_become_diagnostics() {
    let gz = raw_tar(&[
        ("b/proc/meminfo", tar::EntryType::Regular, b"MemTotal: lots kB\n\xff\xfe binary\nMemFree: 5 kB\n"),
        ("b/proc/slabinfo", tar::EntryType::Regular, b"\x00\x01\x02garbage"),
        ("b/sys/fs/cgroup/memory/memgap.files", tar::EntryType::Regular, b"==> memory.stat 99999 <==\nshort"),
        ("b/sys/fs/cgroup/memory/a/memgap.files", tar::EntryType::Regular, b"==> memory.stat 27 <==\ncache 18446744073709551616\n\n==> memory.usage_in_bytes 3 <==\n-5\n\n"),
        ("b/manifest.json", tar::EntryType::Regular, b"{not json"),
    ]);
    let b = read(&gz).unwrap();
    let m = model::build(&b);
    let files: Vec<_> = m
        .diagnostics
        .iter()
        .filter_map(|d| d.file.clone())
        .collect();
    for f in [
        "manifest.json",
        "proc/meminfo",
        "proc/slabinfo",
        "sys/fs/cgroup/memory/memgap.files",
        "sys/fs/cgroup/memory/a/memory.stat",
    ] {
        assert!(
            files.iter().any(|x| x == f),
            "no diagnostic for {f}: {files:?}"
        );
    }
    assert_eq!(m.node.meminfo.get("MemFree"), Some(&5120));
    let a = m.cgroups.iter().find(|c| c.path == "/a").unwrap();
    assert_eq!(a.usage_bytes, None, "negative usage is not a number");
}

#[test]
fn decompression_bomb_and_entry_caps() {
    let big = vec![0u8; 4 << 20];
    let gz = raw_tar(&[
        ("b/proc/meminfo", tar::EntryType::Regular, MEMINFO),
        ("b/proc/huge", tar::EntryType::Regular, &big),
    ]);
    assert!(gz.len() < 64 << 10, "compresses well: a bomb in small");
    let limits = Limits {
        max_total_bytes: 1 << 20,
        ..Limits::default()
    };
    let b = reader::read_from(&gz[..], "bomb.tar.gz", &limits).unwrap();
    assert!(
        b.diagnostics.iter().any(|d| d.message.contains("exceeds")),
        "{:#?}",
        b.diagnostics
    );
    let limits = Limits {
        max_entry_bytes: 1 << 20,
        ..Limits::default()
    };
    let b = reader::read_from(&gz[..], "big.tar.gz", &limits).unwrap();
    assert!(b
        .diagnostics
        .iter()
        .any(|d| d.file.as_deref() == Some("b/proc/huge") && d.message.contains("entry limit")));
    assert!(b.latest().get("proc/meminfo").is_some());
}

#[test]
fn many_tiny_entries_are_capped() {
    let names: Vec<String> = (0..200).map(|i| format!("b/proc/x{i}")).collect();
    let entries: Vec<(&str, tar::EntryType, &[u8])> = names
        .iter()
        .map(|n| (n.as_str(), tar::EntryType::Regular, &b"1"[..]))
        .collect();
    let gz = raw_tar(&entries);
    let limits = Limits {
        max_entries: 50,
        ..Limits::default()
    };
    let b = reader::read_from(&gz[..], "many.tar.gz", &limits).unwrap();
    assert!(b
        .diagnostics
        .iter()
        .any(|d| d.message.contains("more than 50 entries")));
}

#[test]
fn process_in_a_cgroup_that_does_not_exist() {
    use memgap_collector::bundle::pack;
    let mut root = Vec::new();
    pack::push(&mut root, "memory.stat", b"cache 0\n").unwrap();
    let mut p = Vec::new();
    pack::push(&mut p, "status", b"Name:\tghost\nVmRSS:\t4 kB\n").unwrap();
    pack::push(&mut p, "cgroup", b"7:memory:/does/not/exist\n").unwrap();
    let gz = raw_tar(&[
        ("b/proc/meminfo", tar::EntryType::Regular, MEMINFO),
        (
            "b/sys/fs/cgroup/memory/memgap.files",
            tar::EntryType::Regular,
            &root,
        ),
        ("b/proc/42/memgap.files", tar::EntryType::Regular, &p),
    ]);
    let m = model::build(&read(&gz).unwrap());
    assert!(
        m.diagnostics
            .iter()
            .any(|d| d.message.contains("PID 42 claims /does/not/exist")),
        "{:#?}",
        m.diagnostics
    );
    assert_eq!(m.processes[0].cgroup_index, None);
}
