//! `/proc/mounts` (fstab format), shared by the collector (cgroup and tmpfs discovery) and the
//! analyzer.

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: String,
}

impl Mount {
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.split(',').any(|o| o == opt)
    }
}

/// Mounts parsed from `text`, and the 1-based numbers of lines that were not mount lines.
pub fn parse(text: &str) -> (Vec<Mount>, Vec<usize>) {
    let mut mounts = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.split_ascii_whitespace();
        match (f.next(), f.next(), f.next(), f.next()) {
            (Some(s), Some(t), Some(ty), Some(o)) => mounts.push(Mount {
                source: unescape(s),
                target: unescape(t),
                fstype: ty.to_string(),
                options: o.to_string(),
            }),
            _ => bad.push(i + 1),
        }
    }
    (mounts, bad)
}

/// Decodes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` '\').
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_lines_and_escapes() {
        let text = "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                    tmpfs /mnt/a\\040b tmpfs rw,size=1024k 0 0\n\
                    garbage\n";
        let (m, bad) = parse(text);
        assert_eq!(m.len(), 2);
        assert!(m[0].has_option("memory"));
        assert_eq!(m[1].target, "/mnt/a b");
        assert_eq!(bad, vec![3]);
        assert_eq!(parse("").0, vec![]);
    }
}
