//! Reading bundles: a `.tar.gz` streamed in memory (never extracted to disk), or a directory
//! holding an unpacked one. Bundles come from strangers: links, devices, absolute paths and
//! `..` are refused, sizes are capped, and every problem becomes a [`Diagnostic`] naming the
//! bundle and the file while the rest is still read.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memgap_collector::bundle::{self, pack, Manifest};
use serde::Serialize;
use thiserror::Error;

/// Caps on what one bundle may make us hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Uncompressed bytes of the whole archive (a decompression bomb is a bundle too).
    pub max_total_bytes: u64,
    pub max_entry_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: 4 << 30,
            max_entry_bytes: 256 << 20,
            max_entries: 2_000_000,
        }
    }
}

/// A bundle that cannot be analyzed at all.
#[derive(Debug, Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a memgap bundle: {reason}")]
    NotABundle { path: String, reason: String },
    #[error("{path}: bundle format version {found} is newer than this memgap understands ({supported}); upgrade memgap")]
    TooNew {
        path: String,
        found: u32,
        supported: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Error,
}

/// A problem found in a bundle that did not stop the analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub level: Level,
    /// The bundle, as given on the command line.
    pub bundle: String,
    /// The file inside the bundle, when the problem is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lvl = match self.level {
            Level::Warning => "warning",
            Level::Error => "error",
        };
        match &self.file {
            Some(file) => write!(f, "{lvl}: {}: {file}: {}", self.bundle, self.message),
            None => write!(f, "{lvl}: {}: {}", self.bundle, self.message),
        }
    }
}

/// The files of one snapshot, by host path without the leading `/`.
#[derive(Debug, Default)]
pub struct Files {
    /// The bundle's bytes: the decompressed tar in the chunks it was inflated in (plus the few
    /// entries that straddle two chunks, copied whole), or an unpacked bundle's files. Shared
    /// by every snapshot; files are ranges of it, never copies.
    blobs: Arc<Blobs>,
    /// Names of files stored as tar entries (pack members' names are inside the blobs).
    names: Vec<u8>,
    /// directory -> files, in bundle order (the collector's walk: parents first, so listing
    /// them sorted costs little)
    dirs: indexmap::IndexMap<String, Vec<FileRef>, foldhash::fast::RandomState>,
}

/// Where a file's name and content are (no copy, no allocation per file: a 5,000-cgroup
/// bundle holds 136,000 files).
#[derive(Debug, Clone, Copy)]
struct FileRef {
    blob: u32,
    /// In `names` when `own_name`, else in the blob.
    name: (u32, u32),
    own_name: bool,
    content: (u32, u32),
}

/// The files of one directory, looked up once.
#[derive(Clone, Copy)]
pub struct DirView<'a> {
    files: &'a Files,
    list: &'a [FileRef],
}

impl<'a> DirView<'a> {
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.list
            .iter()
            .rev() // a later entry of the same name wins
            .find(|f| self.files.name(f) == name.as_bytes())
            .map(|f| self.files.content(f))
    }

    /// Every file as (name, content), in bundle order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let files = self.files;
        self.list
            .iter()
            .map(move |f| (files.name(f), files.content(f)))
    }
}

