//! Rules as data: TOML files in `rules/` (embedded at build time, extended or overridden with
//! `--rules DIR`), each rule a set of minijinja expressions and templates over the facts of a
//! cgroup or of the node (`facts`). Everything is compiled and checked against the facts'
//! vocabulary when the rules load, so a typo is an error with its file, rule, field and
//! position, not a finding that silently never fires. `docs/rules.md` is the authors' guide.

pub mod engine;
pub mod examples;
pub mod facts;
mod native;

use std::path::Path;

use indexmap::IndexMap;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use engine::{
    check_native, compile, evaluate, evaluate_compiled, Agreement, Catalogue, Evaluate, Evidence,
    Finding, Outcome,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(format!("unknown severity {s:?} (info, warning, critical)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Node,
    Cgroup,
}

/// Which cgroups a cgroup rule looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subjects {
    /// Every cgroup of the memory hierarchy with statistics.
    #[default]
    All,
    /// Cgroups that hold memory themselves (`cg.holds_own`): leaves, and parents whose own
    /// charges are a tenth of their usage or more. A parent's statistics sum its children's,
    /// so causes are named where the memory is held.
    Holding,
}

/// One rule as written in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub scope: Scope,
    #[serde(default)]
    pub subjects: Subjects,
    /// The cause this rule diagnoses, as a short tag shared by related rules (`page-cache`).
    pub cause: String,
    /// Boolean expression: does the rule fire?
    pub when: Spanned<String>,
    /// Expression: how many bytes this cause accounts for (ranks the causes of a cgroup).
    #[serde(default)]
    pub bytes: Option<Spanned<String>>,
    /// Named expressions shown with a finding. A name ending in `_bytes` is shown in binary
    /// units, one ending in `_ratio` as a percentage.
    #[serde(default)]
    pub evidence: IndexMap<String, Spanned<String>>,
    /// Templates, in plain language.
    pub summary: Spanned<String>,
    pub explain: Spanned<String>,
    pub fix: Spanned<String>,
    /// Why the thresholds in `when` are what they are.
    pub thresholds: Option<String>,
    #[serde(default)]
    pub refs: Vec<String>,
    #[serde(default, rename = "example")]
    pub examples: Vec<Example>,
}

/// A test case inside a rule file: a small context and whether the rule must fire.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Example {
    pub name: String,
    pub fire: bool,
    /// The bytes the rule must report when it fires, if given.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Dotted names that are `none` (TOML has no null): `none = ["cg.limit_bytes"]`.
    #[serde(default)]
    pub none: Vec<String>,
    /// The variables (`cg`, `node`), as the rule sees them.
    #[serde(flatten)]
    pub context: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

/// A loaded rule and where it came from.
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: RuleSpec,
    /// File name (embedded) or path (`--rules DIR`).
    pub file: String,
    /// The file's text, for error positions.
    source: std::sync::Arc<str>,
}

impl Rule {
    /// Names of the rule's templates in the environment.
    fn template(&self, field: &str) -> String {
        format!("{}#{field}", self.spec.id)
    }
}

/// A rule file problem: which file, which rule and field, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {rule}{field}: {message}")]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// `rule ID` or empty for whole-file problems.
    pub rule: String,
    /// `, field NAME` or empty.
    pub field: String,
    pub message: String,
}

/// The compiled catalogue.
pub struct RuleSet {
    env: Environment<'static>,
    rules: Vec<Rule>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// The unit constants of the rule language. Constants: an example's context may not redefine
/// them (only `cg` and `node`), so compiled expressions fold `64 * MiB` once.
pub(crate) const UNITS: [(&str, u64); 3] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)];

/// The bytes of a unit constant, by name.
pub(crate) fn unit(name: &str) -> Option<u64> {
    UNITS.iter().find(|(u, _)| *u == name).map(|(_, b)| *b)
}

/// The variables an example's context may set.
const EXAMPLE_VARIABLES: [&str; 2] = ["cg", "node"];

/// The environment rules are evaluated in: strict undefined variables, the unit constants and
/// the number filters.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    for (name, bytes) in UNITS {
        env.add_global(name, bytes);
    }
    register_filters(&mut env);
    env
}

/// Number filters shared by rules and report templates, by name. Rule texts compiled to Rust
/// (`native`) call the same functions.
pub const FILTERS: [(&str, Filter); 4] = [
    ("bytes", filter_bytes),
    ("pct", filter_pct),
    ("duration", filter_duration),
    ("num", filter_num),
];

/// A number filter: a value to its text.
pub type Filter = fn(Value) -> String;

/// Registers `FILTERS`.
pub fn register_filters(env: &mut Environment<'_>) {
    for (name, f) in FILTERS {
        env.add_filter(name, f);
    }
}

