//! Every parser on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgap_analyzer::parse::{self, flat, kv_kb, limit, misc, nested, oom, pid_cgroup, slabinfo, sysvipc};

fuzz_target!(|data: &[u8]| {
    let t = parse::text(data);
    let _ = flat::parse(&t);
    // Twice with the same layouts: the second reading takes the quick path of a known layout.
    let mut layouts = flat::Layouts::default();
    let first = flat::parse_with(data, &mut layouts);
    assert_eq!(flat::parse_with(data, &mut layouts), first);
    let _ = kv_kb::parse(&t);
    // Read again with the keys of the first reading recalled: the same as reading it alone.
    let read = |recall: &mut kv_kb::Recall| {
        let mut seen = Vec::new();
        let bad = kv_kb::each_recalled(&t, |k| k.len() % 2 == 0, recall, |k, v| {
            seen.push((k.to_string(), format!("{v:?}")))
        });
        (seen, bad)
    };
    let mut recall = kv_kb::Recall::default();
    let alone = read(&mut recall);
    assert_eq!(read(&mut recall), alone);
    assert_eq!(limit::parse_bytes(data), limit::parse(&t));
    assert_eq!(limit::value_bytes(data), limit::value(&t));
    assert!(parse::lines(&t).eq(t.lines()));
    let _ = misc::dentry_state(&t);
    let _ = misc::proc_cgroups(&t);
    let _ = nested::parse(&t);
    let _ = nested::psi(&t);
    let _ = oom::parse(&t);
    let _ = pid_cgroup::parse(&t);
    let _ = slabinfo::parse(&t);
    let _ = sysvipc::parse(&t);
});
