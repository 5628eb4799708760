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
    // The terminal summary says so before anything else.
    let a = memgap_analyzer::Analysis::of(
        read(cut).unwrap(),
        &memgap_analyzer::rules::RuleSet::builtin().unwrap(),
    );
    let text = memgap_analyzer::output::text(&a, 10, memgap_analyzer::rules::Severity::Info);
    assert!(
        text.lines()
            .next()
            .unwrap_or_default()
            .ends_with("collected ?)"),
        "{text}"
    );
    let second = text.lines().nth(1).unwrap_or_default();
    assert!(second.contains("error(s) reading this bundle"), "{text}");
    let third = text.lines().nth(2).unwrap_or_default();
    assert!(third.contains("read in part: "), "{text}");
    let page = memgap_analyzer::html::Templates::builtin()
        .unwrap()
        .report(&a)
        .unwrap();
    assert!(page.contains("The bundle was read in part"));
    let whole = memgap_analyzer::Analysis::of(
        read(&gz).unwrap(),
        &memgap_analyzer::rules::RuleSet::builtin().unwrap(),
    );
    let text = memgap_analyzer::output::text(&whole, 10, memgap_analyzer::rules::Severity::Info);
    assert!(!text.contains("error(s) reading this bundle"), "{text}");
    assert!(!text.contains("read in part"), "{text}");
    let page = memgap_analyzer::html::Templates::builtin()
        .unwrap()
        .report(&whole)
        .unwrap();
    assert!(!page.contains("read in part"));
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
    let a = m.cgroups.iter().find(|c| &*c.path == "/a").unwrap();
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
    assert!(!b.complete, "entries past the cap were lost");
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

/// The whole pipeline on a bundle: model, rules, and every output; none may panic.
fn everything(gz: &[u8], name: &str) -> memgap_analyzer::Analysis {
    let b = reader::read_from(gz, name, &Limits::default()).unwrap();
    let a = memgap_analyzer::Analysis::of(b, &memgap_analyzer::rules::RuleSet::builtin().unwrap());
    memgap_analyzer::html::Templates::builtin()
        .unwrap()
        .report(&a)
        .unwrap();
    memgap_analyzer::output::json(
        std::slice::from_ref(&a),
        memgap_analyzer::rules::Severity::Info,
    )
    .unwrap();
    memgap_analyzer::output::text(&a, 10, memgap_analyzer::rules::Severity::Info);
    a
}

