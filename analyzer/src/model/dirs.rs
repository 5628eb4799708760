//! What the model reads from one cgroup or process directory, parsed from that directory's own
//! files (nothing here needs the rest of the bundle; the tree, the hierarchy's version and the
//! node's CPUs are applied in the model).

use crate::parse::kv_kb::{self, Value};
use crate::parse::{self, flat, limit, nested, pid_cgroup, Flat, Limit};
use crate::reader::Level;

use super::{Notes, Process};

/// A process as read, with the CPUs it may run on (the highest allowed, plus one) and its
/// `/proc/PID/cgroup`, read only for a process that no `cgroup.procs` lists.
pub(super) type RawProcess<'f> = (Process, Option<u64>, Option<&'f [u8]>);

/// One cgroup directory's files, parsed. v1 and v2 name the same value differently; both are
/// kept, and the model takes the one of the hierarchy's version.
#[derive(Debug, Default)]
pub(super) struct CgroupDir {
    pub(super) stat: Flat,
    pub(super) events: Flat,
    pub(super) events_local: Flat,
    pub(super) oom_control: Flat,
    pub(super) cgroup_stat: Flat,
    pub(super) pids: Vec<u32>,
    pub(super) pressure: Option<nested::Psi>,
    /// `[v1, v2]`: `memory.usage_in_bytes`, `memory.current`.
    pub(super) usage: [Option<u64>; 2],
    /// `[v1, v2]`: `memory.limit_in_bytes`, `memory.max`.
    pub(super) limit: [Option<Limit>; 2],
    /// `[v1, v2]`: `memory.max_usage_in_bytes`, `memory.peak`.
    pub(super) peak: [Option<u64>; 2],
    /// v2 only.
    pub(super) high: Option<Limit>,
    pub(super) swap_current: Option<u64>,
    /// v1 only.
    pub(super) failcnt: Option<u64>,
    pub(super) kmem: Option<u64>,
    pub(super) tcp: Option<u64>,
    pub(super) memsw: Option<u64>,
    pub(super) notes: Notes,
}

/// One process directory, parsed: no process without a PID or a `status`.
#[derive(Debug)]
pub(super) struct ProcessDir<'f> {
    pub(super) process: Option<RawProcess<'f>>,
    pub(super) notes: Notes,
}

pub(super) fn cgroup<'a>(
    dir: &str,
    files: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    layouts: &mut flat::Layouts,
) -> CgroupDir {
    let mut c = CgroupDir::default();
    let mut flat_file = |name: &[u8], t: &[u8], notes: &mut Notes| -> Flat {
        let parsed = flat::parse_with(t, layouts);
        if let Some(first) = parsed.bad_lines.first() {
            notes.push((
                Level::Warning,
                format!("{dir}/{}", parse::text(name)),
                format!(
                    "{} unreadable line(s), first at line {first}",
                    parsed.bad_lines.len()
                ),
            ));
        }
        parsed
    };
    let (value, lim) = (limit::value_bytes, limit::parse_bytes);
    // Files come in the collector's order; a later file of the same name wins, as in
    // `DirView::get`. Notes about a file that is read again are dropped with it.
    let mut flats: [Option<(&[u8], &[u8])>; 5] = [None; 5];
    for (name, t) in files {
        match name {
            b"memory.stat" => flats[0] = Some((name, t)),
            b"memory.events" => flats[1] = Some((name, t)),
            b"memory.events.local" => flats[2] = Some((name, t)),
            b"memory.oom_control" => flats[3] = Some((name, t)),
            b"cgroup.stat" => flats[4] = Some((name, t)),
            b"cgroup.procs" => {
                c.pids = parse::lines(&parse::text(t))
                    .filter_map(|l| l.trim().parse().ok())
                    .collect()
            }
            b"memory.pressure" => c.pressure = nested::psi(&parse::text(t)),
            b"memory.usage_in_bytes" => c.usage[0] = value(t),
            b"memory.current" => c.usage[1] = value(t),
            b"memory.limit_in_bytes" => c.limit[0] = lim(t),
            b"memory.max" => c.limit[1] = lim(t),
            b"memory.max_usage_in_bytes" => c.peak[0] = value(t),
            b"memory.peak" => c.peak[1] = value(t),
            b"memory.high" => c.high = lim(t),
            b"memory.swap.current" => c.swap_current = value(t),
            b"memory.failcnt" => c.failcnt = value(t),
            b"memory.kmem.usage_in_bytes" => c.kmem = value(t),
            b"memory.kmem.tcp.usage_in_bytes" => c.tcp = value(t),
            b"memory.memsw.usage_in_bytes" => c.memsw = value(t),
            _ => {}
        }
    }
    let mut notes = Notes::new();
    let [stat, events, events_local, oom_control, cgroup_stat] = flats.map(|f| match f {
        Some((name, t)) => flat_file(name, t, &mut notes),
        None => Flat::default(),
    });
    CgroupDir {
        stat,
        events,
        events_local,
        oom_control,
        cgroup_stat,
        notes,
        ..c
    }
}