impl Files {
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        self.view(dir).get(name)
    }

    pub fn view(&self, dir: &str) -> DirView<'_> {
        DirView {
            files: self,
            list: self.dirs.get(dir).map_or(&[], Vec::as_slice),
        }
    }

    fn name(&self, f: &FileRef) -> &[u8] {
        let from = if f.own_name {
            &self.names
        } else {
            &self.blobs[f.blob as usize]
        };
        &from[f.name.0 as usize..f.name.1 as usize]
    }

    fn content(&self, f: &FileRef) -> &[u8] {
        &self.blobs[f.blob as usize][f.content.0 as usize..f.content.1 as usize]
    }

    /// The files of `dir`, in bundle order.
    pub fn dir(&self, dir: &str) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, &[u8])> {
        self.view(dir)
            .iter()
            .map(|(n, c)| (crate::parse::text(n), c))
    }

    /// Directories at or below `prefix`, sorted.
    pub fn dirs_under(&self, prefix: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self.walk_under(prefix).collect();
        v.sort_unstable();
        v
    }

    /// Whether any directory is at or below `prefix`.
    pub fn has_dir_under(&self, prefix: &str) -> bool {
        self.walk_under(prefix).next().is_some()
    }

    /// Directories at or below `prefix`, in bundle order.
    fn walk_under<'s, 'p>(
        &'s self,
        prefix: &'p str,
    ) -> impl Iterator<Item = &'s str> + use<'s, 'p> {
        self.dirs.keys().map(String::as_str).filter(move |d| {
            *d == prefix || d.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    fn insert(&mut self, path: &str, at: Loc) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let start = self.names.len() as u32;
        self.names.extend_from_slice(name.as_bytes());
        self.dirs.entry(dir.to_string()).or_default().push(FileRef {
            blob: at.blob,
            name: (start, self.names.len() as u32),
            own_name: true,
            content: (at.start, at.end),
        });
    }

    fn insert_pack(&mut self, dir: &str, files: Vec<FileRef>) {
        let list = self.dirs.entry(dir.to_string()).or_default();
        if list.is_empty() {
            *list = files;
        } else {
            list.extend(files);
        }
    }
}

/// Where an entry's content is: a range of one blob. Offsets are u32: blobs are chunks or
/// single entries, both far below 4 GiB.
#[derive(Debug, Clone, Copy)]
struct Loc {
    blob: u32,
    start: u32,
    end: u32,
}

/// Indexes a pack's files (a pack is one blob range); returns them and the error that stopped
/// the indexing, if any.
fn index_pack(
    blob: &[u8],
    at: Loc,
    scratch: &mut Vec<FileRef>,
) -> (Vec<FileRef>, Option<pack::PackError>) {
    // Gathered in a reused buffer, then copied at their exact size: one allocation per pack.
    let list = scratch;
    list.clear();
    let off = |r: std::ops::Range<usize>| (at.start + r.start as u32, at.start + r.end as u32);
    let err = pack::scan(
        &blob[at.start as usize..at.end as usize],
        |name, content| {
            list.push(FileRef {
                blob: at.blob,
                name: off(name),
                own_name: false,
                content: off(content),
            })
        },
    );
    (list.to_vec(), err)
}

/// One stored entry, for the report's appendix.
#[derive(Debug, Clone, Serialize)]
pub struct EntryInfo {
    pub path: String,
    pub bytes: u64,
}

/// A bundle read into memory.
#[derive(Debug)]
pub struct Bundle {
    /// As given by the user.
    pub source: String,
    pub manifest: Option<Manifest>,
    /// One per snapshot (a single-sample bundle has one).
    pub samples: Vec<Files>,
    /// Files outside the snapshots of a multi-sample bundle (OOM reports).
    pub shared: Files,
    pub entries: Vec<EntryInfo>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Bundle {
    /// The latest snapshot.
    pub fn latest(&self) -> &Files {
        self.samples
            .last()
            .expect("a bundle has at least one sample")
    }

    /// A bundle-level file (e.g. the OOM reports), wherever the layout put it.
    pub fn shared_file(&self, path: &str) -> Option<&[u8]> {
        self.shared.get(path).or_else(|| self.latest().get(path))
    }

    fn diag(&mut self, level: Level, file: Option<&str>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            level,
            bundle: self.source.clone(),
            file: file.map(str::to_string),
            message: message.into(),
        });
    }
}