/// A tar.gz from raw path bytes (GNU long names where needed), so that names that are not
/// UTF-8, or very long, can be made.
fn tar_bytes(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if path.len() <= 100 {
            h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        } else {
            // GNU long name: a `././@LongLink` entry carrying the name.
            let mut l = tar::Header::new_gnu();
            l.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
            l.set_entry_type(tar::EntryType::GNULongName);
            l.set_size(path.len() as u64 + 1);
            l.set_cksum();
            let mut name = path.clone();
            name.push(0);
            b.append(&l, &name[..]).unwrap();
            h.as_gnu_mut().unwrap().name[..5].copy_from_slice(b"dummy");
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

const STAT: &[u8] = b"==> memory.stat 40 <==\ncache 4096\nrss 8192\ntotal_cache 4096\n\n==> memory.usage_in_bytes 6 <==\n12288\n\n";

#[test]
fn names_and_contents_that_are_not_utf8() {
    let mut cmd = Vec::new();
    memgap_collector::bundle::pack::push(&mut cmd, "status", b"Name:\t\xff\xfe\nVmRSS:\t4 kB\n")
        .unwrap();
    memgap_collector::bundle::pack::push(
        &mut cmd,
        "cmdline",
        b"\xc3\x28\x00--flag=\xf0\x28\x8c\x28\x00",
    )
    .unwrap();
    let gz = tar_bytes(&[
        (b"b/proc/meminfo".to_vec(), MEMINFO.to_vec()),
        (
            b"b/sys/fs/cgroup/memory/memgap.files".to_vec(),
            STAT.to_vec(),
        ),
        (
            b"b/sys/fs/cgroup/memory/\xff\xfebad/memgap.files".to_vec(),
            STAT.to_vec(),
        ),
        (b"b/proc/7/memgap.files".to_vec(), cmd),
    ]);
    let a = everything(&gz, "utf8.tar.gz");
    let bad = a
        .model
        .cgroups
        .iter()
        .find(|c| c.path.contains("bad"))
        .expect("the cgroup is kept");
    assert!(
        bad.path.contains('\u{fffd}'),
        "shown with replacement characters: {}",
        bad.path
    );
    assert!(a
        .model
        .processes
        .iter()
        .any(|p| p.cmdline.contains("--flag=")));
}

#[test]
fn a_cgroup_tree_ten_thousand_levels_deep() {
    // Every level of a 10,000-deep tree: paths past the kernel's 4,096-byte limit are refused,
    // the rest (about 2,000 levels) is analyzed without recursion.
    let mut entries = vec![(b"b/proc/meminfo".to_vec(), MEMINFO.to_vec())];
    let mut dir = b"b/sys/fs/cgroup/memory".to_vec();
    entries.push((
        [dir.clone(), b"/memgap.files".to_vec()].concat(),
        STAT.to_vec(),
    ));
    for _ in 0..10_000 {
        dir.extend_from_slice(b"/a");
        entries.push((
            [dir.clone(), b"/memgap.files".to_vec()].concat(),
            STAT.to_vec(),
        ));
    }
    let gz = tar_bytes(&entries);
    let t = std::time::Instant::now();
    let a = everything(&gz, "deep.tar.gz");
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    let depth = a.model.cgroups.iter().map(|c| c.depth).max().unwrap();
    assert!((1900..=2100).contains(&depth), "depth {depth}");
    assert!(a
        .diagnostics
        .iter()
        .any(|d| d.message.contains("-byte path")));
    assert!(a.diagnostics.len() <= memgap_analyzer::reader::MAX_DIAGNOSTICS + 1);
    // Every level has its parent: the tree is whole.
    assert!(a.model.cgroups.iter().skip(1).all(|c| c.parent.is_some()));
}

#[test]
fn truncated_tar_inside_a_whole_gzip_stream() {
    let full = good_bundle();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&full[..]), &mut tar)
        .unwrap();
    tar.truncate(tar.len() / 2 + 100);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let a = everything(&gz, "cut.tar.gz");
    assert!(a
        .diagnostics
        .iter()
        .any(|d| d.message.contains("truncated") && d.bundle == "cut.tar.gz"));
    assert!(
        !a.model.cgroups.is_empty(),
        "what came before the cut is analyzed"
    );
}

#[test]
fn missing_manifest_is_said_and_the_files_analyzed() {
    let gz = raw_tar(&[
        ("b/proc/meminfo", tar::EntryType::Regular, MEMINFO),
        (
            "b/sys/fs/cgroup/memory/memgap.files",
            tar::EntryType::Regular,
            STAT,
        ),
    ]);
    let a = everything(&gz, "nomanifest.tar.gz");
    assert!(a
        .diagnostics
        .iter()
        .any(|d| d.file.as_deref() == Some("manifest.json")));
    assert_eq!(a.model.node.mem_total_bytes, 1000 * 1024);
}

#[test]
fn every_hostile_bundle_survives_the_whole_pipeline() {
    let good = good_bundle();
    // Bit flips and cuts of a real bundle: each is an error or an analysis, never a panic.
    for i in 0..40 {
        let mut b = good.clone();
        let at = (i * 7919) % b.len();
        b[at] ^= 0x5a;
        if let Ok(bundle) = reader::read_from(&b[..], "flip.tar.gz", &Limits::default()) {
            let a = memgap_analyzer::Analysis::of(
                bundle,
                &memgap_analyzer::rules::RuleSet::builtin().unwrap(),
            );
            memgap_analyzer::html::Templates::builtin()
                .unwrap()
                .report(&a)
                .unwrap();
        }
        let cut = &good[..(i * 4093) % good.len()];
        let _ = reader::read_from(cut, "cut.tar.gz", &Limits::default());
    }
}

