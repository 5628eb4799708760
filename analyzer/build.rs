//! Embeds every `rules/*.toml` and `templates/*` file of the repository, so the binary carries
//! its catalogue and its report templates; `--rules DIR` / `--templates DIR` override them.

use std::fmt::Write as _;
use std::path::Path;

fn embed(dir: &Path, out: &mut String, name: &str) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.is_file()
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    });
    files.sort();
    let _ = writeln!(out, "pub const {name}: &[(&str, &str)] = &[");
    for p in files {
        println!("cargo:rerun-if-changed={}", p.display());
        let _ = writeln!(
            out,
            "    ({:?}, include_str!({:?})),",
            p.file_name().unwrap().to_string_lossy(),
            p.canonicalize().unwrap().display().to_string()
        );
    }
    let _ = writeln!(out, "];");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = String::new();
    embed(&root.join("rules"), &mut out, "RULES");
    embed(&root.join("templates"), &mut out, "TEMPLATES");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(dest, out).unwrap();
}
