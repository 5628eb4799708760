//! The HTML report: one self-contained page per bundle, rendered from the minijinja templates in
//! `templates/` (embedded; `--templates DIR` overrides them file by file). Auto-escaping stays
//! on for `.html` templates: hostnames, cgroup names and command lines come from strangers'
//! bundles. A Content-Security-Policy allows no requests at all and only the page's own script
//! (by hash), so even markup that escaped escaping could neither run nor phone home.

pub mod view;

use std::path::Path;

use base64::Engine as _;
use minijinja::{Environment, UndefinedBehavior, Value};
use sha2::Digest as _;

use crate::Analysis;

/// The script every page carries (sorting and filtering tables); the CSP admits it by hash.
pub const SCRIPT: &str = include_str!("report.js");

/// Compiled report templates.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("templates: {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template {name}: {message}")]
    Compile { name: String, message: String },
}

impl Templates {
    /// The templates embedded in the binary.
    pub fn builtin() -> Result<Templates, TemplateError> {
        Self::load(None)
    }

    /// The embedded templates, each replaced by a file of the same name in `dir`, if any.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut files: Vec<(String, String)> = crate::embedded::TEMPLATES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        if let Some(dir) = dir {
            let read = |p: &Path| {
                std::fs::read_to_string(p).map_err(|source| TemplateError::Read {
                    path: p.display().to_string(),
                    source,
                })
            };
            let rd = std::fs::read_dir(dir).map_err(|source| TemplateError::Read {
                path: dir.display().to_string(),
                source,
            })?;
            for e in rd.filter_map(Result::ok) {
                let p = e.path();
                let Some(name) = p.file_name().map(|n| n.to_string_lossy().to_string()) else {
                    continue;
                };
                if !p.is_file() || name.starts_with('.') {
                    continue;
                }
                let text = read(&p)?;
                match files.iter_mut().find(|(n, _)| *n == name) {
                    Some(f) => f.1 = text,
                    None => files.push((name, text)),
                }
            }
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        crate::rules::register_filters(&mut env);
        env.add_filter("code", code);
        env.add_global("script", Value::from_safe_string(SCRIPT.to_string()));
        env.add_global("csp", csp());
        for (name, text) in files {
            env.add_template_owned(name.clone(), text)
                .map_err(|e| TemplateError::Compile {
                    name,
                    message: describe(&e),
                })?;
        }
        for page in ["report.html", "index.html", "diff.html"] {
            env.get_template(page).map_err(|e| TemplateError::Compile {
                name: page.into(),
                message: describe(&e),
            })?;
        }
        Ok(Templates { env })
    }

    /// Renders one bundle's report page.
    pub fn report(&self, a: &Analysis) -> Result<String, TemplateError> {
        self.render("report.html", &view::build(a))
    }

    /// Renders a page template with its view as `r`.
    pub fn render(
        &self,
        name: &str,
        view: &impl serde::Serialize,
    ) -> Result<String, TemplateError> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(minijinja::context! { r => Value::from_serialize(view) }))
            .map_err(|e| TemplateError::Compile {
                name: name.into(),
                message: describe(&e),
            })
    }
}

/// Rule text for HTML: escaped, with `backquoted` spans set as code.
fn code(text: String) -> Value {
    let escaped = minijinja::HtmlEscape(&text).to_string();
    let mut out = String::with_capacity(escaped.len() + 32);
    for (i, piece) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(piece);
            out.push_str("</code>");
        } else {
            out.push_str(piece);
        }
    }
    // An unpaired backquote leaves a <code> open: close it rather than break the page.
    if escaped.matches('`').count() % 2 == 1 {
        out.push_str("</code>");
    }
    Value::from_safe_string(out)
}

/// The policy: nothing may be fetched; inline styles; only our script, by its hash.
fn csp() -> String {
    let hash = sha2::Sha256::digest(SCRIPT.as_bytes());
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// minijinja's error with the template's name, line and detail.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    if let Some(d) = e.detail() {
        if !s.contains(d) {
            s = format!("{s}: {d}");
        }
    }
    if let (Some(n), Some(l)) = (e.name(), e.line()) {
        s = format!("{n}:{l}: {s}");
    }
    s
}

/// Strips tags and collapses whitespace: the page's text, for tests and snapshots.
pub fn text_of(html: &str) -> String {
    let body = html
        .find("<body")
        .map_or(html, |i| &html[i..])
        .split("<script")
        .next()
        .unwrap_or_default();
    let mut out = String::with_capacity(body.len() / 2);
    let mut in_tag = false;
    for ch in body.chars() {
        match ch {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let decoded = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&middot;", "·")
        .replace("&ldquo;", "“")
        .replace("&rdquo;", "”")
        .replace("&ndash;", "–")
        .replace("&minus;", "−")
        .replace("&amp;", "&");
    let mut lines = Vec::new();
    for l in decoded.lines() {
        let t = l.split_whitespace().collect::<Vec<_>>().join(" ");
        if !t.is_empty() {
            lines.push(t);
        }
    }
    lines.join("\n")
}
