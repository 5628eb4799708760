//! What a rule sees: the model's raw and derived values for one cgroup or the node, as
//! minijinja values. A cgroup is a lazy object over the shared model, so evaluating every rule
//! over thousands of cgroups builds only the values the rules actually read.
//!
//! The names here are the rule language's vocabulary; `docs/rules.md` lists them.

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use serde::Serialize;

use crate::model::{Cgroup, Model, ProcSum};
use crate::parse::{Flat, Limit};

/// A list of keys and the function giving a key's position in it, from one list.
macro_rules! key_table {
    ($(#[$doc:meta])* $keys:ident, $index:ident: $($k:literal),* $(,)?) => {
        $(#[$doc])*
        pub const $keys: &[&str] = &[$($k),*];

        /// Position of a key in the list: a `match`, which the compiler turns into a switch
        /// on the length and a few comparisons (a chain of comparisons showed in profiles).
        fn $index(key: &str) -> Option<usize> {
            match key {
                $($k => Some(const { position($keys, $k) }),)*
                _ => None,
            }
        }
    };
}

/// Position of `key` in `keys`, at compile time.
const fn position(keys: &[&str], key: &str) -> usize {
    let mut i = 0;
    while i < keys.len() {
        if same(keys[i].as_bytes(), key.as_bytes()) {
            return i;
        }
        i += 1;
    }
    panic!("key not in its table")
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Every field of `cg` (and of `cg.parent`).
pub const CGROUP_KEYS: &[&str] = &[
    "path",
    "name",
    "version",
    "depth",
    "is_root",
    "is_leaf",
    "holds_own",
    "children_count",
    "k8s",
    "is_k8s",
    "is_pod",
    "is_container",
    "usage_bytes",
    "limit_bytes",
    "effective_limit_bytes",
    "limited_by",
    "limited_by_ancestor",
    "high_bytes",
    "peak_bytes",
    "failcnt",
    "kmem_bytes",
    "tcp_bytes",
    "memsw_bytes",
    "swap_bytes",
    "kernel_bytes",
    "slab_bytes",
    "working_set_bytes",
    "cadvisor",
    "part",
    "remainder_bytes",
    "fuzz_bytes",
    "within_fuzz",
    "gap_vs_rss_bytes",
    "gap_vs_anon_bytes",
    "usage_ratio",
    "working_set_ratio",
    "own_usage_bytes",
    "children_usage_bytes",
    "procs",
    "own_procs",
    "top_process",
    "stat",
    "events",
    "events_local",
    "oom_control",
    "cgroup_stat",
    "pressure",
    "oom_kills",
    "oom_reports",
    "limit_hits",
    "high_events",
    "oom_events",
    "dying_descendants",
    "growth",
    "steady",
    "parent",
];

key_table!(
    /// Every key of `cg.part`: the bridge's parts, overlaps and the values beside usage. A
    /// part the kernel did not report (or that is empty) reads as 0.
    PART_KEYS, part_key:
    "anon",
    "anon_unmapped",
    "anon_thp",
    "swapcached",
    "shmem",
    "active_file",
    "inactive_file",
    "file_unevictable",
    "file_dirty",
    "file_writeback",
    "file_mapped",
    "unevictable",
    "kernel",
    "kernel_other",
    "kernel_stack",
    "pagetables",
    "sec_pagetables",
    "percpu",
    "slab_reclaimable",
    "slab_unreclaimable",
    "vmalloc",
    "zswap",
    "sock",
    "swap",
);

/// The variables a cgroup-scope rule sees.
pub fn cgroup_context(model: &Arc<Model>, node: &Value, idx: usize) -> Value {
    Value::from_object(Root {
        cg: Some(CgroupFacts::value(model, idx)),
        node: node.clone(),
    })
}

/// The variables a node-scope rule sees.
pub fn node_context(node: &Value) -> Value {
    Value::from_object(Root {
        cg: None,
        node: node.clone(),
    })
}

/// The top level of a rule's context: `cg`, `node` and the unit constants, looked up by a
/// match rather than in a map (every rule reads them for every cgroup).
#[derive(Debug)]
struct Root {
    cg: Option<Value>,
    node: Value,
}

impl Object for Root {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "cg" => self.cg.clone(),
            "node" => Some(self.node.clone()),
            name => super::unit(name).map(Value::from),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        if self.cg.is_some() {
            Enumerator::Str(&["cg", "node", "KiB", "MiB", "GiB"])
        } else {
            Enumerator::Str(&["node", "KiB", "MiB", "GiB"])
        }
    }
}

/// One cgroup's facts, each computed when read. Not memoized: the engine's compiled
/// expressions look each fact up once per cgroup (`native::Scope`), and only the few fired
/// rules' templates read them again.
#[derive(Debug)]
pub struct CgroupFacts {
    model: Arc<Model>,
    idx: usize,
}

impl CgroupFacts {
    pub fn value(model: &Arc<Model>, idx: usize) -> Value {
        Value::from_object(CgroupFacts {
            model: model.clone(),
            idx,
        })
    }
}

impl Object for CgroupFacts {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        cgroup_field(&self.model, self.idx, key.as_str()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(CGROUP_KEYS)
    }
}

fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::from(()), Into::into)
}