/// Where a process keeps one of its numbers.
type Field = fn(&mut Process) -> &mut Option<u64>;

impl Process {
    /// The field of a `status` or `smaps_rollup` value (bytes, or a count) the model uses.
    fn number_field(key: &str) -> Option<Field> {
        let field: Field = match key {
            "Threads" => |p| &mut p.threads,
            "VmRSS" => |p| &mut p.rss,
            "RssAnon" => |p| &mut p.rss_anon,
            "RssFile" => |p| &mut p.rss_file,
            "RssShmem" => |p| &mut p.rss_shmem,
            "VmSwap" => |p| &mut p.swap,
            "VmLck" => |p| &mut p.locked,
            "VmHWM" => |p| &mut p.hwm,
            "VmPTE" => |p| &mut p.pagetables,
            "Pss" => |p| &mut p.pss,
            "Pss_Anon" => |p| &mut p.pss_anon,
            "Pss_File" => |p| &mut p.pss_file,
            "Pss_Shmem" => |p| &mut p.pss_shmem,
            "LazyFree" => |p| &mut p.lazyfree,
            "AnonHugePages" => |p| &mut p.anon_huge,
            _ => return None,
        };
        Some(field)
    }

    fn set_number(&mut self, key: &str, n: u64) {
        if let Some(field) = Process::number_field(key) {
            *field(self) = Some(n);
        }
    }
}

/// The text values of `status` the model uses.
const STATUS_TEXT: [&str; 3] = ["Name", "State", "Cpus_allowed_list"];

/// The keys of the `status` and `smaps_rollup` files read before on this thread.
#[derive(Debug, Default)]
pub(super) struct Recalled {
    status: kv_kb::Recall,
    smaps: kv_kb::Recall,
}

pub(super) fn process<'a>(
    dir: &str,
    files: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    recalled: &mut Recalled,
) -> ProcessDir<'a> {
    let mut notes = Notes::new();
    let process = read_process(dir, files, recalled, &mut notes);
    ProcessDir { process, notes }
}

fn read_process<'a>(
    dir: &str,
    files: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    recalled: &mut Recalled,
    notes: &mut Notes,
) -> Option<RawProcess<'a>> {
    let pid = dir
        .strip_prefix("proc/")
        .and_then(|p| p.parse::<u32>().ok())?;
    let (mut status, mut smaps, mut cgroup, mut cmdline, mut comm) = (None, None, None, None, None);
    let (mut oom_score, mut oom_score_adj) = (None, None);
    for (name, content) in files {
        match name {
            b"status" => status = Some(content),
            b"smaps_rollup" => smaps = Some(content),
            b"cgroup" => cgroup = Some(content),
            b"cmdline" => cmdline = Some(content),
            b"comm" => comm = Some(content),
            b"oom_score" => oom_score = Some(content),
            b"oom_score_adj" => oom_score_adj = Some(content),
            _ => {}
        }
    }
    let int = |t: Option<&[u8]>| t.and_then(|t| parse::text(t).trim().parse::<i64>().ok());
    let mut p = Process {
        pid,
        cmdline: cmdline
            .map(|c| {
                let s = String::from_utf8_lossy(c);
                s.trim_end_matches('\0').replace('\0', " ")
            })
            .unwrap_or_default(),
        oom_score: int(oom_score),
        oom_score_adj: int(oom_score_adj),
        ..Process::default()
    };
    // Only the keys the model keeps are looked at: `status` has ~55 lines, 2,000 processes.
    let status = parse::text(status?);
    let (mut name, mut cpus) = (None, None);
    let wanted = |k: &str| STATUS_TEXT.contains(&k) || Process::number_field(k).is_some();
    let bad = kv_kb::each_recalled(&status, wanted, &mut recalled.status, |k, v| match (k, v) {
        ("Name", Value::Text(t)) => name = Some(t.to_string()),
        ("State", Value::Text(t)) => p.state = Some(t.to_string()),
        // A single CPU's list (`0`) reads as a number.
        ("Cpus_allowed_list", v) => {
            cpus = match v {
                Value::Text(t) => cpus_of(t),
                Value::Number(n) => n.checked_add(1),
            }
        }
        (k, Value::Number(n)) => p.set_number(k, n),
        _ => {}
    });
    if !bad.is_empty() {
        notes.push((
            Level::Warning,
            format!("{dir}/status"),
            format!("{} unreadable line(s)", bad.len()),
        ));
    }
    if let Some(t) = smaps {
        kv_kb::each_recalled(&parse::text(t), wanted, &mut recalled.smaps, |k, v| {
            if let Value::Number(n) = v {
                p.set_number(k, n);
            }
        });
    }
    p.name = comm
        .map(|c| parse::text(c).trim().to_string())
        .or(name)
        .unwrap_or_default();
    Some((p, cpus, cgroup))
}

