//! Flat-keyed files: `KEY VALUE` per line (`memory.stat` v1 and v2, `vmstat`, `memory.events`,
//! `cgroup.stat`, `memory.oom_control`, `memory.swap.events`).
//!
//! Every cgroup of a node writes the same keys in the same order, so the key names are kept
//! once in a shared [`Layout`] and each file keeps only its values: a 5,000-cgroup node has
//! ~25,000 flat files of up to ~70 keys, and a string per key per file was most of the
//! analyzer's time (see docs/performance.md).

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, OnceLock};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::same;
use crate::FastMap;

/// The keys of a flat file, in the order the kernel wrote them.
#[derive(Debug)]
pub struct Layout {
    keys: Vec<Box<str>>,
    /// Key -> position of its last occurrence (a later line wins, as in a map).
    index: FastMap<Box<str>, u32>,
    /// Positions of the distinct keys, sorted by key: the order of the JSON output.
    sorted: Vec<u32>,
    /// The positions of the first key list asked for (see [`Flat::positions`]), and that list.
    resolved: OnceLock<(usize, Box<[Option<u32>]>)>,
}

impl Layout {
    fn new(keys: Vec<Box<str>>) -> Layout {
        let mut index = FastMap::default();
        for (i, k) in keys.iter().enumerate() {
            index.insert(k.clone(), i as u32);
        }
        let mut sorted: Vec<u32> = index.values().copied().collect();
        sorted.sort_unstable_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]));
        Layout {
            keys,
            index,
            sorted,
            resolved: OnceLock::new(),
        }
    }

    fn resolve(&self, keys: &[&str]) -> Box<[Option<u32>]> {
        keys.iter().map(|k| self.index.get(*k).copied()).collect()
    }
}

/// The layout of a file without values. Not shared through an `Arc`: three of a v1 cgroup's
/// five flat files are empty, and counting references to one layout from every thread made a
/// contended cache line.
static EMPTY: LazyLock<Layout> = LazyLock::new(|| Layout::new(Vec::new()));

/// One flat file: its values, the layout that names them, and the lines that could not be
/// read.
#[derive(Debug, Clone, Default)]
pub struct Flat {
    /// `None` for [`EMPTY`].
    layout: Option<Arc<Layout>>,
    values: Vec<u64>,
    /// 1-based numbers of lines that were not `KEY UNSIGNED-INTEGER`.
    pub bad_lines: Vec<usize>,
}

impl Flat {
    fn layout(&self) -> &Layout {
        self.layout.as_deref().unwrap_or(&EMPTY)
    }

    pub fn get(&self, key: &str) -> Option<u64> {
        let i = *self.layout.as_ref()?.index.get(key)?;
        Some(self.values[i as usize])
    }

    /// Where each of `keys` is in this file's layout, for [`Flat::at`]. Files of one layout
    /// share the answer: a caller reading the same keys of thousands of files (the bridge
    /// over every cgroup's `memory.stat`) looks them up once per layout, not once per file.
    pub fn positions(&self, keys: &'static [&'static str]) -> Cow<'_, [Option<u32>]> {
        let id = keys.as_ptr() as usize;
        let layout = self.layout();
        let (first, at) = layout.resolved.get_or_init(|| (id, layout.resolve(keys)));
        if *first == id && at.len() == keys.len() {
            Cow::Borrowed(&at[..])
        } else {
            Cow::Owned(layout.resolve(keys).into_vec())
        }
    }

    /// The value at a position from [`Flat::positions`].
    pub fn at(&self, position: Option<u32>) -> Option<u64> {
        self.values.get(position? as usize).copied()
    }

    pub fn has(&self, key: &str) -> bool {
        self.layout().index.contains_key(key)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Distinct keys.
    pub fn len(&self) -> usize {
        self.layout().sorted.len()
    }

    /// (key, value), sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        let layout = self.layout();
        layout
            .sorted
            .iter()
            .map(|&i| (&*layout.keys[i as usize], self.values[i as usize]))
    }
}