/// Reads a `.tar.gz` bundle or a directory holding an unpacked one.
pub fn read(path: &Path, limits: &Limits) -> Result<Bundle, BundleError> {
    let source = path.display().to_string();
    let open = |e| BundleError::Open {
        path: source.clone(),
        source: e,
    };
    let meta = std::fs::metadata(path).map_err(open)?;
    let raw = if meta.is_dir() {
        read_dir(path, &source, limits)?
    } else {
        let f = std::fs::File::open(path).map_err(open)?;
        read_targz(f, &source, limits)?
    };
    raw.finish()
}

/// Reads a `.tar.gz` bundle from any reader (`source` names it in messages).
pub fn read_from(
    r: impl Read + Send,
    source: &str,
    limits: &Limits,
) -> Result<Bundle, BundleError> {
    read_targz(r, source, limits)?.finish()
}

/// A bundle being read. Entries are put in their snapshot's files as they arrive, while the
/// rest of the archive is still being inflated: done at the end, this took a tenth of the
/// reading time of a 5,000-cgroup bundle.
struct Reading {
    source: String,
    /// The bundle's bytes, once read whole.
    blobs: Vec<Vec<u8>>,
    /// Problems reading the archive (they come first in the bundle's diagnostics)...
    diagnostics: Vec<Diagnostic>,
    /// ...then problems with its layout.
    found: Vec<Diagnostic>,
    /// Path of the entry read last, as stored.
    last: Option<String>,
    /// Whether the entries sit in a top folder (`memgap-HOST-TIME/...`), from the first one.
    has_top: Option<bool>,
    top: Files,
    snaps: Vec<Files>,
    manifest: Option<Manifest>,
    /// A manifest's format version newer than ours.
    too_new: Option<u32>,
    entries: Vec<EntryInfo>,
    /// Reused while indexing each pack.
    scratch: Vec<FileRef>,
}

