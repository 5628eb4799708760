//! Reading bundles: a `.tar.gz` streamed in memory (never extracted to disk), or a directory
//! holding an unpacked one. Bundles come from strangers: links, devices, absolute paths and
//! `..` are refused, sizes are capped, and every problem becomes a [`Diagnostic`] naming the
//! bundle and the file while the rest is still read.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

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
    blobs: Vec<Vec<u8>>,
    /// directory -> files, each as (blob, name range, content range) into `blobs`
    dirs: HashMap<String, Vec<FileRef>>,
}

/// Where a file's name and content are, inside one of `Files::blobs` (no copy, no allocation
/// per file: a 5,000-cgroup bundle holds 136,000 files).
#[derive(Debug, Clone, Copy)]
struct FileRef {
    blob: u32,
    name: (u32, u32),
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
        &self.blobs[f.blob as usize][f.name.0 as usize..f.name.1 as usize]
    }

    fn content(&self, f: &FileRef) -> &[u8] {
        &self.blobs[f.blob as usize][f.content.0 as usize..f.content.1 as usize]
    }

    /// The files of `dir`, in bundle order.
    pub fn dir(&self, dir: &str) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, &[u8])> {
        self.dirs
            .get(dir)
            .into_iter()
            .flatten()
            .map(|f| (String::from_utf8_lossy(self.name(f)), self.content(f)))
    }

    /// Directories at or below `prefix`, sorted.
    pub fn dirs_under(&self, prefix: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .dirs
            .keys()
            .map(String::as_str)
            .filter(|d| *d == prefix || d.strip_prefix(prefix).is_some_and(|r| r.starts_with('/')))
            .collect();
        v.sort_unstable();
        v
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    fn insert(&mut self, path: &str, mut data: Vec<u8>) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        // Entries are capped far below 4 GiB, so u32 offsets hold. The name goes after the
        // content in the same blob.
        let len = data.len() as u32;
        data.extend_from_slice(name.as_bytes());
        let end = data.len() as u32;
        self.blobs.push(data);
        let blob = (self.blobs.len() - 1) as u32;
        self.dirs.entry(dir.to_string()).or_default().push(FileRef {
            blob,
            name: (len, end),
            content: (0, len),
        });
    }

    /// Indexes a pack's files under `dir`; returns the error that stopped it, if any.
    fn insert_pack(&mut self, dir: &str, data: Vec<u8>) -> Option<pack::PackError> {
        self.blobs.push(data);
        let b = self.blobs.len() - 1;
        let base = self.blobs[b].as_ptr() as usize;
        let mut list = Vec::new();
        let mut err = None;
        let off = |p: *const u8| (p as usize - base) as u32;
        for item in pack::entries(&self.blobs[b]) {
            match item {
                Ok((name, content)) => {
                    let (n, c) = (off(name.as_ptr()), off(content.as_ptr()));
                    list.push(FileRef {
                        blob: b as u32,
                        name: (n, n + name.len() as u32),
                        content: (c, c + content.len() as u32),
                    });
                }
                Err(e) => err = Some(e),
            }
        }
        self.dirs.entry(dir.to_string()).or_default().extend(list);
        err
    }
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
    let meta = std::fs::metadata(path).map_err(|e| BundleError::Open {
        path: source.clone(),
        source: e,
    })?;
    let raw = if meta.is_dir() {
        read_dir(path, &source, limits)?
    } else {
        let f = std::fs::File::open(path).map_err(|e| BundleError::Open {
            path: source.clone(),
            source: e,
        })?;
        read_targz(f, &source, limits)?
    };
    assemble(raw, source)
}

/// Reads a `.tar.gz` bundle from any reader (`source` names it in messages).
pub fn read_from(
    r: impl Read + Send,
    source: &str,
    limits: &Limits,
) -> Result<Bundle, BundleError> {
    assemble(read_targz(r, source, limits)?, source.to_string())
}

/// Entries as read, before the layout is interpreted.
struct Raw {
    entries: Vec<(String, Vec<u8>)>,
    diagnostics: Vec<Diagnostic>,
}