impl PartialEq for Flat {
    fn eq(&self, other: &Flat) -> bool {
        self.bad_lines == other.bad_lines && self.iter().eq(other.iter())
    }
}

/// `{"values": {KEY: VALUE, ...}, "bad_lines": [...]}`, keys sorted.
impl Serialize for Flat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Values<'a>(&'a Flat);
        impl Serialize for Values<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0.iter() {
                    m.serialize_entry(k, &v)?;
                }
                m.end()
            }
        }
        let bad = !self.bad_lines.is_empty();
        let mut m = s.serialize_map(Some(1 + bad as usize))?;
        m.serialize_entry("values", &Values(self))?;
        if bad {
            m.serialize_entry("bad_lines", &self.bad_lines)?;
        }
        m.end()
    }
}

/// Layouts seen so far, for files parsed one after another (one per worker thread).
#[derive(Debug, Default)]
pub struct Layouts {
    recent: Vec<Arc<Layout>>,
}

/// Layouts kept per [`Layouts`]: a node has a handful of flat files, each with one layout
/// (two for `memory.stat` on a v1 root or a v2 root).
const KEEP: usize = 16;

impl Layouts {
    /// A known layout with exactly these keys, or a new one.
    fn matching(&mut self, text: &[u8], lines: &[Line]) -> Arc<Layout> {
        let same = |l: &Layout| {
            l.keys.len() == lines.len()
                && l.keys.iter().zip(lines).all(|(k, line)| {
                    k.as_bytes() == &text[line.key.0 as usize..line.key.1 as usize]
                })
        };
        if let Some(l) = self.recent.iter().rev().find(|l| same(l)) {
            return Arc::clone(l);
        }
        let keys = lines.iter().map(|l| l.key(text).into()).collect();
        let l = Arc::new(Layout::new(keys));
        if self.recent.len() == KEEP {
            self.recent.remove(0);
        }
        self.recent.push(Arc::clone(&l));
        l
    }
}

/// A good line: where its key is in the text, and its value.
struct Line {
    key: (u32, u32),
    value: u64,
}

impl Line {
    /// The key, checked to be ASCII when the line was read (kernel keys are).
    fn key<'t>(&self, text: &'t [u8]) -> &'t str {
        std::str::from_utf8(&text[self.key.0 as usize..self.key.1 as usize]).unwrap_or_default()
    }
}

/// Parses one file on its own.
pub fn parse(text: &str) -> Flat {
    parse_with(text.as_bytes(), &mut Layouts::default())
}

/// Parses one file, sharing the key names with the files parsed before it. Works on bytes:
/// the file is read in one pass, and only the keys need to be text.
pub fn parse_with(text: &[u8], layouts: &mut Layouts) -> Flat {
    if let Some(f) = layouts.recent.iter().rev().find_map(|l| exactly(text, l)) {
        return f;
    }
    parse_any(text, layouts)
}

/// The file's values if it is exactly `layout`'s keys in order, one `KEY VALUE\n` line each:
/// how the kernel writes every cgroup's files, read here by comparing each line with the key
/// expected there instead of looking for where keys end. `None` for anything else.
fn exactly(text: &[u8], layout: &Arc<Layout>) -> Option<Flat> {
    let mut values = Vec::new();
    let mut at = 0;
    for key in &layout.keys {
        let key = key.as_bytes();
        let sep = at + key.len();
        if !(text.get(sep) == Some(&b' ') && same(&text[at..sep], key)) {
            return None;
        }
        at = sep + 1;
        // `0`, the commonest value (the counters a cgroup never touched), read at a glance.
        let value = if text.get(at..at + 2) == Some(b"0\n") {
            at += 2;
            0
        } else {
            let (value, digits) = super::leading_decimal(&text[at..])?;
            at += digits;
            if digits == 0 || text.get(at) != Some(&b'\n') {
                return None;
            }
            at += 1;
            value
        };
        if values.is_empty() {
            values.reserve_exact(layout.keys.len());
        }
        values.push(value);
    }
    (at == text.len() && !values.is_empty()).then(|| Flat {
        layout: Some(Arc::clone(layout)),
        values,
        bad_lines: Vec::new(),
    })
}