/// The memory cgroup a process's `/proc/PID/cgroup` names: in the v1 memory hierarchy, or
/// (`unified`) the v2 one.
pub(super) fn claimed_cgroup(text: &[u8], unified: bool) -> Option<String> {
    let cg = pid_cgroup::parse(&parse::text(text));
    if unified {
        cg.unified
    } else {
        cg.memory_v1
    }
}

/// Highest CPU number in a `Cpus_allowed_list` (`0-3,8`), plus one (`None` past `u64`).
fn cpus_of(list: &str) -> Option<u64> {
    list.split(',')
        .filter_map(|r| r.rsplit('-').next()?.trim().parse::<u64>().ok())
        .max()?
        .checked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_process_keeps_every_value_the_model_uses_twice_over() {
        let dir = "../fixtures/realdata/localhost-v1/scratch-demo/alive/proc/self";
        let read = |f: &str| std::fs::read(format!("{}/{dir}/{f}", env!("CARGO_MANIFEST_DIR")));
        let (status, smaps) = (read("status").unwrap(), read("smaps_rollup").unwrap());
        let files = [(&b"status"[..], &status[..]), (b"smaps_rollup", &smaps[..])];
        // The second reading recalls the first one's keys.
        let mut recalled = Recalled::default();
        for _ in 0..2 {
            let d = process("proc/42", files.into_iter(), &mut recalled);
            let (p, cpus, _) = d.process.unwrap();
            assert!(d.notes.is_empty());
            assert_eq!(
                (p.pid, p.name.as_str(), p.state.as_deref()),
                (42, "python3", Some("R (running)"))
            );
            assert_eq!(cpus, Some(2));
            let kib = |n: u64| Some(n * 1024);
            assert_eq!(
                (p.rss, p.rss_anon, p.hwm, p.pagetables),
                (kib(79532), kib(56344), kib(95868), kib(196))
            );
            assert_eq!((p.swap, p.locked, p.threads), (kib(0), kib(0), Some(1)));
            assert_eq!(
                (p.pss, p.pss_anon, p.pss_file, p.pss_shmem),
                (kib(75436), kib(56348), kib(2704), kib(16384))
            );
            assert_eq!((p.lazyfree, p.anon_huge), (kib(0), kib(0)));
        }
    }

    #[test]
    fn cpus_from_allowed_lists() {
        assert_eq!(cpus_of("0-1"), Some(2));
        assert_eq!(cpus_of("0-3,8-11"), Some(12));
        assert_eq!(cpus_of("18446744073709551615"), None);
        assert_eq!(cpus_of(""), None);
    }

    #[test]
    fn a_later_file_of_the_same_name_wins() {
        let files = [
            (&b"memory.stat"[..], &b"cache 1\nbad\n"[..]),
            (&b"memory.stat"[..], &b"cache 2\n"[..]),
            (&b"memory.current"[..], &b"7\n"[..]),
            (&b"memory.max"[..], &b"max\n"[..]),
        ];
        let c = cgroup("d", files.into_iter(), &mut Default::default());
        assert_eq!(c.stat.get("cache"), Some(2));
        assert!(
            c.notes.is_empty(),
            "the replaced file's bad line is not reported"
        );
        assert_eq!(
            (c.usage, c.limit),
            ([None, Some(7)], [None, Some(Limit::Max)])
        );
    }
}