fn filter_bytes(v: Value) -> String {
    match v.as_i64() {
        Some(n) => crate::format::signed_bytes(n),
        None => match f64::try_from(v.clone()) {
            Ok(f) if f.is_finite() => crate::format::signed_bytes(f as i64),
            _ => v.to_string(),
        },
    }
}

fn filter_pct(v: Value) -> String {
    match f64::try_from(v.clone()) {
        Ok(f) => crate::format::pct(f),
        Err(_) => v.to_string(),
    }
}

fn filter_duration(v: Value) -> String {
    match v.as_i64() {
        Some(s) => crate::format::duration(s.max(0) as u64),
        None => v.to_string(),
    }
}

fn filter_num(v: Value) -> String {
    match v.as_i64() {
        Some(n) => crate::format::thousands(n),
        None => v.to_string(),
    }
}

impl RuleSet {
    /// The catalogue embedded in the binary.
    pub fn builtin() -> Result<RuleSet, Vec<RuleError>> {
        Self::load(
            crate::embedded::RULES
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string())),
        )
    }

    /// The embedded catalogue, then every `*.toml` in `dir`: a rule with an embedded rule's id
    /// replaces it, others are added.
    pub fn with_dir(dir: &Path) -> Result<RuleSet, Vec<RuleError>> {
        let mut files: Vec<(String, String)> = crate::embedded::RULES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        let mut errors = Vec::new();
        let whole = |file: String, message: String| RuleError {
            file,
            line: 0,
            column: 0,
            rule: String::new(),
            field: String::new(),
            message,
        };
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                let mut paths: Vec<_> = rd
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                    .collect();
                paths.sort();
                for p in paths {
                    match std::fs::read_to_string(&p) {
                        Ok(t) => files.push((p.display().to_string(), t)),
                        Err(e) => errors.push(whole(p.display().to_string(), e.to_string())),
                    }
                }
            }
            Err(e) => errors.push(whole(dir.display().to_string(), e.to_string())),
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Self::load(files)
    }

    /// Parses and compiles rule files given as (name, text); later files override earlier
    /// rules with the same id. Every problem is reported, not only the first.
    pub fn load(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RuleSet, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut rules: Vec<Rule> = Vec::new();
        for (file, text) in files {
            let source: std::sync::Arc<str> = text.into();
            match toml::from_str::<RuleFile>(&source) {
                Ok(f) => {
                    let mut seen = std::collections::HashSet::new();
                    for spec in f.rule {
                        if !seen.insert(spec.id.clone()) {
                            errors.push(RuleError {
                                file: file.clone(),
                                line: 0,
                                column: 0,
                                rule: format!("rule {}", spec.id),
                                field: String::new(),
                                message: "duplicate id in this file".into(),
                            });
                            continue;
                        }
                        let rule = Rule {
                            spec,
                            file: file.clone(),
                            source: source.clone(),
                        };
                        match rules.iter_mut().find(|r| r.spec.id == rule.spec.id) {
                            Some(old) => *old = rule,
                            None => rules.push(rule),
                        }
                    }
                }
                Err(e) => {
                    let (line, column) = e
                        .span()
                        .map(|s| line_col(&source, s.start))
                        .unwrap_or((0, 0));
                    errors.push(RuleError {
                        file: file.clone(),
                        line,
                        column,
                        rule: String::new(),
                        field: String::new(),
                        message: e.message().to_string(),
                    });
                }
            }
        }
        let mut env = environment();
        let node_keys = facts::node_keys();
        for r in &rules {
            check_rule(&mut env, r, &node_keys, &mut errors);
        }
        if errors.is_empty() {
            Ok(RuleSet { env, rules })
        } else {
            Err(errors)
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn env(&self) -> &Environment<'static> {
        &self.env
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The fields of a rule that are expressions, then those that are templates.
fn expressions(s: &RuleSpec) -> Vec<(String, &Spanned<String>)> {
    let mut v = vec![("when".to_string(), &s.when)];
    if let Some(b) = &s.bytes {
        v.push(("bytes".into(), b));
    }
    for (k, e) in &s.evidence {
        v.push((format!("evidence.{k}"), e));
    }
    v
}

fn templates(s: &RuleSpec) -> [(&'static str, &Spanned<String>); 3] {
    [
        ("summary", &s.summary),
        ("explain", &s.explain),
        ("fix", &s.fix),
    ]
}

fn check_rule(
    env: &mut Environment<'static>,
    r: &Rule,
    node_keys: &[String],
    errors: &mut Vec<RuleError>,
) {
    let s = &r.spec;
    let err = |field: &str, span: std::ops::Range<usize>, offset: usize, message: String| {
        let (line, column) = line_col(&r.source, span.start + offset);
        RuleError {
            file: r.file.clone(),
            line,
            column,
            rule: format!("rule {}", s.id),
            field: format!(", field {field}"),
            message,
        }
    };
    if s.id.is_empty()
        || !s
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errors.push(err(
            "id",
            0..0,
            0,
            "ids are lowercase letters, digits and dashes".into(),
        ));
    }
    for (field, e) in expressions(s) {
        match env.compile_expression(e.get_ref()) {
            Ok(expr) => {
                for v in expr.undeclared_variables(true) {
                    if let Some(m) = unknown_name(&v, s.scope, node_keys) {
                        errors.push(err(&field, e.span(), 0, m));
                    }
                }
            }
            Err(x) => errors.push(err(
                &field,
                e.span(),
                x.range().map_or(0, |r| r.start),
                x.to_string(),
            )),
        }
    }
    for (field, t) in templates(s) {
        let name = r.template(field);
        match env.add_template_owned(name.clone(), t.get_ref().clone()) {
            Ok(()) => {
                let tmpl = env.get_template(&name).expect("just added");
                for v in tmpl.undeclared_variables(true) {
                    if let Some(m) = unknown_name(&v, s.scope, node_keys) {
                        errors.push(err(field, t.span(), 0, m));
                    }
                }
            }
            Err(x) => errors.push(err(field, t.span(), 0, x.to_string())),
        }
    }
    if s.scope == Scope::Node && s.subjects != Subjects::All {
        errors.push(err(
            "subjects",
            s.when.span(),
            0,
            "only cgroup rules choose their subjects".into(),
        ));
    }
    for e in &s.examples {
        if let Some(k) = e
            .context
            .keys()
            .find(|k| !EXAMPLE_VARIABLES.contains(&k.as_str()))
        {
            errors.push(err(
                "example",
                s.when.span(),
                0,
                format!(
                    "example {:?} sets {k:?}: an example's context sets only `cg` and `node`",
                    e.name
                ),
            ));
        }
    }
    if s.examples.iter().all(|e| !e.fire) || s.examples.iter().all(|e| e.fire) {
        errors.push(err(
            "example",
            s.when.span(),
            0,
            "needs at least one example that fires and one near miss that does not".into(),
        ));
    }
}

/// Checks a variable path such as `cg.part.shmem` against the facts' vocabulary; free-form
/// maps (`cg.stat.*`, `node.meminfo.*`) and deeper levels are not checked.
fn unknown_name(path: &str, scope: Scope, node_keys: &[String]) -> Option<String> {
    let mut it = path.split('.');
    let root = it.next()?;
    match (root, scope) {
        ("KiB" | "MiB" | "GiB", _) => None,
        ("node", _) => {
            let k = it.next()?;
            if !node_keys.iter().any(|n| n == k) {
                return Some(format!("`node.{k}` is not a node fact (see docs/rules.md)"));
            }
            match (k, it.next()) {
                ("part", Some(p)) if !facts::NODE_PART_KEYS.contains(&p) => Some(format!(
                    "`node.part.{p}` is not a part of the node breakdown"
                )),
                _ => None,
            }
        }
        ("cg", Scope::Cgroup) => check_cgroup_path(root, it),
        _ => Some(format!(
            "`{root}` is not defined for a {} rule (variables: {})",
            match scope {
                Scope::Node => "node",
                Scope::Cgroup => "cgroup",
            },
            match scope {
                Scope::Node => "node",
                Scope::Cgroup => "cg, node",
            }
        )),
    }
}

fn check_cgroup_path<'a>(prefix: &str, mut it: impl Iterator<Item = &'a str>) -> Option<String> {
    let k = it.next()?;
    if !facts::CGROUP_KEYS.contains(&k) {
        return Some(format!(
            "`{prefix}.{k}` is not a cgroup fact (see docs/rules.md)"
        ));
    }
    match k {
        "part" => {
            let p = it.next()?;
            (!facts::PART_KEYS.contains(&p))
                .then(|| format!("`{prefix}.part.{p}` is not a bridge part"))
        }
        "procs" => {
            let p = it.next()?;
            (!facts::PROC_KEYS.contains(&p))
                .then(|| format!("`{prefix}.procs.{p}` is not a process sum"))
        }
        "parent" => check_cgroup_path(&format!("{prefix}.parent"), it),
        _ => None,
    }
}

/// Evidence display: `_bytes` in binary units, `_ratio` as a percentage, the rest as is.
pub fn evidence_text(name: &str, v: &Value) -> String {
    if v.is_none() || v.is_undefined() {
        return "-".into();
    }
    if name.ends_with("_bytes") {
        if let Some(n) = v.as_i64() {
            return crate::format::signed_bytes(n);
        }
        if let Ok(f) = f64::try_from(v.clone()) {
            return crate::format::signed_bytes(f as i64);
        }
    }
    if name.ends_with("_seconds") {
        if let Some(n) = v.as_i64() {
            return crate::format::duration(n.max(0) as u64);
        }
    }
    if name.ends_with("_ratio") {
        if let Ok(f) = f64::try_from(v.clone()) {
            return crate::format::pct(f);
        }
    }
    if let Some(n) = v.as_i64() {
        return crate::format::thousands(n);
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(rule: &str) -> Result<RuleSet, Vec<RuleError>> {
        RuleSet::load([("test.toml".to_string(), rule.to_string())])
    }

    const GOOD: &str = r#"
[[rule]]
id = "big-shmem"
title = "Big shmem"
severity = "warning"
scope = "cgroup"
cause = "shmem"
when = "cg.part.shmem > 10 * MiB"
bytes = "cg.part.shmem"
summary = "{{ cg.part.shmem | bytes }} of shmem"
explain = "x"
fix = "y"
[[rule.example]]
name = "fires"
fire = true
cg = { part = { shmem = 20971520 } }
[[rule.example]]
name = "near miss"
fire = false
cg = { part = { shmem = 1 } }
"#;

    #[test]
    fn a_good_rule_loads() {
        let rs = one(GOOD).unwrap();
        assert_eq!(rs.rules().len(), 1);
    }

    #[test]
    fn an_example_sets_only_cg_and_node() {
        // A unit constant is a constant: compiled expressions fold `10 * MiB`.
        let bad = GOOD.replace(
            "cg = { part = { shmem = 1 } }",
            "cg = { part = { shmem = 1 } }\nMiB = 1",
        );
        let e = &one(&bad).unwrap_err()[0];
        assert_eq!(e.field, ", field example");
        assert!(e.message.contains(r#"sets "MiB""#), "{e}");
    }

    #[test]
    fn errors_name_file_rule_field_and_position() {
        let bad = GOOD.replace("cg.part.shmem > 10", "cg.part.shmem >> 10");
        let e = &one(&bad).unwrap_err()[0];
        assert_eq!(
            (e.file.as_str(), e.rule.as_str(), e.field.as_str()),
            ("test.toml", "rule big-shmem", ", field when")
        );
        assert_eq!(e.line, 8);
        assert!(e.column > 8, "{e}");
    }

    #[test]
    fn unknown_facts_are_load_errors() {
        let bad = GOOD.replace("bytes = \"cg.part.shmem\"", "bytes = \"cg.part.shmme\"");
        let e = one(&bad).unwrap_err();
        assert!(e[0].to_string().contains("cg.part.shmme"), "{}", e[0]);
        let bad = GOOD.replace("{{ cg.part.shmem | bytes }}", "{{ cg.usage | bytes }}");
        let e = one(&bad).unwrap_err();
        assert!(e[0].to_string().contains("field summary"), "{}", e[0]);
        let bad = GOOD.replace("scope = \"cgroup\"", "scope = \"node\"");
        assert!(one(&bad).unwrap_err()[0]
            .message
            .contains("`cg` is not defined"));
    }

    #[test]
    fn toml_errors_have_positions_and_unknown_fields_are_refused() {
        let e = &one("[[rule]]\nid = \n").unwrap_err()[0];
        assert_eq!(e.line, 2);
        let e = &one(&GOOD.replace("cause =", "casue =")).unwrap_err()[0];
        assert!(e.message.contains("casue"), "{e}");
    }

    #[test]
    fn a_rule_needs_both_kinds_of_example() {
        let only_fire = GOOD
            .split("[[rule.example]]\nname = \"near miss\"")
            .next()
            .unwrap();
        let e = &one(only_fire).unwrap_err()[0];
        assert!(e.message.contains("near miss"), "{e}");
    }

    #[test]
    fn later_files_override_by_id() {
        let other = GOOD.replace("title = \"Big shmem\"", "title = \"Mine\"");
        let rs = RuleSet::load([
            ("a.toml".to_string(), GOOD.to_string()),
            ("b.toml".to_string(), other),
        ])
        .unwrap();
        assert_eq!(rs.rules().len(), 1);
        assert_eq!(rs.rules()[0].spec.title, "Mine");
        assert_eq!(rs.rules()[0].file, "b.toml");
    }

    #[test]
    fn evidence_display_follows_the_name() {
        assert_eq!(evidence_text("x_bytes", &Value::from(1536)), "1.50 KiB");
        assert_eq!(evidence_text("x_ratio", &Value::from(0.25)), "25.0%");
        assert_eq!(evidence_text("count", &Value::from(12345)), "12,345");
        assert_eq!(evidence_text("x_bytes", &Value::from(())), "-");
    }
}