impl Raw {
    fn note(&mut self, source: &str, level: Level, file: Option<String>, message: String) {
        self.diagnostics.push(Diagnostic {
            level,
            bundle: source.to_string(),
            file: file.map(|f| shorten(&f)),
            message,
        });
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

/// The decompressed stream, produced on another thread in chunks: inflating and reading the
/// tar overlap, and the channel's bound keeps at most a few chunks in memory.
struct Chunks {
    rx: crossbeam_channel::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

const CHUNK: usize = 256 << 10;

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(c)) if !c.is_empty() => {
                    self.cur = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The end of the stream, or the producer gone.
                _ => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
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
        let mut chunk = vec![0u8; CHUNK];
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
        if n > 0 && tx.send(Ok(chunk)).is_err() {
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

fn read_targz(r: impl Read + Send, source: &str, limits: &Limits) -> Result<Raw, BundleError> {
    // File offsets inside a blob are u32.
    let limits = &Limits {
        max_entry_bytes: limits.max_entry_bytes.min(1 << 31),
        ..*limits
    };
    let (tx, rx) = crossbeam_channel::bounded(8);
    std::thread::scope(|s| {
        s.spawn(move || inflate(r, limits, tx));
        let chunks = Chunks {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        };
        // Dropping the archive (and so the receiver) before the scope ends lets the inflater
        // stop if the archive is abandoned early.
        read_tar(chunks, source, limits)
    })
}

fn read_tar(stream: Chunks, source: &str, limits: &Limits) -> Result<Raw, BundleError> {
    // tar reads 512-byte headers: serve them from a buffer, not from the channel each time.
    let mut ar = tar::Archive::new(std::io::BufReader::with_capacity(64 << 10, stream));
    let mut raw = Raw {
        entries: Vec::new(),
        diagnostics: Vec::new(),
    };
    let entries = ar.entries().map_err(|e| BundleError::NotABundle {
        path: source.into(),
        reason: e.to_string(),
    })?;
    let mut count = 0u64;
    let mut last_ok: Option<String> = None;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                if raw.entries.is_empty() && last_ok.is_none() {
                    return Err(BundleError::NotABundle {
                        path: source.into(),
                        reason: format!("not a gzip-compressed tar archive: {e}"),
                    });
                }
                let after = last_ok.as_deref().unwrap_or("the start");
                raw.note(source, Level::Error, None, format!("archive is truncated or corrupt after {after}: {e}; the entries before it are analyzed"));
                break;
            }
        };
        count += 1;
        if count > limits.max_entries {
            raw.note(
                source,
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
                source,
                Level::Warning,
                Some(shown),
                format!(
                    "refused: a {}-byte path (longer than any kernel path)",
                    raw_path.len()
                ),
            );
            continue;
        }
        let path = String::from_utf8_lossy(&raw_path).into_owned();
        drop(raw_path);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            raw.note(
                source,
                Level::Warning,
                Some(path),
                format!("refused: a {kind:?} entry (only regular files belong in a bundle)"),
            );
            continue;
        }
        let Some(clean) = safe_path(&path) else {
            raw.note(
                source,
                Level::Warning,
                Some(path),
                "refused: absolute path or `..` component".into(),
            );
            continue;
        };
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > limits.max_entry_bytes {
            raw.note(
                source,
                Level::Warning,
                Some(clean),
                format!(
                    "refused: {size} bytes is over the {}-byte entry limit",
                    limits.max_entry_bytes
                ),
            );
            continue;
        }
        let mut data = Vec::with_capacity(size.min(64 << 20) as usize);
        if let Err(e) = entry.read_to_end(&mut data) {
            raw.note(source, Level::Error, Some(clean), format!("archive is truncated or corrupt in this entry: {e}; the entries before it are analyzed"));
            break;
        }
        last_ok = Some(clean.clone());
        raw.entries.push((clean, data));
    }
    Ok(raw)
}

fn read_dir(dir: &Path, source: &str, limits: &Limits) -> Result<Raw, BundleError> {
    let mut raw = Raw {
        entries: Vec::new(),
        diagnostics: Vec::new(),
    };
    let mut total = 0u64;
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                raw.note(
                    source,
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
                source,
                Level::Warning,
                Some(rel),
                "refused: not a regular file".into(),
            );
            continue;
        }
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        if size > limits.max_entry_bytes || total + size > limits.max_total_bytes {
            raw.note(
                source,
                Level::Warning,
                Some(rel),
                "refused: over the size limit".into(),
            );
            continue;
        }
        match std::fs::read(e.path()) {
            Ok(d) => {
                total += d.len() as u64;
                raw.entries.push((rel, d));
            }
            Err(err) => raw.note(source, Level::Warning, Some(rel), err.to_string()),
        }
    }
    if raw.entries.is_empty() {
        return Err(BundleError::NotABundle {
            path: source.into(),
            reason: "the directory holds no files".into(),
        });
    }
    Ok(raw)
}

