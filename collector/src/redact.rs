//! `--redact`: the hostname and every command-line argument become stable hashes, wherever they
//! appear in the bundle (file contents, entry paths, manifest, OOM records).

use sha2::{Digest, Sha256};

/// A stable, non-reversible stand-in for `s`: the same input gives the same token in every
/// bundle, so redacted bundles of one fleet can still be correlated.
pub fn token(s: &[u8]) -> String {
    let d = Sha256::digest(s);
    let mut out = String::from("redacted-");
    for b in &d[..6] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (hostname, its token); `None` when redaction is off or the hostname is unknown.
    host: Option<(Vec<u8>, Vec<u8>)>,
    enabled: bool,
}

impl Redactor {
    pub fn off() -> Self {
        Self::default()
    }

    pub fn new(hostname: &str) -> Self {
        let h = hostname.trim();
        Redactor {
            host: (!h.is_empty())
                .then(|| (h.as_bytes().to_vec(), token(h.as_bytes()).into_bytes())),
            enabled: true,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The hostname as it must appear in the bundle.
    pub fn hostname(&self, hostname: &str) -> String {
        if self.enabled {
            token(hostname.trim().as_bytes())
        } else {
            hostname.trim().to_string()
        }
    }

    /// Redacts the content of file `name` in place.
    pub fn file(&self, name: &str, data: &mut Vec<u8>) {
        if !self.enabled {
            return;
        }
        if name == "cmdline" {
            *data = cmdline(data);
        }
        self.text(data);
    }

    /// Replaces every occurrence of the hostname in `data`.
    pub fn text(&self, data: &mut Vec<u8>) {
        if let Some((host, tok)) = &self.host {
            if let Some(replaced) = replace_all(data, host, tok) {
                *data = replaced;
            }
        }
    }

    pub fn path(&self, path: &str) -> String {
        let mut b = path.as_bytes().to_vec();
        self.text(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// `argv[0]`'s base name is kept (it names the program); every other argument is hashed.
fn cmdline(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let body = data.strip_suffix(b"\0").unwrap_or(data);
    if body.is_empty() {
        return Vec::new();
    }
    for (i, arg) in body.split(|&b| b == 0).enumerate() {
        if i == 0 {
            let base = arg.rsplit(|&b| b == b'/').next().unwrap_or(arg);
            // A program may rewrite its argv[0] to hold a whole command line.
            let base = base.split(|&b| b == b' ').next().unwrap_or(base);
            out.extend_from_slice(base);
        } else {
            out.extend_from_slice(token(arg).as_bytes());
        }
        out.push(0);
    }
    out
}

fn replace_all(data: &[u8], needle: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    if needle.is_empty() || data.len() < needle.len() {
        return None;
    }
    let first = data.windows(needle.len()).position(|w| w == needle)?;
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..first]);
    let mut i = first;
    while i < data.len() {
        if data[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_arguments_and_hostname_stably() {
        let r = Redactor::new("node-7\n");
        let mut c = b"/usr/bin/java\0-Dpassword=hunter2\0node-7\0".to_vec();
        r.file("cmdline", &mut c);
        let s = String::from_utf8(c).unwrap();
        assert!(s.starts_with("java\0redacted-"));
        assert!(!s.contains("hunter2") && !s.contains("node-7"));
        let mut t = b"host node-7 and node-7.\n".to_vec();
        r.file("pods.txt", &mut t);
        assert_eq!(
            String::from_utf8(t).unwrap(),
            format!("host {0} and {0}.\n", token(b"node-7"))
        );
        assert_eq!(token(b"x"), token(b"x"));
        let mut k = b"".to_vec();
        r.file("cmdline", &mut k);
        assert!(k.is_empty());
    }

    #[test]
    fn off_changes_nothing() {
        let r = Redactor::off();
        let mut c = b"/bin/a\0b\0".to_vec();
        r.file("cmdline", &mut c);
        assert_eq!(c, b"/bin/a\0b\0");
    }
}