/// A fact that is a number, a boolean or none: what compiled rule expressions read without
/// building a minijinja value (`native::Scope`), and what minijinja reads as one.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, u64)] // copied as two aligned words, as `native::V` is (see there)
pub enum Scalar {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    None,
}

impl From<Scalar> for Value {
    fn from(s: Scalar) -> Value {
        match s {
            Scalar::U64(v) => Value::from(v),
            Scalar::I64(v) => Value::from(v),
            Scalar::F64(v) => Value::from(v),
            Scalar::Bool(v) => Value::from(v),
            Scalar::None => Value::from(()),
        }
    }
}

/// `From` for the model's number types, each to the variant holding it without loss.
macro_rules! scalar_from {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for Scalar {
            fn from(v: $t) -> Scalar {
                Scalar::$v(v as _)
            }
        }
    )*};
}
scalar_from!(u8 => U64, usize => U64, u64 => U64, i64 => I64, f64 => F64);

impl From<bool> for Scalar {
    fn from(v: bool) -> Scalar {
        Scalar::Bool(v)
    }
}

impl<T: Into<Scalar>> From<Option<T>> for Scalar {
    fn from(v: Option<T>) -> Scalar {
        v.map_or(Scalar::None, Into::into)
    }
}

/// How a scalar fact of a cgroup is computed.
pub type ScalarFn = fn(&Model, &Cgroup) -> Scalar;

/// The scalar facts of `cg`, each defined once: a `match` from name to function (see
/// `key_table!`).
macro_rules! scalar_fields {
    ($($k:literal => $f:expr,)*) => {
        fn scalar_field(key: &str) -> Option<ScalarFn> {
            match key {
                $($k => Some($f),)*
                _ => None,
            }
        }

        #[cfg(test)]
        const SCALAR_KEYS: &[&str] = &[$($k),*];
    };
}

scalar_fields! {
    "version" => |_, c| c.version.into(),
    "depth" => |_, c| c.depth.into(),
    "is_root" => |_, c| (&*c.path == "/").into(),
    "is_leaf" => |_, c| c.children.is_empty().into(),
    "holds_own" => |_, c| c.holds_own().into(),
    "children_count" => |_, c| c.children.len().into(),
    "is_k8s" => |_, c| c.k8s.is_some().into(),
    "is_pod" => |_, c| c.k8s.as_ref().is_some_and(|k| k.level == "pod").into(),
    "is_container" => |_, c| c.k8s.as_ref().is_some_and(|k| k.level == "container").into(),
    "usage_bytes" => |_, c| c.usage_bytes.unwrap_or(0).into(),
    "limit_bytes" => |_, c| c.limit.and_then(Limit::bytes).into(),
    "effective_limit_bytes" => |_, c| c.effective_limit.and_then(Limit::bytes).into(),
    "limited_by_ancestor" => |_, c| limited_by_ancestor(c).into(),
    "high_bytes" => |_, c| c.high.and_then(Limit::bytes).into(),
    "peak_bytes" => |_, c| c.peak_bytes.into(),
    "failcnt" => |_, c| c.failcnt.into(),
    "kmem_bytes" => |_, c| c.kmem_bytes.into(),
    "tcp_bytes" => |_, c| c.tcp_bytes.into(),
    "memsw_bytes" => |_, c| c.memsw_bytes.into(),
    "swap_bytes" => |_, c| c.swap_bytes.unwrap_or(0).into(),
    "kernel_bytes" => |_, c| kernel_bytes(c).into(),
    "slab_bytes" => |_, c| slab_bytes(c).into(),
    "working_set_bytes" => |_, c| c.cadvisor.working_set_bytes.into(),
    "remainder_bytes" => |_, c| c.bridge.as_ref().map_or(0, |b| b.remainder_bytes).into(),
    "fuzz_bytes" => |_, c| c.bridge.as_ref().map_or(0, |b| b.fuzz_bytes).into(),
    "within_fuzz" => |_, c| c.bridge.as_ref().is_none_or(|b| b.within_fuzz).into(),
    "gap_vs_rss_bytes" => |_, c| c.gap_vs_rss_bytes.into(),
    "gap_vs_anon_bytes" => |_, c| c.gap_vs_anon_bytes.unwrap_or(0).into(),
    "usage_ratio" => |_, c| c.usage_ratio.into(),
    "working_set_ratio" => |_, c| c.working_set_ratio.into(),
    "own_usage_bytes" => |_, c| c.own_usage_bytes.into(),
    "children_usage_bytes" => |m, c| {
        let sum: u64 = c.children.iter().filter_map(|&k| m.cgroups[k].usage_bytes).sum();
        sum.into()
    },
    "own_procs" => |_, c| c.pids.len().into(),
    "oom_kills" => |_, c| oom_kills(c).into(),
    "limit_hits" => |_, c| limit_hits(c).into(),
    "high_events" => |_, c| local_event(c, "high").into(),
    "dying_descendants" => |_, c| c.cgroup_stat.get("nr_dying_descendants").into(),
    "oom_reports" => |m, c| oom_events_of(m, c).len().into(),
}