/// A relative, normalized path, or `None` for absolute paths and `..`.
fn safe_path(p: &str) -> Option<String> {
    if p.starts_with('/') || p.contains('\0') {
        return None;
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// Top-level names a bundle's content starts with, when it has no top folder.
const ROOT_NAMES: &[&str] = &["proc", "sys", "memgap", "snapshots", bundle::MANIFEST];

fn assemble(raw: Raw, source: String) -> Result<Bundle, BundleError> {
    let mut b = Bundle {
        source,
        manifest: None,
        samples: Vec::new(),
        shared: Files::default(),
        entries: Vec::new(),
        diagnostics: raw.diagnostics,
    };
    let has_top = raw.entries.first().is_some_and(|(p, _)| {
        let first = p.split('/').next().unwrap_or_default();
        p.contains('/') && !ROOT_NAMES.contains(&first)
    });
    let mut top = Files::default();
    let mut snaps: Vec<Files> = Vec::new();
    for (path, data) in raw.entries {
        let rel = if has_top {
            match path.split_once('/') {
                Some((_, r)) => r.to_string(),
                None => continue,
            }
        } else {
            path
        };
        b.entries.push(EntryInfo {
            path: rel.clone(),
            bytes: data.len() as u64,
        });
        if rel == bundle::MANIFEST {
            match serde_json::from_slice::<Manifest>(&data) {
                Ok(m) => {
                    if m.format_version > bundle::FORMAT_VERSION {
                        return Err(BundleError::TooNew {
                            path: b.source,
                            found: m.format_version,
                            supported: bundle::FORMAT_VERSION,
                        });
                    }
                    b.manifest = Some(m);
                }
                Err(e) => {
                    // A manifest that is not ours may still carry a version we can check.
                    let v = serde_json::from_slice::<serde_json::Value>(&data)
                        .ok()
                        .and_then(|v| v.get("format_version")?.as_u64());
                    if let Some(v) = v.filter(|v| *v > bundle::FORMAT_VERSION as u64) {
                        return Err(BundleError::TooNew {
                            path: b.source,
                            found: v as u32,
                            supported: bundle::FORMAT_VERSION,
                        });
                    }
                    b.diag(
                        Level::Error,
                        Some(bundle::MANIFEST),
                        format!("unreadable manifest: {e}; analyzing the files without it"),
                    );
                }
            }
            continue;
        }
        // `snapshots/N/...` belongs to sample N; other files of a multi-sample bundle are shared.
        let (files, inner): (&mut Files, String) = match rel
            .strip_prefix("snapshots/")
            .and_then(|r| r.split_once('/'))
        {
            Some((n, inner)) => match n.parse::<usize>() {
                Ok(i) if i < 10_000 => {
                    if snaps.len() <= i {
                        snaps.resize_with(i + 1, Files::default);
                    }
                    (&mut snaps[i], inner.to_string())
                }
                _ => {
                    b.diag(
                        Level::Warning,
                        Some(&rel),
                        "ignored: not a valid snapshot number",
                    );
                    continue;
                }
            },
            None => (&mut top, rel.clone()),
        };
        if let Some(dir) = inner.strip_suffix(&format!("/{}", pack::PACK_NAME)) {
            if let Some(e) = files.insert_pack(dir, data) {
                b.diag(
                    Level::Error,
                    Some(&rel),
                    format!("damaged pack: {e}; the files before the damage are used"),
                );
            }
        } else {
            files.insert(&inner, data);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths() {
        assert_eq!(safe_path("a/./b//c").as_deref(), Some("a/b/c"));
        assert_eq!(safe_path("/etc/passwd"), None);
        assert_eq!(safe_path("a/../../x"), None);
        assert_eq!(safe_path(""), None);
    }
}