impl Reading {
    fn new(source: &str) -> Reading {
        Reading {
            source: source.to_string(),
            blobs: Vec::new(),
            diagnostics: Vec::new(),
            found: Vec::new(),
            last: None,
            has_top: None,
            top: Files::default(),
            snaps: Vec::new(),
            manifest: None,
            too_new: None,
            entries: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn note(&mut self, level: Level, file: Option<String>, message: String) {
        self.diagnostics.push(Diagnostic {
            level,
            bundle: self.source.clone(),
            file: file.map(|f| shorten(&f)),
            message,
        });
    }

    fn layout_note(&mut self, level: Level, file: &str, message: String) {
        self.found.push(Diagnostic {
            level,
            bundle: self.source.clone(),
            file: Some(file.to_string()),
            message,
        });
    }

    /// The entry read last, for messages about damage after it.
    fn after(&self) -> &str {
        self.last.as_deref().unwrap_or("the start")
    }

    /// Adds an entry whose content is `at` in `blobs`: the manifest is read, packs indexed,
    /// files placed in their snapshot.
    fn push(&mut self, blobs: &[Vec<u8>], path: String, at: Loc) {
        let content = &blobs[at.blob as usize][at.start as usize..at.end as usize];
        let has_top = *self.has_top.get_or_insert_with(|| {
            let first = path.split('/').next().unwrap_or_default();
            path.contains('/') && !ROOT_NAMES.contains(&first)
        });
        match &mut self.last {
            Some(l) => {
                l.clear();
                l.push_str(&path);
            }
            None => self.last = Some(path.clone()),
        }
        let rel = if has_top {
            // The top folder's name dropped in place.
            let mut path = path;
            match path.find('/') {
                Some(i) => drop(path.drain(..=i)),
                None => return,
            }
            path
        } else {
            path
        };
        self.entries.push(EntryInfo {
            path: rel.clone(),
            bytes: content.len() as u64,
        });
        if rel == bundle::MANIFEST {
            self.read_manifest(content);
            return;
        }
        // `snapshots/N/...` belongs to sample N; other files of a multi-sample bundle are shared.
        let (files, inner): (&mut Files, &str) = match rel
            .strip_prefix("snapshots/")
            .and_then(|r| r.split_once('/'))
        {
            Some((n, inner)) => match n.parse::<usize>() {
                Ok(i) if i < 10_000 => {
                    if self.snaps.len() <= i {
                        self.snaps.resize_with(i + 1, Files::default);
                    }
                    (&mut self.snaps[i], inner)
                }
                _ => {
                    let msg = "ignored: not a valid snapshot number".to_string();
                    self.layout_note(Level::Warning, &rel, msg);
                    return;
                }
            },
            None => (&mut self.top, rel.as_str()),
        };
        match inner
            .strip_suffix(pack::PACK_NAME)
            .and_then(|d| d.strip_suffix('/'))
        {
            Some(dir) => {
                let (list, err) = index_pack(&blobs[at.blob as usize], at, &mut self.scratch);
                files.insert_pack(dir, list);
                if let Some(e) = err {
                    let msg = format!("damaged pack: {e}; the files before the damage are used");
                    self.layout_note(Level::Error, &rel, msg);
                }
            }
            None => files.insert(inner, at),
        }
    }

    fn read_manifest(&mut self, content: &[u8]) {
        match serde_json::from_slice::<Manifest>(content) {
            Ok(m) if m.format_version > bundle::FORMAT_VERSION => {
                self.too_new = Some(m.format_version)
            }
            Ok(m) => self.manifest = Some(m),
            Err(e) => {
                // A manifest that is not ours may still carry a version we can check.
                let v = serde_json::from_slice::<serde_json::Value>(content)
                    .ok()
                    .and_then(|v| v.get("format_version")?.as_u64());
                match v.filter(|v| *v > bundle::FORMAT_VERSION as u64) {
                    Some(v) => self.too_new = Some(v.min(u32::MAX as u64) as u32),
                    None => self.layout_note(
                        Level::Error,
                        bundle::MANIFEST,
                        format!("unreadable manifest: {e}; analyzing the files without it"),
                    ),
                }
            }
        }
    }

    /// The bundle, once every entry is in.
    fn finish(self) -> Result<Bundle, BundleError> {
        if let Some(found) = self.too_new {
            return Err(BundleError::TooNew {
                path: self.source,
                found,
                supported: bundle::FORMAT_VERSION,
            });
        }
        let blobs = Arc::new(Blobs(self.blobs));
        let mut diagnostics = self.diagnostics;
        diagnostics.extend(self.found);
        let mut b = Bundle {
            source: self.source,
            manifest: self.manifest,
            samples: Vec::new(),
            shared: Files::default(),
            entries: self.entries,
            diagnostics,
        };
        let (mut top, mut snaps) = (self.top, self.snaps);
        for f in std::iter::once(&mut top).chain(snaps.iter_mut()) {
            f.blobs = Arc::clone(&blobs);
        }
        snaps.retain(|s| !s.is_empty());
        let samples = if snaps.is_empty() {
            vec![top]
        } else {
            b.shared = top;
            snaps
        };
        let samples: Vec<Files> = samples.into_iter().filter(|s| !s.is_empty()).collect();
        if samples.is_empty() {
            return Err(BundleError::NotABundle {
                path: b.source,
                reason: "it holds no kernel files".into(),
            });
        }
        if b.manifest.is_none()
            && !b
                .diagnostics
                .iter()
                .any(|d| d.file.as_deref() == Some(bundle::MANIFEST))
        {
            b.diag(
                Level::Error,
                Some(bundle::MANIFEST),
                "missing (the bundle may be truncated); analyzing the files without it",
            );
        }
        b.samples = samples;
        Ok(b)
    }
}

/// Paths longer than this are refused: the kernel's own limit (PATH_MAX), so no real file has
/// one, and a hostile bundle cannot make every name a megabyte.
pub const MAX_PATH: usize = 4096;

/// Diagnostics kept per bundle; the rest are counted in one last line.
pub const MAX_DIAGNOSTICS: usize = 1000;

/// A path as shown in a message: long ones cut in the middle.
fn shorten(p: &str) -> String {
    if p.len() <= 300 {
        return p.to_string();
    }
    let head: String = p.chars().take(150).collect();
    let tail: String = p
        .chars()
        .rev()
        .take(100)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}...({} bytes)...{tail}", p.len())
}

/// Keeps the first [`MAX_DIAGNOSTICS`] diagnostics and says how many more there were.
pub fn cap_diagnostics(d: &mut Vec<Diagnostic>) {
    if d.len() <= MAX_DIAGNOSTICS {
        return;
    }
    let more = d.len() - MAX_DIAGNOSTICS;
    d.truncate(MAX_DIAGNOSTICS);
    let bundle = d.first().map(|x| x.bundle.clone()).unwrap_or_default();
    d.push(Diagnostic {
        level: Level::Warning,
        bundle,
        file: None,
        message: format!("{more} more problem(s) of the kinds above, not listed"),
    });
}

/// Fails reads past a byte budget, so no entry (long names included) can exceed it.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(
                "uncompressed size exceeds the analyzer's limit (a decompression bomb?)",
            ));
        }
        let n = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

