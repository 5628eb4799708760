//! Kernel OOM-killer reports (`memgap/kmsg-oom.txt`: kmsg records `prio,seq,usec,flags;msg`, or
//! `dmesg` lines `[  123.456] msg`): who invoked it, the constraint and memcg, and who was
//! killed with their anon/file/shmem RSS at that moment.

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OomEvent {
    /// Microseconds since boot, when known.
    pub time_us: Option<u64>,
    /// Seconds between the kill and the collection (from `/proc/uptime`), when both are known.
    pub ago_seconds: Option<u64>,
    /// The task whose allocation invoked the OOM killer.
    pub invoker: Option<String>,
    /// `CONSTRAINT_MEMCG` (a cgroup limit) or `CONSTRAINT_NONE` (the whole node), ...
    pub constraint: Option<String>,
    /// The memcg whose limit was hit (`oom_memcg=`), and the victim's (`task_memcg=`).
    pub oom_memcg: Option<String>,
    pub task_memcg: Option<String>,
    pub victim_pid: Option<u64>,
    pub victim_comm: Option<String>,
    pub total_vm_bytes: Option<u64>,
    pub anon_rss_bytes: Option<u64>,
    pub file_rss_bytes: Option<u64>,
    pub shmem_rss_bytes: Option<u64>,
    pub oom_score_adj: Option<i64>,
    /// `memory: usage NkB, limit NkB, failcnt N` of the memcg, when printed.
    pub memcg_usage_bytes: Option<u64>,
    pub memcg_limit_bytes: Option<u64>,
}

/// Splits a record into (time in us, message).
fn message(line: &str) -> (Option<u64>, &str) {
    if let Some((head, msg)) = line.split_once(';') {
        let f: Vec<&str> = head.split(',').collect();
        if f.len() >= 3 && f[..3].iter().all(|x| x.parse::<u64>().is_ok()) {
            return (f[2].parse().ok(), msg);
        }
    }
    if let Some(rest) = line.trim_start().strip_prefix('[') {
        if let Some((ts, msg)) = rest.split_once(']') {
            if let Ok(s) = ts.trim().parse::<f64>() {
                return (Some((s * 1e6) as u64), msg.trim_start());
            }
        }
    }
    (None, line)
}

fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    let i = msg.find(key)?;
    let rest = &msg[i + key.len()..];
    let end = rest.find([',', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn kb(msg: &str, key: &str) -> Option<u64> {
    field(msg, key)?
        .strip_suffix("kB")?
        .parse::<u64>()
        .ok()?
        .checked_mul(1024)
}

pub fn parse(text: &str) -> Vec<OomEvent> {
    let mut events: Vec<OomEvent> = Vec::new();
    let mut cur: Option<OomEvent> = None;
    for line in super::lines(text) {
        let (t, msg) = message(line);
        if let Some(i) = msg.find(" invoked oom-killer:") {
            if let Some(e) = cur.take() {
                events.push(e);
            }
            cur = Some(OomEvent {
                time_us: t,
                ago_seconds: None,
                invoker: Some(msg[..i].trim().to_string()),
                ..Default::default()
            });
            continue;
        }
        if let Some(rest) = msg.strip_prefix("memory: usage ") {
            if let Some(e) = cur.as_mut() {
                let mut parts = rest.split(", ");
                e.memcg_usage_bytes = parts
                    .next()
                    .and_then(|u| u.strip_suffix("kB")?.parse::<u64>().ok()?.checked_mul(1024));
                e.memcg_limit_bytes = parts.next().and_then(|l| {
                    l.strip_prefix("limit ")?
                        .strip_suffix("kB")?
                        .parse::<u64>()
                        .ok()?
                        .checked_mul(1024)
                });
            }
            continue;
        }
        if let Some(rest) = msg.strip_prefix("oom-kill:") {
            let e = cur.get_or_insert_with(|| OomEvent {
                time_us: t,
                ago_seconds: None,
                ..Default::default()
            });
            e.constraint = field(rest, "constraint=").map(str::to_string);
            e.oom_memcg = field(rest, "oom_memcg=").map(str::to_string);
            e.task_memcg = field(rest, "task_memcg=").map(str::to_string);
            e.victim_pid = field(rest, "pid=").and_then(|p| p.parse().ok());
            e.victim_comm = field(rest, "task=").map(str::to_string);
            continue;
        }
        if let Some(i) = msg.find("Killed process ") {
            let rest = &msg[i + "Killed process ".len()..];
            let mut e = cur.take().unwrap_or_else(|| OomEvent {
                time_us: t,
                ago_seconds: None,
                ..Default::default()
            });
            e.victim_pid = e
                .victim_pid
                .or_else(|| rest.split_whitespace().next()?.parse().ok());
            if let (Some(a), Some(b)) = (rest.find('('), rest.rfind(')')) {
                if a < b {
                    e.victim_comm = Some(rest[a + 1..b].to_string());
                }
            }
            e.total_vm_bytes = kb(rest, "total-vm:");
            e.anon_rss_bytes = kb(rest, "anon-rss:");
            e.file_rss_bytes = kb(rest, "file-rss:");
            e.shmem_rss_bytes = kb(rest, "shmem-rss:");
            e.oom_score_adj = field(rest, "oom_score_adj:").and_then(|v| v.parse().ok());
            events.push(e);
        }
    }
    if let Some(e) = cur.take() {
        events.push(e);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "4,101,6000123,-;stress invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n\
4,102,6000200,-;memory: usage 65536kB, limit 65536kB, failcnt 12\n\
6,104,6000300,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/memgap/oom,task_memcg=/memgap/oom,task=stress,pid=4242,uid=0\n\
3,105,6000301,-;Memory cgroup out of memory: Killed process 4242 (stress) total-vm:120000kB, anon-rss:64000kB, file-rss:12kB, shmem-rss:4kB, UID:0 pgtables:176kB oom_score_adj:0\n";

    #[test]
    fn kmsg_and_dmesg_reports() {
        let e = parse(REAL);
        assert_eq!(e.len(), 1);
        let e = &e[0];
        assert_eq!(e.invoker.as_deref(), Some("stress"));
        assert_eq!(e.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(e.oom_memcg.as_deref(), Some("/memgap/oom"));
        assert_eq!(e.victim_pid, Some(4242));
        assert_eq!(e.anon_rss_bytes, Some(64000 * 1024));
        assert_eq!(e.shmem_rss_bytes, Some(4096));
        assert_eq!(e.memcg_limit_bytes, Some(65536 * 1024));
        assert_eq!(e.time_us, Some(6000123));
        let d = parse("[ 6.000123] Out of memory: Killed process 9 (java) total-vm:10kB, anon-rss:8kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:-997\n");
        assert_eq!(d[0].victim_comm.as_deref(), Some("java"));
        assert_eq!(d[0].oom_score_adj, Some(-997));
    }

    #[test]
    fn malformed_and_empty() {
        assert!(parse("").is_empty());
        let e = parse("Killed process x (y) anon-rss:zzkB\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].anon_rss_bytes, None);
        assert_eq!(e[0].victim_pid, None);
    }
}