/// Facts that are objects when the model has them and none when it does not: read as none
/// straight from the model when absent (v1 has no pressure, one snapshot no growth).
fn absent_field(key: &str) -> Option<fn(&Cgroup) -> bool> {
    Some(match key {
        "growth" | "steady" => |c| c.trend.is_none(),
        "pressure" => |c| c.pressure.is_none(),
        "k8s" => |c| c.k8s.is_none(),
        "top_process" => |c| c.top_process.is_none(),
        "parent" => |c| c.parent.is_none(),
        _ => return None,
    })
}

fn cgroup_field(m: &Arc<Model>, idx: usize, key: &str) -> Option<Value> {
    let c = &m.cgroups[idx];
    if let Some(f) = scalar_field(key) {
        return Some(f(m, c).into());
    }
    let flat = |which| {
        Value::from_object(FlatFacts {
            model: m.clone(),
            idx,
            which,
        })
    };
    Some(match key {
        "path" => Value::from(&*c.path),
        "name" => Value::from(c.display_name()),
        "k8s" => opt(c.k8s.as_ref().map(Value::from_serialize)),
        "limited_by" => opt(c.limited_by.as_deref()),
        "cadvisor" => Value::from_serialize(&c.cadvisor),
        "part" => Value::from_object(PartFacts(part_bytes(c))),
        "procs" => Value::from_object(ProcFacts(c.procs.clone())),
        "top_process" => opt(top_process(m, idx).map(Value::from_serialize)),
        "stat" => flat(Which::Stat),
        "events" => flat(Which::Events),
        "events_local" => flat(Which::EventsLocal),
        "oom_control" => flat(Which::OomControl),
        "cgroup_stat" => flat(Which::CgroupStat),
        "pressure" => opt(c.pressure.as_ref().map(Value::from_serialize)),
        "oom_events" => Value::from_serialize(oom_events_of(m, c)),
        "growth" => opt(c.trend.as_ref().map(|t| Value::from_serialize(&t.per_hour))),
        "steady" => opt(c.trend.as_ref().map(|t| Value::from_serialize(&t.steady))),
        "parent" => opt(c.parent.map(|p| CgroupFacts::value(m, p))),
        _ => return None,
    })
}

/// A path below `cg` that reads a scalar straight from the model, resolved when rules compile
/// so that evaluating it over thousands of cgroups builds no minijinja value.
#[derive(Debug)]
pub enum Direct {
    Field(ScalarFn),
    /// An object fact, none when this tells it is absent; else minijinja's.
    Absent(fn(&Cgroup) -> bool),
    /// `cg.part.KEY`, by position in [`PART_KEYS`].
    Part(usize),
    /// `cg.procs.KEY`.
    Proc(fn(&ProcSum) -> u64),
    /// `cg.stat.KEY` and the other raw flat files.
    Flat(Which, Box<str>),
}