/// The decompressed stream, inflated on another thread in chunks of [`CHUNK`] bytes: inflating
/// and reading the tar overlap, and the chunks are kept as the bundle's storage (no copy).
struct Stream {
    rx: crossbeam_channel::Receiver<std::io::Result<Vec<u8>>>,
    /// The chunks, and the entries that straddle two chunks copied whole.
    blobs: Vec<Vec<u8>>,
    /// Chunk number -> its index in `blobs`.
    chunk_blob: Vec<u32>,
    received: u64,
    pos: u64,
    done: bool,
    /// Why the stream ended early (corrupt gzip, over the size cap).
    err: Option<std::io::Error>,
}

const CHUNK: usize = 256 << 10;

impl Stream {
    /// Waits for the chunks up to `end`; false if the stream ends before.
    fn fill_to(&mut self, end: u64) -> bool {
        while self.received < end && !self.done {
            match self.rx.recv() {
                Ok(Ok(c)) if !c.is_empty() => {
                    self.received += c.len() as u64;
                    self.chunk_blob.push(self.blobs.len() as u32);
                    self.blobs.push(c);
                }
                Ok(Err(e)) => {
                    self.err = Some(e);
                    self.done = true;
                }
                // The end of the stream, or the producer gone.
                _ => self.done = true,
            }
        }
        self.received >= end
    }

    /// Where the bytes `start..end` of the stream are; `None` if the stream is shorter.
    fn locate(&mut self, start: u64, end: u64) -> Option<Loc> {
        if !self.fill_to(end) {
            return None;
        }
        if start == end {
            // An empty file, maybe right at the end of the last chunk: any empty range.
            return Some(Loc {
                blob: 0,
                start: 0,
                end: 0,
            });
        }
        let (first, last) = (start / CHUNK as u64, end.saturating_sub(1) / CHUNK as u64);
        if first == last {
            let base = first * CHUNK as u64;
            return Some(Loc {
                blob: self.chunk_blob[first as usize],
                start: (start - base) as u32,
                end: (end - base) as u32,
            });
        }
        let mut whole = Vec::with_capacity((end - start) as usize);
        let mut at = start;
        while at < end {
            let (i, o) = ((at / CHUNK as u64) as usize, (at % CHUNK as u64) as usize);
            let n = (CHUNK - o).min((end - at) as usize);
            whole.extend_from_slice(&self.blobs[self.chunk_blob[i] as usize][o..o + n]);
            at += n as u64;
        }
        self.blobs.push(whole);
        Some(Loc {
            blob: (self.blobs.len() - 1) as u32,
            start: 0,
            end: (end - start) as u32,
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.fill_to(self.pos + 1) {
            return Ok(0);
        }
        let (i, o) = (
            (self.pos / CHUNK as u64) as usize,
            (self.pos % CHUNK as u64) as usize,
        );
        let c = &self.blobs[self.chunk_blob[i] as usize];
        let n = buf.len().min(c.len() - o);
        buf[..n].copy_from_slice(&c[o..o + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for Stream {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            std::io::SeekFrom::Start(p) => p,
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
            })?,
            std::io::SeekFrom::End(_) => {
                return Err(std::io::Error::other("a stream has no known end"))
            }
        };
        Ok(self.pos)
    }
}

/// The stream, shared by the tar reader (headers) and the loop over entries (contents).
struct Shared<'a>(&'a std::cell::RefCell<Stream>);

impl Read for Shared<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl std::io::Seek for Shared<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.borrow_mut().seek(to)
    }
}

