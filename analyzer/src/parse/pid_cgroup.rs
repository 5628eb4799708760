//! `/proc/PID/cgroup`: `hierarchy-ID:controller-list:path` per line; v2 is `0::path`, v1 lists
//! controllers (`7:memory:/kubepods/...`), hybrid has both.

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PidCgroup {
    /// Path in the v1 memory hierarchy.
    pub memory_v1: Option<String>,
    /// Path in the unified (v2) hierarchy.
    pub unified: Option<String>,
    pub bad_lines: Vec<usize>,
}

pub fn parse(text: &str) -> PidCgroup {
    let mut out = PidCgroup::default();
    for (i, line) in super::lines(text).enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match fields(line) {
            Some(("0", "", path)) => out.unified = Some(path.to_string()),
            Some((_, ctrl, path)) => {
                if ctrl.split(',').any(|c| c == "memory") {
                    out.memory_v1 = Some(path.to_string());
                }
            }
            None => out.bad_lines.push(i + 1),
        }
    }
    out
}

/// `ID:CONTROLLERS:PATH` (the path may hold colons) with a numeric ID and an absolute path.
fn fields(line: &str) -> Option<(&str, &str, &str)> {
    let colon = |s: &str| memchr::memchr(b':', s.as_bytes());
    let first = colon(line)?;
    let (id, rest) = (&line[..first], &line[first + 1..]);
    let second = colon(rest)?;
    let (ctrl, path) = (&rest[..second], &rest[second + 1..]);
    (id.parse::<u32>().is_ok() && path.starts_with('/')).then_some((id, ctrl, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_v2_hybrid() {
        let h = parse("12:pids:/a\n7:memory:/kubepods/burstable/podx/c1\n1:name=systemd:/a\n0::/system.slice/x.service\n");
        assert_eq!(h.memory_v1.as_deref(), Some("/kubepods/burstable/podx/c1"));
        assert_eq!(h.unified.as_deref(), Some("/system.slice/x.service"));
        let v2 = parse("0::/kubepods.slice/a.scope\n");
        assert_eq!(
            (v2.memory_v1, v2.unified.as_deref()),
            (None, Some("/kubepods.slice/a.scope"))
        );
        // A path with ':' in it stays whole.
        assert_eq!(parse("0::/a:b\n").unified.as_deref(), Some("/a:b"));
    }

    #[test]
    fn malformed_and_empty() {
        let p = parse("garbage\n7:memory:relative\n");
        assert_eq!(p.bad_lines, vec![1, 2]);
        assert_eq!(parse(""), PidCgroup::default());
    }
}