impl Direct {
    /// The reader of `cg.<below>`, if it is a scalar fact.
    pub fn of(below: &[&str]) -> Option<Direct> {
        Some(match below {
            [k] => match scalar_field(k) {
                Some(f) => Direct::Field(f),
                None => Direct::Absent(absent_field(k)?),
            },
            ["part", k] => Direct::Part(part_key(k)?),
            ["procs", k] => Direct::Proc(proc_field(k)?),
            [file, k] => Direct::Flat(Which::of(file)?, (*k).into()),
            _ => return None,
        })
    }

    /// The value for cgroup `idx`. `parts` holds the cgroup's [`part_bytes`] once computed.
    pub fn read(&self, m: &Model, idx: usize, parts: &mut Option<[u64; PART_KEYS.len()]>) -> Read {
        let c = &m.cgroups[idx];
        Read::Scalar(match self {
            Direct::Field(f) => f(m, c),
            Direct::Absent(absent) if absent(c) => Scalar::None,
            Direct::Absent(_) => return Read::Object,
            Direct::Part(i) => parts.get_or_insert_with(|| part_bytes(c))[*i].into(),
            Direct::Proc(f) => f(&c.procs).into(),
            Direct::Flat(which, key) => match which.of_cgroup(c).get(key) {
                Some(v) => v.into(),
                None => return Read::Undefined,
            },
        })
    }

    /// The value every one of the cgroups `idx` of `m` reads as, when it is one; `None` when
    /// two differ (or `idx` is empty). A loop per kind of fact, not a [`Direct::read`] per
    /// cgroup: facts that no cgroup of a node has (swap, OOM kills, growth...) are checked on
    /// all of its cgroups (see `engine::Uniform`).
    pub fn uniform(&self, m: &Model, idx: &[usize]) -> Option<Read> {
        let (&first, rest) = idx.split_first()?;
        let cg = |i: usize| &m.cgroups[i];
        match self {
            Direct::Field(f) => {
                let v = f(m, cg(first));
                let same = rest.iter().all(|&i| identical(f(m, cg(i)), v));
                same.then_some(Read::Scalar(v))
            }
            Direct::Absent(absent) => {
                let a = absent(cg(first));
                let same = rest.iter().all(|&i| absent(cg(i)) == a);
                same.then_some(if a {
                    Read::Scalar(Scalar::None)
                } else {
                    Read::Object
                })
            }
            Direct::Proc(f) => {
                let v = f(&cg(first).procs);
                let same = rest.iter().all(|&i| f(&cg(i).procs) == v);
                same.then_some(Read::Scalar(Scalar::U64(v)))
            }
            Direct::Part(_) | Direct::Flat(..) => {
                let read = |i: usize| self.read(m, i, &mut None);
                let v = read(first);
                rest.iter().all(|&i| same_read(&read(i), &v)).then_some(v)
            }
        }
    }
}