/// Chunks of bundles already dropped, for the next bundle to inflate into: fresh memory costs
/// the kernel a page fault and a page clearing per 4 KiB, which measured as much as inflating
/// itself; reused memory costs neither. Bounded, so a batch holds no more than this.
static SPARE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const SPARE_MAX: usize = 128; // 32 MiB

fn spare_chunk() -> Vec<u8> {
    let reused = SPARE.lock().ok().and_then(|mut s| s.pop());
    reused.unwrap_or_else(|| vec![0; CHUNK])
}

/// The blobs of a bundle; chunk-sized ones go back to [`SPARE`] when the bundle is dropped.
#[derive(Debug, Default)]
struct Blobs(Vec<Vec<u8>>);

impl std::ops::Deref for Blobs {
    type Target = [Vec<u8>];
    fn deref(&self) -> &[Vec<u8>] {
        &self.0
    }
}

impl Drop for Blobs {
    fn drop(&mut self) {
        let Ok(mut spare) = SPARE.lock() else { return };
        for mut b in self.0.drain(..) {
            if spare.len() >= SPARE_MAX {
                break;
            }
            if b.capacity() == CHUNK {
                b.resize(CHUNK, 0);
                spare.push(b);
            }
        }
    }
}

/// Inflates `r` into chunks until its end, an error, or the reader hanging up.
fn inflate(r: impl Read, limits: &Limits, tx: crossbeam_channel::Sender<std::io::Result<Vec<u8>>>) {
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(128 << 10, r));
    let mut capped = Capped {
        inner: gz,
        left: limits.max_total_bytes,
    };
    loop {
        let mut chunk = spare_chunk();
        let mut n = 0;
        let res = loop {
            match capped.read(&mut chunk[n..]) {
                Ok(0) => break Ok(()),
                Ok(k) => {
                    n += k;
                    if n == CHUNK {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        chunk.truncate(n);
        let last = n < CHUNK;
        if !chunk.is_empty() && tx.send(Ok(chunk)).is_err() {
            return;
        }
        if let Err(e) = res {
            let _ = tx.send(Err(e));
            return;
        }
        if last {
            let _ = tx.send(Ok(Vec::new()));
            return;
        }
    }
}

fn read_targz(r: impl Read + Send, source: &str, limits: &Limits) -> Result<Reading, BundleError> {
    let limits = &Limits {
        max_entry_bytes: limits.max_entry_bytes.min(1 << 31),
        ..*limits
    };
    let (tx, rx) = crossbeam_channel::bounded(64);
    std::thread::scope(|s| {
        s.spawn(move || inflate(r, limits, tx));
        let stream = Stream {
            rx,
            blobs: Vec::new(),
            chunk_blob: Vec::new(),
            received: 0,
            pos: 0,
            done: false,
            err: None,
        };
        // Returning (and so dropping the receiver) before the scope ends lets the inflater stop
        // if the archive is abandoned early.
        read_tar(stream, source, limits)
    })
}

/// Lists the entries of the tar as it is inflated. The tar crate reads the headers (seeking
/// over the contents); each entry's content stays in the chunk that holds it.
fn read_tar(stream: Stream, source: &str, limits: &Limits) -> Result<Reading, BundleError> {
    let stream = std::cell::RefCell::new(stream);
    let mut ar = tar::Archive::new(Shared(&stream));
    let mut raw = Reading::new(source);
    let entries = ar
        .entries_with_seek()
        .map_err(|e| BundleError::NotABundle {
            path: source.into(),
            reason: e.to_string(),
        })?;
    let mut count = 0u64;
    // The entry read last, for messages about damage after it.
    // A damaged compressed stream explains a damaged tar better than the tar's own error.
    let gz_err = |e: String| stream.borrow_mut().err.take().map_or(e, |g| g.to_string());
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let e = gz_err(e.to_string());
                if raw.entries.is_empty() {
                    return Err(BundleError::NotABundle {
                        path: source.into(),
                        reason: format!("not a gzip-compressed tar archive: {e}"),
                    });
                }
                let msg = format!("archive is truncated or corrupt after {}: {e}; the entries before it are analyzed", raw.after());
                raw.note(Level::Error, None, msg);
                break;
            }
        };
        count += 1;
        if count > limits.max_entries {
            raw.note(
                Level::Error,
                None,
                format!(
                    "more than {} entries; the rest is ignored",
                    limits.max_entries
                ),
            );
            break;
        }
        let raw_path = entry.path_bytes();
        if raw_path.len() > MAX_PATH {
            let shown = String::from_utf8_lossy(&raw_path[..200]).into_owned();
            raw.note(
                Level::Warning,
                Some(shown),
                format!(
                    "refused: a {}-byte path (longer than any kernel path)",
                    raw_path.len()
                ),
            );
            continue;
        }
        let path = crate::parse::text(&raw_path).into_owned();
        drop(raw_path);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            raw.note(
                Level::Warning,
                Some(path),
                format!("refused: a {kind:?} entry (only regular files belong in a bundle)"),
            );
            continue;
        }
        let clean = match safe_path(path) {
            Ok(clean) => clean,
            Err(path) => {
                raw.note(
                    Level::Warning,
                    Some(path),
                    "refused: absolute path or `..` component".into(),
                );
                continue;
            }
        };
        let size = entry.size();
        if size > limits.max_entry_bytes {
            raw.note(
                Level::Warning,
                Some(clean),
                format!(
                    "refused: {size} bytes is over the {}-byte entry limit",
                    limits.max_entry_bytes
                ),
            );
            continue;
        }
        let start = entry.raw_file_position();
        let located = stream
            .borrow_mut()
            .locate(start, start.saturating_add(size));
        let Some(at) = located else {
            let e = gz_err("unexpected end of data".into());
            raw.note(Level::Error, Some(clean), format!("archive is truncated or corrupt in this entry: {e}; the entries before it are analyzed"));
            break;
        };
        raw.push(&stream.borrow().blobs, clean, at);
    }
    let mut stream = stream.into_inner();
    raw.blobs = std::mem::take(&mut stream.blobs);
    if let Some(e) = stream.err.take() {
        // Every entry was whole; the damage is in the padding or the trailer.
        let after = raw.after().to_string();
        raw.note(
            Level::Error,
            None,
            format!("archive is truncated or corrupt after {after}: {e}"),
        );
    }
    Ok(raw)
}

