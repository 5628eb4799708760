//! Properties of the parsers and the bundle reader on generated input: no panic on any text or
//! bytes, and well-formed input read back exactly. (The coverage-guided fuzzers in
//! `analyzer/fuzz/` explore the same functions much longer; see docs/robustness.md.)

use std::collections::BTreeMap;

use memgap_analyzer::parse::{
    flat, kv_kb, limit, misc, nested, oom, pid_cgroup, slabinfo, sysvipc,
};
use memgap_analyzer::reader::{self, Limits};
use memgap_collector::bundle::pack;
use proptest::prelude::*;

/// Every parser, on one text.
fn all_parsers(t: &str) {
    let _ = flat::parse(t);
    let _ = kv_kb::parse(t);
    let _ = limit::parse(t);
    let _ = limit::value(t);
    let _ = misc::dentry_state(t);
    let _ = misc::proc_cgroups(t);
    let _ = nested::parse(t);
    let _ = nested::psi(t);
    let _ = oom::parse(t);
    let _ = pid_cgroup::parse(t);
    let _ = slabinfo::parse(t);
    let _ = sysvipc::parse(t);
}

/// Text that looks like kernel files: keys, numbers (some huge or negative), separators.
fn kernelish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        "[a-z_]{1,12}",
        "[0-9]{1,25}",
        "-[0-9]{1,5}",
        Just("kB".to_string()),
        Just(":".to_string()),
        Just("=".to_string()),
        Just("max".to_string()),
        Just("some".to_string()),
        Just("avg10=".to_string()),
        Just("slabinfo - version: 2.1".to_string()),
        Just("oom-kill:".to_string()),
        Just("Killed process".to_string()),
        "[ \t]{1,3}",
        Just("\n".to_string()),
    ];
    prop::collection::vec(token, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_never_panic_on_any_text(t in any::<String>()) {
        all_parsers(&t);
    }

    #[test]
    fn parsers_never_panic_on_kernel_like_text(t in kernelish()) {
        all_parsers(&t);
    }

    #[test]
    fn flat_files_read_back_exactly(m in prop::collection::btree_map("[a-z_]{1,20}", any::<u64>(), 0..40)) {
        let text: String = m.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        let f = flat::parse(&text);
        prop_assert!(f.bad_lines.is_empty());
        let back: std::collections::BTreeMap<String, u64> =
            f.iter().map(|(k, v)| (k.to_string(), v)).collect();
        prop_assert_eq!(back, m);
    }

    /// Files parsed one after another share key layouts; each must still read as if parsed
    /// alone, whatever keys, order and values the files before it had.
    #[test]
    fn shared_layouts_never_mix_files(files in prop::collection::vec(
        prop::collection::vec(("(cache|rss|shmem|anon|file)", 0u64..1000), 0..6), 1..20)) {
        let mut layouts = flat::Layouts::default();
        for lines in files {
            let text: String = lines.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
            prop_assert_eq!(flat::parse_with(text.as_bytes(), &mut layouts), flat::parse(&text));
        }
    }

    #[test]
    fn kb_files_read_back_in_bytes(m in prop::collection::btree_map("[A-Z][A-Za-z_]{0,15}", 0u64..(1 << 40), 0..30)) {
        let text: String = m.iter().map(|(k, v)| format!("{k}:  {v:>8} kB\n")).collect();
        let f = kv_kb::parse(&text);
        let want: BTreeMap<String, u64> = m.iter().map(|(k, v)| (k.clone(), v * 1024)).collect();
        prop_assert_eq!(f.values, want);
    }

    #[test]
    fn packs_read_back_exactly_and_never_panic(files in prop::collection::vec(("[a-z.]{1,20}", prop::collection::vec(any::<u8>(), 0..300)), 0..10), junk in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut p = Vec::new();
        for (n, c) in &files {
            pack::push(&mut p, n, c).unwrap();
        }
        let got: Vec<(String, Vec<u8>)> = pack::entries(&p)
            .filter_map(Result::ok)
            .map(|(n, c)| (n.to_string(), c.to_vec()))
            .collect();
        prop_assert_eq!(got, files);
        let _ = pack::entries(&junk).count();
    }

    #[test]
    fn the_reader_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let _ = reader::read_from(&bytes[..], "any.tar.gz", &Limits::default());
    }

    #[test]
    fn the_reader_never_panics_on_gzip_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4000)) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        let gz = gz.finish().unwrap();
        if let Ok(b) = reader::read_from(&gz[..], "gz.tar.gz", &Limits::default()) {
            let _ = memgap_analyzer::model::build(&b);
        }
    }
}