/// Whether two scalars are the same value (floats bit for bit).
fn identical(a: Scalar, b: Scalar) -> bool {
    match (a, b) {
        (Scalar::F64(x), Scalar::F64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

fn same_read(a: &Read, b: &Read) -> bool {
    match (a, b) {
        (Read::Scalar(x), Read::Scalar(y)) => identical(*x, *y),
        (Read::Undefined, Read::Undefined) => true,
        _ => false,
    }
}

/// What a [`Direct`] read gives.
pub enum Read {
    Scalar(Scalar),
    /// A key its flat file does not have, as minijinja sees it.
    Undefined,
    /// A value that is not a scalar: minijinja's to build.
    Object,
}

/// The effective limit comes from an ancestor and is tighter than the cgroup's own.
pub fn limited_by_ancestor(c: &Cgroup) -> bool {
    match (c.effective_limit.and_then(Limit::bytes), &c.limited_by) {
        (Some(eff), Some(by)) => {
            by != &c.path && c.limit.and_then(Limit::bytes).is_none_or(|own| eff < own)
        }
        _ => false,
    }
}

/// Kernel memory charged to the cgroup: v1 `kmem.usage_in_bytes`, v2 `kernel` (5.18+) or the
/// sum of its components on older kernels.
pub fn kernel_bytes(c: &Cgroup) -> u64 {
    if c.version == 1 {
        return c.kmem_bytes.unwrap_or(0);
    }
    c.stat.get("kernel").unwrap_or_else(|| {
        crate::model::bridge::V2_KERNEL_PARTS
            .iter()
            .filter_map(|k| c.stat.get(k))
            .sum()
    })
}

/// Slab charged to the cgroup; v1's memory.stat does not report it.
pub fn slab_bytes(c: &Cgroup) -> Option<u64> {
    let r = c.stat.get("slab_reclaimable");
    let u = c.stat.get("slab_unreclaimable");
    (r.is_some() || u.is_some()).then(|| r.unwrap_or(0) + u.unwrap_or(0))
}

/// A v2 event counted in this cgroup itself. A leaf's `memory.events` is its own (plus removed
/// children's); a parent's counts its subtree, so its own are in `memory.events.local` (5.2+).
fn local_event(c: &Cgroup, key: &str) -> Option<u64> {
    if c.version == 1 {
        return None;
    }
    if c.children.is_empty() {
        return c.events.get(key).or_else(|| c.events_local.get(key));
    }
    c.events_local.get(key).or_else(|| c.events.get(key))
}

/// Processes the OOM killer killed in this cgroup itself: v1 `oom_control` `oom_kill`
/// (4.13+; the kernel prints the local counter), v2 `oom_kill` events.
pub fn oom_kills(c: &Cgroup) -> Option<u64> {
    if c.version == 1 {
        c.oom_control.get("oom_kill")
    } else {
        local_event(c, "oom_kill")
    }
}

/// Times usage hit the limit: v1 `memory.failcnt`, v2 `max` events.
pub fn limit_hits(c: &Cgroup) -> Option<u64> {
    if c.version == 1 {
        c.failcnt
    } else {
        local_event(c, "max")
    }
}

/// Kernel-log OOM records naming this cgroup as the one whose limit was hit or the victim's.
pub fn oom_events_of<'a>(m: &'a Model, c: &Cgroup) -> Vec<&'a crate::parse::oom::OomEvent> {
    m.oom_events
        .iter()
        .filter(|e| {
            e.oom_memcg.as_deref() == Some(&*c.path) || e.task_memcg.as_deref() == Some(&*c.path)
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct TopProcess<'a> {
    pub pid: u32,
    pub name: &'a str,
    pub cmdline: &'a str,
    pub rss_bytes: u64,
    pub rss_anon_bytes: u64,
    /// This process's share of the anonymous RSS of all processes in the subtree.
    pub anon_share: f64,
}

/// The process with the most anonymous RSS in the cgroup's subtree.
pub fn top_process(m: &Model, idx: usize) -> Option<TopProcess<'_>> {
    let c = &m.cgroups[idx];
    let p = &m.processes[c.top_process?];
    let anon = p.rss_anon.unwrap_or(0);
    Some(TopProcess {
        pid: p.pid,
        name: &p.name,
        cmdline: &p.cmdline,
        rss_bytes: p.rss.unwrap_or(0),
        rss_anon_bytes: anon,
        anon_share: if c.procs.rss_anon > 0 {
            anon as f64 / c.procs.rss_anon as f64
        } else {
            0.0
        },
    })
}

/// The raw flat files of a cgroup that rules read key by key.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    Stat,
    Events,
    EventsLocal,
    OomControl,
    CgroupStat,
}

impl Which {
    fn of(name: &str) -> Option<Which> {
        Some(match name {
            "stat" => Which::Stat,
            "events" => Which::Events,
            "events_local" => Which::EventsLocal,
            "oom_control" => Which::OomControl,
            "cgroup_stat" => Which::CgroupStat,
            _ => return None,
        })
    }

    fn of_cgroup(self, c: &Cgroup) -> &Flat {
        match self {
            Which::Stat => &c.stat,
            Which::Events => &c.events,
            Which::EventsLocal => &c.events_local,
            Which::OomControl => &c.oom_control,
            Which::CgroupStat => &c.cgroup_stat,
        }
    }
}

/// A raw flat file, key by key; a key the kernel did not write is undefined (use
/// `| default(0)` for keys that only some kernels have).
#[derive(Debug)]
struct FlatFacts {
    model: Arc<Model>,
    idx: usize,
    which: Which,
}

impl FlatFacts {
    fn flat(&self) -> &Flat {
        self.which.of_cgroup(&self.model.cgroups[self.idx])
    }
}

impl Object for FlatFacts {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.flat().get(key.as_str()?).map(Value::from)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys: Vec<Value> = self.flat().iter().map(|(k, _)| Value::from(k)).collect();
        Enumerator::Values(keys)
    }
}