#[test]
fn a_million_tiny_entries_in_bounded_time() {
    // With the default limits (2,000,000 entries): all are read, none is a crash, and the
    // unknown files are simply not part of the model.
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_mode(0o644);
    for i in 0..1_000_000u32 {
        h.set_path(format!("b/proc/x{i}")).unwrap();
        h.set_cksum();
        b.append(&h, &b"1"[..]).unwrap();
    }
    let gz = b.into_inner().unwrap().finish().unwrap();
    let t = std::time::Instant::now();
    let bundle = read(&gz).unwrap();
    assert_eq!(bundle.stored.entries, 1_000_000);
    let m = model::build(&bundle);
    assert!(m.cgroups.is_empty());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(120),
        "{:?}",
        t.elapsed()
    );
}

/// A pack damaged after its first file: that file is read where its directory is (whether the
/// pack sits at the top or in a snapshot), and the damage is said, naming the pack.
#[test]
fn a_damaged_pack_keeps_the_files_before_the_damage() {
    use memgap_collector::bundle::pack;
    let mut damaged = Vec::new();
    pack::push(&mut damaged, "memory.stat", b"cache 4096\n").unwrap();
    damaged.extend_from_slice(b"==> memory.usage_in_bytes 999 <==\n12");
    for dir in [
        "sys/fs/cgroup/memory/kubepods",
        "snapshots/1/sys/fs/cgroup/memory/kubepods",
    ] {
        let packed = format!("{dir}/{}", pack::PACK_NAME);
        let gz = raw_tar(&[
            ("b/proc/meminfo", tar::EntryType::Regular, MEMINFO),
            (&format!("b/{packed}"), tar::EntryType::Regular, &damaged),
        ]);
        let b = read(&gz).unwrap();
        // Empty snapshots are dropped: the one snapshot is the latest.
        let files = b.latest();
        let inner = dir.strip_prefix("snapshots/1/").unwrap_or(dir);
        assert_eq!(
            files.get(&format!("{inner}/memory.stat")),
            Some(&b"cache 4096\n"[..])
        );
        assert_eq!(files.get(&format!("{inner}/memory.usage_in_bytes")), None);
        let said = b
            .diagnostics
            .iter()
            .find(|d| d.message.contains("damaged pack"));
        let said = said.unwrap_or_else(|| panic!("{:#?}", b.diagnostics));
        assert!(!b.complete, "files of the pack were lost");
        assert_eq!(
            (said.level, said.file.as_deref()),
            (reader::Level::Error, Some(&*packed))
        );
    }
}

/// A bundle cut short may lack cgroups: v1's dying cgroups (the kernel's count less the
/// bundle's) and each cgroup's own usage (less its children's) are unknown, not too large.
#[test]
fn a_bundle_read_in_part_leaves_what_needs_every_cgroup_unknown() {
    let d = common::scratch();
    synth::generate(d.path(), &Spec::new(Version::V1, 300, 40)).unwrap();
    let gz = common::collect(d.path());
    let whole = model::build(&read(&gz).unwrap());
    assert!(whole.bundle.complete);
    assert_eq!(whole.node.dying_cgroups, Some(0));
    assert!(whole.cgroups.iter().any(|c| c.own_usage_bytes.is_some()));
    let cut = model::build(&read(&gz[..gz.len() / 2]).unwrap());
    assert!(!cut.bundle.complete);
    assert!(
        cut.cgroups.len() < whole.cgroups.len(),
        "{}",
        cut.cgroups.len()
    );
    assert_eq!(cut.node.dying_cgroups, None);
    assert!(cut.cgroups.iter().all(|c| c.own_usage_bytes.is_none()));
}