fn read_dir(dir: &Path, source: &str, limits: &Limits) -> Result<Reading, BundleError> {
    let mut raw = Reading::new(source);
    let mut blobs = Vec::new();
    let mut total = 0u64;
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                raw.note(
                    Level::Warning,
                    err.path().map(|p| p.display().to_string()),
                    err.to_string(),
                );
                continue;
            }
        };
        let rel: PathBuf = e.path().strip_prefix(dir).unwrap_or(e.path()).to_path_buf();
        let rel = rel.to_string_lossy().into_owned();
        let ft = e.file_type();
        if ft.is_dir() {
            continue;
        }
        if !ft.is_file() {
            raw.note(
                Level::Warning,
                Some(rel),
                "refused: not a regular file".into(),
            );
            continue;
        }
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        if size > limits.max_entry_bytes.min(1 << 31) || total + size > limits.max_total_bytes {
            raw.note(
                Level::Warning,
                Some(rel),
                "refused: over the size limit".into(),
            );
            continue;
        }
        // The file may have grown since it was measured: read no more than measured.
        let mut d = Vec::new();
        match std::fs::File::open(e.path()).and_then(|f| f.take(size).read_to_end(&mut d)) {
            Ok(_) => {
                total += d.len() as u64;
                let at = Loc {
                    blob: blobs.len() as u32,
                    start: 0,
                    end: d.len() as u32,
                };
                blobs.push(d);
                raw.push(&blobs, rel, at);
            }
            Err(err) => raw.note(Level::Warning, Some(rel), err.to_string()),
        }
    }
    raw.blobs = blobs;
    if raw.entries.is_empty() {
        return Err(BundleError::NotABundle {
            path: source.into(),
            reason: "the directory holds no files".into(),
        });
    }
    Ok(raw)
}

