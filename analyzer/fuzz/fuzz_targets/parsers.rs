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
    let _ = limit::parse(&t);
    let _ = limit::value(&t);
    let _ = misc::dentry_state(&t);
    let _ = misc::proc_cgroups(&t);
    let _ = nested::parse(&t);
    let _ = nested::psi(&t);
    let _ = oom::parse(&t);
    let _ = pid_cgroup::parse(&t);
    let _ = slabinfo::parse(&t);
    let _ = sysvipc::parse(&t);
});