/// Any flat file, line by line.
fn parse_any(text: &[u8], layouts: &mut Layouts) -> Flat {
    let mut lines: Vec<Line> = Vec::with_capacity(64);
    let mut bad_lines = Vec::new();
    let (mut at, mut number) = (0, 0);
    let n = text.len();
    let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\x0c');
    while at < n {
        number += 1;
        while at < n && ws(text[at]) {
            at += 1;
        }
        let key_start = at;
        let mut ascii = true;
        while at < n && text[at] != b'\n' && !ws(text[at]) {
            ascii &= text[at].is_ascii();
            at += 1;
        }
        let key_end = at;
        while at < n && ws(text[at]) {
            at += 1;
        }
        let (mut value, mut digits, mut overflow) = (0u64, 0, false);
        while at < n && text[at].is_ascii_digit() {
            let d = (text[at] - b'0') as u64;
            match value.checked_mul(10).and_then(|v| v.checked_add(d)) {
                Some(v) => value = v,
                None => overflow = true,
            }
            digits += 1;
            at += 1;
        }
        while at < n && ws(text[at]) {
            at += 1;
        }
        let line_end = at >= n || text[at] == b'\n';
        if key_start == key_end && line_end {
            // A blank line.
        } else if line_end && digits > 0 && !overflow && key_start < key_end && ascii {
            lines.push(Line {
                key: (key_start as u32, key_end as u32),
                value,
            });
        } else {
            bad_lines.push(number);
            while at < n && text[at] != b'\n' {
                at += 1;
            }
        }
        at += 1; // the newline
    }
    let layout = (!lines.is_empty()).then(|| layouts.matching(text, &lines));
    Flat {
        layout,
        values: lines.iter().map(|l| l.value).collect(),
        bad_lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_v1_and_v2_memory_stat() {
        let v1 = parse(include_str!(
            "../../../fixtures/realdata/localhost-v1/sys/fs/cgroup/memory/memory.stat"
        ));
        assert!(v1.bad_lines.is_empty());
        assert_eq!(
            v1.get("hierarchical_memory_limit"),
            Some(9223372036854771712)
        );
        assert!(v1.has("total_inactive_file"));
        let v2 = parse(include_str!("../../../fixtures/realdata/elastic_elastic-agent-system-metrics/metric/system/cgroup/testdata/docker2.zip/docker2/sys/fs/cgroup/user.slice/user-1000.slice/session-520.scope/memory.stat"));
        assert!(v2.bad_lines.is_empty());
        assert!(v2.get("anon").unwrap() > 0 && v2.has("sec_pagetables"));
        let cs = parse(include_str!(
            "../../../fixtures/realdata/localhost-v1/sys/fs/cgroup/unified/cgroup.stat"
        ));
        assert!(cs.has("nr_dying_descendants") && cs.has("nr_subsys_hugetlb"));
    }

    #[test]
    fn malformed_lines_are_reported_and_the_rest_kept() {
        let f =
            parse("cache 1\nrss -5\nbroken\nshmem 18446744073709551616\nnew_key 7 extra\nanon 3\n");
        assert_eq!(f.get("cache"), Some(1));
        assert_eq!(f.get("anon"), Some(3));
        assert_eq!(f.bad_lines, vec![2, 3, 4, 5]);
        let g = parse_with(b"a 1x\n\xff 2\n  b\t 3 \r\nc 4", &mut Layouts::default());
        assert_eq!(g.bad_lines, vec![1, 2]);
        assert_eq!((g.get("b"), g.get("c")), (Some(3), Some(4)));
    }

    #[test]
    fn positions_are_found_once_per_layout() {
        static KEYS: [&str; 3] = ["rss", "none", "cache"];
        static OTHER: [&str; 1] = ["cache"];
        let mut layouts = Layouts::default();
        let a = parse_with(b"cache 1\nrss 2\n", &mut layouts);
        let b = parse_with(b"cache 3\nrss 4\n", &mut layouts);
        let pa = a.positions(&KEYS);
        assert!(matches!(pa, Cow::Borrowed(_)));
        let values = |f: &Flat, p: &[Option<u32>]| p.iter().map(|&p| f.at(p)).collect::<Vec<_>>();
        assert_eq!(values(&a, &pa), [Some(2), None, Some(1)]);
        assert_eq!(values(&b, &b.positions(&KEYS)), [Some(4), None, Some(3)]);
        // Another list still gets right answers, just not cached.
        assert_eq!(values(&b, &b.positions(&OTHER)), [Some(3)]);
        assert_eq!(Flat::default().at(None), None);
    }

    #[test]
    fn empty() {
        assert_eq!(parse(""), Flat::default());
        assert_eq!(parse("\n  \n"), Flat::default());
    }

    #[test]
    fn files_with_the_same_keys_share_a_layout_and_keep_their_values() {
        let mut layouts = Layouts::default();
        let a = parse_with(b"cache 1\nrss 2\n", &mut layouts);
        let b = parse_with(b"cache 3\nrss 4\n", &mut layouts);
        let c = parse_with(b"cache 5\nrss 6\nshmem 7\n", &mut layouts);
        let layout = |f: &Flat| Arc::as_ptr(f.layout.as_ref().unwrap());
        assert_eq!(layout(&a), layout(&b));
        assert_ne!(layout(&a), layout(&c));
        assert_eq!(
            (a.get("rss"), b.get("rss"), c.get("shmem")),
            (Some(2), Some(4), Some(7))
        );
        assert_eq!(
            b,
            parse("rss 4\ncache 3\n"),
            "order of lines does not matter"
        );
    }

    #[test]
    fn the_quick_reader_agrees_with_the_careful_one() {
        let mut layouts = Layouts::default();
        parse_with(b"cache 1\nrss 2\n", &mut layouts);
        for text in [
            &b"cache 3\nrss 4\n"[..],
            b"cache 3\nrss 4",
            b"cache 3\nrss 4\n\n",
            b"cache  3\nrss 4\n",
            b"cache 3\nrss 18446744073709551616\n",
            b"cache 3\nrss -4\n",
            b"cache 3\nrssx 4\n",
            b"cache 3\n",
            b"cache 3\nrss 4\nshmem 5\n",
            b"cache 0\nrss 0\n",
            b"cache 0\nrss 0",
            b"cache 00\nrss 0\n",
            b"cache 0 \nrss 0\n",
            b"cache 01\nrss 0\n",
            b"cache 0x\nrss 0\n",
            b"cache 0\nrss 0\n0\n",
        ] {
            let quick = parse_with(text, &mut layouts);
            let careful = parse_any(text, &mut Layouts::default());
            assert_eq!(quick, careful, "{}", String::from_utf8_lossy(text));
        }
    }

    proptest::proptest! {
        /// Values around the quick reader's shortcuts (a lone `0`, digits, blanks, line ends)
        /// read as the careful reader reads them.
        #[test]
        fn values_read_as_the_careful_reader_reads_them(text in "cache [0 1\n]{0,4}\nrss [09 \n]{0,4}") {
            let mut layouts = Layouts::default();
            parse_with(b"cache 1\nrss 2\n", &mut layouts);
            let text = text.as_bytes();
            let careful = parse_any(text, &mut Layouts::default());
            proptest::prop_assert_eq!(parse_with(text, &mut layouts), careful);
        }
    }

    #[test]
    fn a_repeated_key_reads_as_its_last_line_and_is_listed_once() {
        let f = parse("b 1\na 2\nb 3\n");
        assert_eq!(f.get("b"), Some(3));
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![("a", 2), ("b", 3)]);
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"values":{"a":2,"b":3}}"#
        );
    }
}