/// The path without empty and `.` components; the path itself back if it is absolute or has a
/// `..` component (refused).
fn safe_path(p: String) -> Result<String, String> {
    if p.starts_with('/') || p.contains('\0') {
        return Err(p);
    }
    // Usually clean already (no empty, `.` or `..` component): kept as it is.
    if p.as_bytes()
        .split(|&b| b == b'/')
        .all(|c| !matches!(c, b"" | b"." | b".."))
    {
        return Ok(p);
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(p);
    }
    Ok(parts.join("/"))
}

/// Top-level names a bundle's content starts with, when it has no top folder.
const ROOT_NAMES: &[&str] = &["proc", "sys", "memgap", "snapshots", bundle::MANIFEST];

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar whose entries end exactly at chunk boundaries, straddle them, or are empty right
    /// after one, without the end-of-archive blocks: every file must read back whole.
    #[test]
    fn entries_at_and_across_chunk_boundaries() {
        fn add(tar: &mut Vec<u8>, name: &str, content: &[u8]) {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).unwrap();
            h.set_size(content.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            tar.extend_from_slice(h.as_bytes());
            tar.extend_from_slice(content);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        let mut tar = Vec::new();
        let fill = vec![b'x'; CHUNK - 1024];
        let across: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
        add(&mut tar, "b/proc/fill", &fill); // ends 512 bytes before the first boundary
        add(&mut tar, "b/proc/empty_at_boundary", b""); // its content starts at the boundary
        add(&mut tar, "b/proc/across", &across);
        let pad = CHUNK * 3 - 1024 - tar.len();
        add(&mut tar, "b/proc/pad", &vec![b'p'; pad]);
        // Its content would start right where the tar ends, at the third boundary, with no
        // end-of-archive blocks after it.
        add(&mut tar, "b/proc/empty_last", b"");
        assert_eq!(tar.len(), CHUNK * 3);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let b = read_from(&gz[..], "t.tar.gz", &Limits::default()).unwrap();
        let f = b.latest();
        assert_eq!(f.get("proc/fill"), Some(&fill[..]));
        assert_eq!(f.get("proc/empty_at_boundary"), Some(&b""[..]));
        assert_eq!(f.get("proc/across"), Some(&across[..]));
        assert_eq!(f.get("proc/pad").map(<[u8]>::len), Some(pad));
        assert_eq!(f.get("proc/empty_last"), Some(&b""[..]));
    }

    #[test]
    fn safe_paths() {
        let safe = |p: &str| safe_path(p.to_string()).ok();
        assert_eq!(safe("a/./b//c").as_deref(), Some("a/b/c"));
        assert_eq!(safe("proc/meminfo").as_deref(), Some("proc/meminfo"));
        assert_eq!(safe("/etc/passwd"), None);
        assert_eq!(safe("a/../../x"), None);
        assert_eq!(safe(""), None);
        assert_eq!(safe_path("/x".into()), Err("/x".to_string()));
    }
}
