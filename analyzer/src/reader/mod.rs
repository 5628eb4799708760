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

mod entries;
mod stream;
mod ustar;

use entries::{read_targz, Ending, Event, Indexed};
use stream::Blobs;

/// Caps on what one bundle may make us hold, and the threads reading it may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Uncompressed bytes of the whole archive (a decompression bomb is a bundle too).
    pub max_total_bytes: u64,
    pub max_entry_bytes: u64,
    pub max_entries: u64,
    /// Threads inflating a bundle's gzip members at once (see
    /// `memgap_collector::bundle::members`); 0: as many as the rayon pool has. A batch, which
    /// reads several bundles at once, uses 1.
    pub inflate_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: 4 << 30,
            max_entry_bytes: 256 << 20,
            max_entries: 2_000_000,
            inflate_threads: 0,
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

    /// Asks the CPU to start loading this directory's files (names and contents, one range
    /// of a blob for a pack's files) into its cache without waiting for them: the model reads
    /// directories in path order, not in the order of their bytes, and every first touch of a
    /// file was a wait on memory.
    pub fn prefetch(&self) {
        let (Some(first), Some(last)) = (self.list.first(), self.list.last()) else {
            return;
        };
        if first.blob != last.blob || first.own_name {
            return;
        }
        let blob = &self.files.blobs[first.blob as usize];
        let bytes = blob
            .get(first.name.0 as usize..last.content.1 as usize)
            .unwrap_or_default();
        // A pack is a few KiB; a larger range is not one directory's handful of files.
        if bytes.len() > 16 << 10 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        for line in bytes.chunks(64) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: SSE is part of x86_64; a prefetch reads nothing and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bytes;
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
    pub fn dirs_under(&self, prefix: &str) -> Vec<(&str, DirView<'_>)> {
        // Each with its files: looking 7,000 directories up again by their ~100-byte paths
        // (hashing and comparing them) showed in profiles.
        let mut v: Vec<(&str, DirView)> = self
            .dirs
            .iter()
            .filter(|(d, _)| is_under(d, prefix))
            .map(|(d, list)| (d.as_str(), DirView { files: self, list }))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Whether any directory is at or below `prefix`.
    pub fn has_dir_under(&self, prefix: &str) -> bool {
        self.dirs.keys().any(|d| is_under(d, prefix))
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

    fn insert_pack(&mut self, dir: String, files: Vec<FileRef>) {
        let list = self.dirs.entry(dir).or_default();
        if list.is_empty() {
            *list = files;
        } else {
            list.extend(files);
        }
    }
}

/// Whether directory `d` is `prefix` or below it.
fn is_under(d: &str, prefix: &str) -> bool {
    d == prefix || d.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
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
    scratch: &mut Scratch,
) -> (Vec<FileRef>, Option<pack::PackError>) {
    // Gathered in a reused buffer, then copied at their exact size: one allocation per pack.
    let list = &mut scratch.refs;
    list.clear();
    let off = |r: std::ops::Range<usize>| (at.start + r.start as u32, at.start + r.end as u32);
    let err = pack::scan(
        &blob[at.start as usize..at.end as usize],
        &mut scratch.names,
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

/// What indexing packs reuses from one pack to the next: room for a pack's files, and the
/// names the last pack's files had.
#[derive(Default)]
struct Scratch {
    refs: Vec<FileRef>,
    names: pack::Recall,
}

/// One stored entry, for the report's appendix.
#[derive(Debug, Clone, Serialize)]
pub struct EntryInfo {
    pub path: String,
    pub bytes: u64,
}

/// What a bundle stores, for the report's appendix: its entries counted, the node's files
/// listed, and the cgroup and process directories (packs) counted, not listed (a 5,000-cgroup
/// bundle has 7,000 of them).
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// Entries that are not packs, in the bundle's order.
    pub files: Vec<EntryInfo>,
    pub cgroup_dirs: usize,
    pub process_dirs: usize,
    pub entries: usize,
    pub bytes: u64,
}

impl Stored {
    /// Adds an entry, by its path below the bundle's top folder.
    fn add(&mut self, path: &str, bytes: u64) {
        self.entries += 1;
        self.bytes += bytes;
        if !path.ends_with(pack::PACK_NAME) {
            self.files.push(EntryInfo {
                path: path.to_string(),
                bytes,
            });
        } else if path.contains("/sys/fs/cgroup/") || path.starts_with("sys/fs/cgroup/") {
            self.cgroup_dirs += 1;
        } else {
            self.process_dirs += 1;
        }
    }
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
    pub stored: Stored,
    pub diagnostics: Vec<Diagnostic>,
    /// Every entry of the archive was read: false when some were lost (a truncated or corrupt
    /// archive, a damaged pack, more entries than allowed), and the bundle may lack cgroups
    /// and processes the node had.
    pub complete: bool,
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
        read_targz(f, meta.len(), &source, limits)?
    };
    raw.finish()
}

/// For benchmarks: inflates every gzip member of a bundle's compressed bytes as [`read`] does
/// (libdeflate, each member whole, on this thread), keeping nothing. The bytes inflated, or
/// `None` if `gz` is not a stream of whole members.
#[doc(hidden)]
pub fn inflate_members(gz: &[u8]) -> Option<u64> {
    let mut total = 0;
    for m in bundle::members::members(gz)? {
        let (data, crc) = m.deflate(gz);
        let out = stream::inflate_member(data, m.isize, crc)?;
        total += out.len() as u64;
        stream::recycle([out]);
    }
    Some(total)
}

/// Reads a `.tar.gz` bundle from any reader (`source` names it in messages).
pub fn read_from(
    r: impl Read + Send,
    source: &str,
    limits: &Limits,
) -> Result<Bundle, BundleError> {
    read_targz(r, 0, source, limits)?.finish()
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
    stored: Stored,
    /// Reused while indexing each pack.
    scratch: Scratch,
    /// Tar entries taken, and how many may be.
    count: u64,
    max_entries: u64,
    /// Entries (or files of a pack) were lost: see [`Bundle::complete`].
    lost: bool,
}

impl Reading {
    fn new(source: &str, limits: &Limits) -> Reading {
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
            stored: Stored::default(),
            scratch: Scratch::default(),
            count: 0,
            max_entries: limits.max_entries,
            lost: false,
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

    /// Adds an entry whose content is `at` in `blobs`, which will be the bundle's blobs from
    /// number `off` on: the manifest is read, packs indexed (unless `pre` has it already),
    /// files placed in their snapshot.
    fn push(&mut self, blobs: &[Vec<u8>], path: String, at: Loc, off: u32, pre: Option<Indexed>) {
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
        self.stored.add(&rel, content.len() as u64);
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
                let (mut list, err) = match pre {
                    Some(indexed) => indexed,
                    None => index_pack(&blobs[at.blob as usize], at, &mut self.scratch),
                };
                if off > 0 {
                    list.iter_mut().for_each(|f| f.blob += off);
                }
                let note = err.map(|e| {
                    let msg = format!("damaged pack: {e}; the files before the damage are used");
                    (rel.clone(), msg)
                });
                // The entry's path, cut to the directory in place, is its key: one string per
                // directory instead of two (a 5,000-cgroup bundle has 7,000 packs).
                let start = rel.len() - inner.len();
                let end = start + dir.len();
                let mut key = rel;
                key.truncate(end);
                key.drain(..start);
                files.insert_pack(key, list);
                if let Some((rel, msg)) = note {
                    self.lost = true;
                    self.layout_note(Level::Error, &rel, msg);
                }
            }
            None => files.insert(
                inner,
                Loc {
                    blob: at.blob + off,
                    ..at
                },
            ),
        }
    }

    /// Takes the next tar entry; false once there are more than the limit allows.
    fn apply(&mut self, ev: Event, blobs: &[Vec<u8>], off: u32) -> bool {
        self.count += 1;
        if self.count > self.max_entries {
            let msg = format!(
                "more than {} entries; the rest is ignored",
                self.max_entries
            );
            self.lost = true;
            self.note(Level::Error, None, msg);
            return false;
        }
        match ev {
            Event::Dir => {}
            Event::Refused {
                level,
                path,
                message,
            } => self.note(level, Some(path), message),
            Event::File { path, at, pack } => self.push(blobs, path, at, off, pack),
        }
        true
    }

    /// Records how a scan of the tar ended.
    fn end(&mut self, ending: Ending) -> Result<(), BundleError> {
        let Ending::Broken { entry, error } = ending else {
            return Ok(());
        };
        self.lost = true;
        match entry {
            None if self.stored.entries == 0 => {
                return Err(BundleError::NotABundle {
                    path: self.source.clone(),
                    reason: format!("not a gzip-compressed tar archive: {error}"),
                })
            }
            None => {
                let msg = format!("archive is truncated or corrupt after {}: {error}; the entries before it are analyzed", self.after());
                self.note(Level::Error, None, msg);
            }
            Some(entry) => {
                let msg = format!("archive is truncated or corrupt in this entry: {error}; the entries before it are analyzed");
                self.note(Level::Error, Some(entry), msg);
            }
        }
        Ok(())
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
            stored: self.stored,
            diagnostics,
            complete: !self.lost,
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

fn read_dir(dir: &Path, source: &str, limits: &Limits) -> Result<Reading, BundleError> {
    let mut raw = Reading::new(source, limits);
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
                raw.push(&blobs, rel, at, 0, None);
            }
            Err(err) => raw.note(Level::Warning, Some(rel), err.to_string()),
        }
    }
    raw.blobs = blobs;
    if raw.stored.entries == 0 {
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
    if p.starts_with('/') || memchr::memchr(0, p.as_bytes()).is_some() {
        return Err(p);
    }
    // Usually clean already: kept as it is.
    if is_clean(p.as_bytes()) {
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

/// Whether a path has no empty, `.` or `..` component. Looks only at the dots and slashes,
/// found eight bytes at a time: a component-by-component check cost ~1,400 instructions per tar
/// entry, a `memchr` search per dot and slash ~850.
fn is_clean(p: &[u8]) -> bool {
    use crate::parse::ONES;
    // An empty component is a slash first, last or after another.
    if p.first().is_none_or(|&b| b == b'/') || p.last() == Some(&b'/') {
        return false;
    }
    let ends = |i: usize| p.get(i).is_none_or(|&b| b == b'/');
    // A `.` or `..` component is a dot that starts a component and ends it, or is followed
    // by one more dot that ends it.
    let fine = |i: usize| match p[i] {
        b'/' => p.get(i + 1) != Some(&b'/'),
        b'.' => {
            let starts = i == 0 || p[i - 1] == b'/';
            !(starts && (ends(i + 1) || (p.get(i + 1) == Some(&b'.') && ends(i + 2))))
        }
        _ => true,
    };
    // The high bit of each byte of `x` that is zero, exactly (no borrow crosses bytes).
    let zeros = |x: u64| {
        let low = ONES * 0x7f;
        !(((x & low).wrapping_add(low)) | x | low)
    };
    let mut at = 0;
    while let Some(word) = p.get(at..at + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let mut flagged = zeros(x ^ (ONES * u64::from(b'/'))) | zeros(x ^ (ONES * u64::from(b'.')));
        while flagged != 0 {
            if !fine(at + flagged.trailing_zeros() as usize / 8) {
                return false;
            }
            flagged &= flagged - 1;
        }
        at += 8;
    }
    (at..p.len()).all(fine)
}

/// Top-level names a bundle's content starts with, when it has no top folder.
const ROOT_NAMES: &[&str] = &["proc", "sys", "memgap", "snapshots", bundle::MANIFEST];

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The dot-and-slash check agrees with splitting the path into components.
        #[test]
        fn clean_paths_as_components_say(
            p in "[a./\\-0]{0,40}|[a-z.]{0,4}(/[a-z.]{0,4}){0,8}"
        ) {
            let by_components = p
                .as_bytes()
                .split(|&b| b == b'/')
                .all(|c| !matches!(c, b"" | b"." | b".."));
            proptest::prop_assert_eq!(is_clean(p.as_bytes()), by_components, "{:?}", p);
        }
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
