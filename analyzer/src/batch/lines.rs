//! `findings.jsonl` written straight from a bundle's findings: the same bytes as serializing
//! each [`FindingLine`] with serde_json, at a fraction of the cost. A bundle's ~2,000 lines
//! repeat most of their text (the bundle, its host and time in every line, a rule's id, title
//! and cause in each of its findings, a cgroup's path and names in each of its), so each such
//! text is escaped once and copied after; only summaries and numbers are written afresh.
//! Serializing every line field by field was ~6% of a batch's instructions.

use std::sync::Arc;

use super::{FindingLine, RuleStats};
use crate::rules::{Finding, Scope};
use crate::Analysis;

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it: `"` and `\`, the
/// control characters (`\b \f \n \r \t` by their short forms, the others as `\u00XX`), and
/// nothing else.
pub(super) fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let (mut run, mut i) = (0, 0);
    while i < bytes.len() {
        // Texts rarely need escaping: eight bytes at a time up to one that may.
        while let Some(w) = bytes.get(i..i + 8) {
            if needs_escape(u64::from_le_bytes(w.try_into().unwrap_or_default())) {
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else { break };
        i += 1;
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[run..i - 1]);
        run = i;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Whether any of eight bytes is a control character, `"` or `\` (exact for "any": a borrow
/// only runs upwards from a byte that is flagged itself).
fn needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |y: u64| y.wrapping_sub(ONES) & !y & HIGH;
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    control | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\'))) != 0
}

/// `,"key":` then the string or `null`.
fn field(out: &mut Vec<u8>, key: &str, value: Option<&str>) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    match value {
        Some(v) => json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn number(out: &mut Vec<u8>, key: &str, n: Option<u64>) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    match n {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// A text escaped once, for every line that repeats it; known by the shared string it was
/// made from (findings share their rule's and their subject's texts).
struct Escaped<K> {
    key: Option<K>,
    json: Vec<u8>,
}

impl<K: PartialEq> Escaped<K> {
    fn new() -> Self {
        Escaped {
            key: None,
            json: Vec::new(),
        }
    }

    /// The JSON for `key`, made by `make` unless it is the one made last.
    fn get(&mut self, key: K, make: impl FnOnce(&mut Vec<u8>)) -> &[u8] {
        if self.key.as_ref() != Some(&key) {
            self.json.clear();
            make(&mut self.json);
            self.key = Some(key);
        }
        &self.json
    }
}

/// The address of a shared text: findings of one rule or one subject hold the same `Arc`.
fn id<T: ?Sized>(a: &Arc<T>) -> *const () {
    Arc::as_ptr(a).cast()
}

/// Writes a bundle's finding lines into `out` and counts them into `stats`: the bytes of
/// [`FindingLine::of`] serialized with serde_json, line by line.
pub fn write(
    bundle: &str,
    page: Option<&str>,
    a: &Analysis,
    out: &mut Vec<u8>,
    stats: &mut RuleStats,
) {
    let b = &a.model.bundle;
    // `{"bundle":...,"page":...,"host":...,"collected_at":...`, the same in every line.
    let mut head = b"{\"bundle\":".to_vec();
    json_str(&mut head, bundle);
    field(&mut head, "page", page);
    field(&mut head, "host", Some(&b.hostname));
    field(&mut head, "collected_at", Some(&b.collected_at));
    // Rules' findings come in runs per subject, not per rule: a rule's texts are kept for
    // every rule seen, in order of the catalogue's first use.
    let mut rules: Vec<([*const (); 3], Vec<u8>)> = Vec::new();
    let mut subject = Escaped::new();
    for f in &a.findings {
        stats.add_one(&f.rule, &f.title, f.severity, bundle, page, f.bytes);
        out.extend_from_slice(&head);
        let key = [id(&f.rule), id(&f.title), id(&f.cause)];
        let r = match rules.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let mut json = Vec::new();
                field(&mut json, "rule", Some(&f.rule));
                field(&mut json, "title", Some(&f.title));
                field(&mut json, "cause", Some(&f.cause));
                rules.push((key, json));
                rules.len() - 1
            }
        };
        out.extend_from_slice(&rules[r].1);
        field(out, "severity", Some(f.severity.name()));
        field(out, "scope", Some(scope_name(f.scope)));
        let key = (
            id(&f.subject),
            f.cgroup_path.as_ref().map(id),
            f.k8s.as_ref().map(id),
        );
        out.extend_from_slice(subject.get(key, |json| subject_fields(json, f)));
        number(out, "bytes", f.bytes);
        number(out, "rank", Some(f.rank as u64));
        field(out, "summary", Some(&f.summary));
        out.extend_from_slice(b",\"evidence\":{");
        for (i, e) in f.evidence.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, &e.name);
            out.push(b':');
            // Numbers mostly; serde_json writes any value as it would within the line.
            if serde_json::to_writer(&mut *out, &e.value).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        out.extend_from_slice(b"}}\n");
    }
}

fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::Node => "node",
        Scope::Cgroup => "cgroup",
    }
}

/// `subject` to `qos`, which every finding of a subject shares.
fn subject_fields(json: &mut Vec<u8>, f: &Finding) {
    let k = f.k8s.as_deref();
    field(json, "subject", Some(&f.subject));
    field(json, "cgroup", f.cgroup_path.as_deref());
    field(json, "namespace", k.and_then(|k| k.namespace.as_deref()));
    field(json, "pod", k.and_then(|k| k.pod.as_deref()));
    field(json, "container", k.and_then(|k| k.container.as_deref()));
    field(json, "qos", k.and_then(|k| k.qos));
}

impl<'a> FindingLine<'a> {
    /// A finding's line (what [`write()`] writes, as a value).
    pub fn of(bundle: &'a str, page: Option<&'a str>, a: &'a Analysis, f: &'a Finding) -> Self {
        use std::borrow::Cow;
        let b = &a.model.bundle;
        let k = f.k8s.as_ref();
        let name = |n: &'a Option<Arc<str>>| n.as_deref().map(Cow::Borrowed);
        FindingLine {
            bundle: bundle.into(),
            page: page.map(Cow::Borrowed),
            host: b.hostname.as_str().into(),
            collected_at: b.collected_at.as_str().into(),
            rule: f.rule.as_ref().into(),
            title: f.title.as_ref().into(),
            cause: f.cause.as_ref().into(),
            severity: f.severity,
            scope: scope_name(f.scope).into(),
            subject: f.subject.as_ref().into(),
            cgroup: f.cgroup_path.as_deref().map(Cow::Borrowed),
            namespace: k.and_then(|k| name(&k.namespace)),
            pod: k.and_then(|k| name(&k.pod)),
            container: k.and_then(|k| name(&k.container)),
            qos: k.and_then(|k| k.qos.map(Cow::Borrowed)),
            bytes: f.bytes,
            rank: f.rank,
            summary: f.summary.as_ref().into(),
            evidence: f
                .evidence
                .iter()
                .map(|e| (e.name.as_ref().into(), Cow::Borrowed(&e.value)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_str(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).unwrap()
    }

    #[test]
    fn escapes_every_ascii_byte_at_every_place_as_serde_json() {
        for b in 0u8..0x80 {
            for at in 0..20 {
                let mut s = "abcdefghijklmnopqrs\u{e9}".to_string();
                s.insert(at, b as char);
                let mut out = Vec::new();
                json_str(&mut out, &s);
                assert_eq!(out, serde_str(&s), "byte {b:#x} at {at}");
            }
        }
    }

    proptest! {
        #[test]
        fn a_word_needs_escaping_when_one_of_its_bytes_does(x in any::<u64>(), at in 0..8usize, b in 0u8..0x60) {
            let byte = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
            for x in [x, x & !(0xff << (8 * at)) | u64::from(b) << (8 * at)] {
                prop_assert_eq!(needs_escape(x), x.to_le_bytes().into_iter().any(byte));
            }
        }

        #[test]
        fn escapes_as_serde_json(s in any::<String>(), c in "[\\x00-\\x20\"\\\\é€😀a]{0,40}") {
            for s in [&s, &c] {
                let mut out = Vec::new();
                json_str(&mut out, s);
                prop_assert_eq!(&out, &serde_str(s));
            }
        }
    }

    /// The lines of every sample, and of their findings with hostile texts, are the bytes of
    /// their `FindingLine`s serialized by serde_json; the statistics are those of the lines.
    #[test]
    fn lines_are_finding_lines_serialized() {
        let rules = crate::rules::RuleSet::builtin().unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
        let mut samples: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
            .collect();
        samples.sort();
        assert!(samples.len() > 10);
        let mut checked = 0;
        for p in samples {
            let mut a = crate::analyze(&p, &rules).unwrap();
            let odd = "\"quoted\"\\ \u{1}\t\n é 😀 </script>";
            for (i, f) in a
                .findings
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| i % 3 == 1)
            {
                f.summary = format!("{odd} {i}").into();
                f.subject = odd.into();
            }
            for (bundle, page) in [("b/x.tar.gz", Some("bundles/x.html")), (odd, None)] {
                let (mut out, mut stats) = (Vec::new(), RuleStats::default());
                write(bundle, page, &a, &mut out, &mut stats);
                let (mut want, mut want_stats) = (Vec::new(), RuleStats::default());
                for f in &a.findings {
                    let l = FindingLine::of(bundle, page, &a, f);
                    want_stats.add(&l);
                    serde_json::to_writer(&mut want, &l).unwrap();
                    want.push(b'\n');
                    checked += 1;
                }
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&want),
                    "{}",
                    p.display()
                );
                let show = |s: RuleStats| format!("{:?}", s.sorted());
                assert_eq!(show(stats), show(want_stats));
            }
        }
        assert!(checked > 50, "{checked} lines");
    }
}