/// `cg.part`: every bridge key, 0 where the kernel reported nothing.
#[derive(Debug)]
struct PartFacts([u64; PART_KEYS.len()]);

/// The bytes of every key of [`PART_KEYS`] for a cgroup.
pub fn part_bytes(c: &Cgroup) -> [u64; PART_KEYS.len()] {
    let mut bytes = [0; PART_KEYS.len()];
    if let Some(b) = &c.bridge {
        // Parts last: a key in both a part and an overlap reads as the part.
        for p in b.beside.iter().chain(&b.overlaps).chain(&b.parts) {
            if let Some(i) = part_key(p.key) {
                bytes[i] = p.bytes;
            }
        }
    }
    bytes
}

impl Object for PartFacts {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        part_key(key.as_str()?).map(|i| Value::from(self.0[i]))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(PART_KEYS)
    }
}

/// The fields of `cg.procs`, sums over the subtree's processes (`ProcSum`): the list of
/// keys and a `match` from key to field, from one list.
macro_rules! proc_fields {
    ($($k:ident),* $(,)?) => {
        pub const PROC_KEYS: &[&str] = &[$(stringify!($k)),*];

        fn proc_field(key: &str) -> Option<fn(&ProcSum) -> u64> {
            match key {
                $(stringify!($k) => Some(|p| p.$k),)*
                _ => None,
            }
        }
    };
}

proc_fields!(
    count, listed, rss, rss_anon, rss_file, rss_shmem, pss, pss_anon, pss_file, pss_shmem, swap,
    locked, lazyfree, anon_huge, threads, pagetables,
);

/// `cg.procs`, field by field (rules read one or two of them per cgroup).
#[derive(Debug)]
struct ProcFacts(ProcSum);

impl Object for ProcFacts {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        proc_field(key.as_str()?).map(|f| Value::from(f(&self.0)))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(PROC_KEYS)
    }
}

/// The node as rules see it; built once per model.
#[derive(Debug, Default, Serialize)]
pub struct NodeFacts<'a> {
    pub hostname: &'a str,
    pub kernel_release: &'a str,
    pub kernel_major: u64,
    pub kernel_minor: u64,
    pub cgroup_mode: &'static str,
    pub cpus: u64,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: Option<u64>,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub meminfo: Option<&'a std::collections::BTreeMap<String, u64>>,
    /// The node breakdown by key (`anon`, `page_cache`, `shmem`, `slab_reclaimable`, ...).
    pub part: std::collections::BTreeMap<&'static str, u64>,
    pub slab_total_bytes: u64,
    pub slab_top: Vec<&'a crate::parse::slabinfo::SlabCache>,
    pub dentry_slab_bytes: Option<u64>,
    pub inode_slab_bytes: u64,
    pub dentry: Option<crate::parse::misc::DentryState>,
    pub negative_dentries: Option<u64>,
    pub negative_dentry_bytes: Option<u64>,
    pub shm_segments: usize,
    pub shm_orphaned_count: usize,
    pub shm_orphaned_bytes: u64,
    pub tmpfs_used_bytes: u64,
    pub tmpfs: Vec<&'a memgap_collector::bundle::TmpfsUsage>,
    pub thp_enabled: Option<&'a str>,
    pub psi: Option<&'a crate::parse::nested::Psi>,
    pub memory_cgroups_kernel: Option<u64>,
    pub memory_cgroups_live: u64,
    pub dying_cgroups: Option<u64>,
    pub vm: Option<&'a std::collections::BTreeMap<String, String>>,
    pub oom_events: Vec<&'a crate::parse::oom::OomEvent>,
    /// Seconds between the last OOM report and the collection; none without reports or when
    /// the kernel log's clock could not be related to the collection's.
    pub last_oom_ago_seconds: Option<u64>,
    /// Bytes per hour by breakdown key (and `slab_total`, `negative_dentries`) over the
    /// snapshots of a multi-sample bundle; none for a single snapshot.
    pub growth: Option<&'a std::collections::BTreeMap<String, f64>>,
    pub steady: Option<&'a std::collections::BTreeMap<String, bool>>,
}

/// Parts of the node breakdown, always present (0 when absent) so rules can read them.
pub const NODE_PART_KEYS: &[&str] = &[
    "anon",
    "page_cache",
    "shmem",
    "slab_reclaimable",
    "slab_unreclaimable",
    "kernel_stack",
    "page_tables",
    "percpu",
    "swap_cached",
    "hugetlb",
    "free",
    "other",
];

pub fn node_facts(m: &Model) -> NodeFacts<'_> {
    let n = &m.node;
    let (major, minor) = crate::model::kernel_version(&m.bundle.kernel_release).unwrap_or((0, 0));
    let mut part: std::collections::BTreeMap<&'static str, u64> =
        NODE_PART_KEYS.iter().map(|k| (*k, 0)).collect();
    for p in &n.breakdown {
        part.insert(p.key, p.bytes);
    }
    NodeFacts {
        hostname: &m.bundle.hostname,
        kernel_release: &m.bundle.kernel_release,
        kernel_major: major,
        kernel_minor: minor,
        cgroup_mode: m.bundle.cgroup_mode.name(),
        cpus: n.cpus,
        mem_total_bytes: n.mem_total_bytes,
        mem_available_bytes: n.mem_available_bytes,
        swap_total_bytes: n.swap_total_bytes,
        swap_used_bytes: n.swap_used_bytes,
        meminfo: Some(&n.meminfo),
        part,
        slab_total_bytes: n.slab_total_bytes,
        slab_top: n.slab_top.iter().collect(),
        dentry_slab_bytes: n.dentry_slab_bytes,
        inode_slab_bytes: n.inode_slab_bytes,
        dentry: n.dentry,
        negative_dentries: n.negative_dentries,
        negative_dentry_bytes: n.negative_dentry_bytes,
        shm_segments: n.shm_segments.len(),
        shm_orphaned_count: n.shm_segments.iter().filter(|s| s.nattch == 0).count(),
        shm_orphaned_bytes: n.shm_orphaned_bytes,
        tmpfs_used_bytes: n.tmpfs_used_bytes,
        tmpfs: n.tmpfs.iter().collect(),
        thp_enabled: n.thp_enabled.as_deref(),
        psi: n.psi.as_ref(),
        memory_cgroups_kernel: n.memory_cgroups_kernel,
        memory_cgroups_live: n.memory_cgroups_live,
        dying_cgroups: n.dying_cgroups,
        vm: Some(&n.vm),
        oom_events: m.oom_events.iter().collect(),
        last_oom_ago_seconds: m.oom_events.last().and_then(|e| e.ago_seconds),
        growth: n.trend.as_ref().map(|t| &t.per_hour),
        steady: n.trend.as_ref().map(|t| &t.steady),
    }
}

/// The names of `node`'s fields, for checking rules when they load.
pub fn node_keys() -> Vec<String> {
    match serde_json::to_value(NodeFacts::default()) {
        Ok(serde_json::Value::Object(o)) => o.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_keys_match_the_model() {
        let json = serde_json::to_value(crate::model::ProcSum::default()).unwrap();
        let mut got: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want: Vec<&str> = PROC_KEYS.to_vec();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
        // Every listed key reads as a number.
        let p = Arc::new(ProcFacts(ProcSum::default()));
        for k in PROC_KEYS {
            assert_eq!(
                p.get_value(&Value::from(*k)),
                Some(Value::from(0u64)),
                "{k}"
            );
        }
    }

    #[test]
    fn every_cgroup_key_is_a_fact() {
        let path = std::path::Path::new("../samples/v1-healthy-anon.tar.gz");
        let b = crate::reader::read(path, &Default::default()).unwrap();
        let m = Arc::new(crate::model::build(&b));
        for k in CGROUP_KEYS {
            assert!(cgroup_field(&m, 0, k).is_some(), "{k}");
        }
        // What reads as absent straight from the model is none for minijinja too.
        for (i, c) in m.cgroups.iter().enumerate() {
            for k in CGROUP_KEYS {
                if absent_field(k).is_some_and(|absent| absent(c)) {
                    assert!(
                        cgroup_field(&m, i, k).unwrap().is_none(),
                        "{k} of {}",
                        c.path
                    );
                }
            }
        }
        for k in SCALAR_KEYS {
            assert!(CGROUP_KEYS.contains(k), "{k}");
        }
    }

    #[test]
    fn every_part_key_has_a_label() {
        for k in PART_KEYS {
            assert_ne!(crate::model::bridge::label(k), "other", "{k}");
        }
    }
}
