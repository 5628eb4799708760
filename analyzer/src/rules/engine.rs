//! Evaluates a rule set over one model: the node rules once, the cgroup rules over every cgroup
//! of the memory hierarchy in parallel. Output order is deterministic: node findings first,
//! then cgroups in model order, each cgroup's findings ranked by the bytes they explain.

use std::sync::Arc;

use minijinja::value::ValueKind;
use minijinja::{Expression, Value};
use rayon::prelude::*;
use serde::Serialize;

use super::native::{self, Paths};
use super::{evidence_text, facts, Rule, RuleSet, Scope, Severity};
use crate::model::{K8s, Model};
use crate::reader::{Diagnostic, Level};

/// What a rule found on one subject. The texts a rule or a subject shares between its findings
/// are shared (`Arc`): a 5,000-cgroup node has thousands of findings, and building and dropping
/// their copies was a quarter of the rules' time.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: Arc<str>,
    pub title: Arc<str>,
    pub cause: Arc<str>,
    pub severity: Severity,
    pub scope: Scope,
    /// `node`, or the cgroup's display name (Kubernetes identity where known).
    pub subject: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<Arc<str>>,
    /// Index into the model's `cgroups`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<Arc<K8s>>,
    /// Bytes this cause accounts for, when it is one.
    pub bytes: Option<u64>,
    /// 1 for the cause explaining the most bytes in its cgroup (the headline), 2 for the next...
    pub rank: usize,
    pub evidence: Vec<Evidence>,
    pub summary: Arc<str>,
    pub explain: Arc<str>,
    pub fix: Arc<str>,
    pub refs: Arc<[String]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub name: Arc<str>,
    pub value: serde_json::Value,
    /// For people: bytes in binary units, ratios as percentages.
    pub text: String,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    /// Rules that failed at run time, naming the rule and the subject; the others still ran.
    pub diagnostics: Vec<Diagnostic>,
}

/// The rule set compiled for evaluation: the rules, and the variable paths their compiled
/// expressions read. A batch compiles it once for all its bundles ([`compile`]).
pub struct Catalogue<'a> {
    pub(crate) rules: Vec<Compiled<'a>>,
    pub(crate) paths: Paths,
}

/// Rules ready to evaluate over a model: a rule set, compiled for each evaluation, or a
/// catalogue compiled once.
pub trait Evaluate {
    fn evaluate(&self, model: &Arc<Model>) -> Outcome;
}

impl Evaluate for RuleSet {
    fn evaluate(&self, model: &Arc<Model>) -> Outcome {
        evaluate(self, model)
    }
}

impl Evaluate for Catalogue<'_> {
    fn evaluate(&self, model: &Arc<Model>) -> Outcome {
        evaluate_compiled(self, model)
    }
}

/// A rule with its expressions compiled against the set's environment.
pub(crate) struct Compiled<'a> {
    pub rule: &'a Rule,
    /// What the rule's findings share.
    pub shared: RuleTexts,
    pub when: Both<'a>,
    pub bytes: Option<Both<'a>>,
    pub evidence: Vec<(Arc<str>, Both<'a>)>,
    /// Whether findings get their texts for people: evidence texts, `explain` and `fix`
    /// ([`Catalogue::without_texts_for_people`]).
    pub texts_for_people: bool,
    /// `summary`, `explain`, `fix`.
    pub texts: [Text<'a>; 3],
}

/// A rule's id, title, cause and refs, shared by its findings.
pub(crate) struct RuleTexts {
    id: Arc<str>,
    title: Arc<str>,
    cause: Arc<str>,
    refs: Arc<[String]>,
    /// The empty text of findings without texts for people.
    empty: Arc<str>,
}

/// A text field: its trimmed text when it has no template syntax (most `explain` and `fix`
/// texts), else a template for minijinja, compiled to Rust where it can be.
pub(crate) struct Text<'a> {
    field: &'static str,
    template: minijinja::Template<'a, 'a>,
    fixed: Option<Arc<str>>,
    native: Option<Vec<native::Piece>>,
}

impl Text<'_> {
    fn render(&self, scope: &mut native::Scope<'_>) -> Result<Arc<str>, RuleFailure> {
        if let Some(t) = &self.fixed {
            return Ok(t.clone());
        }
        if let Some(text) = self.native.as_ref().and_then(|p| scope.rendered(p)) {
            return Ok(text);
        }
        self.template
            .render(scope.ctx())
            .map(|s| s.trim().into())
            .map_err(|e| fail(self.field, e))
    }

    /// Compares the compiled rendering with minijinja's on one subject.
    fn check(&self, scope: &mut native::Scope<'_>, what: &str, out: &mut Agreement) {
        let Some(pieces) = &self.native else {
            if self.fixed.is_none() {
                out.not_compiled.push(what.to_string());
            }
            return;
        };
        let jinja = self
            .template
            .render(scope.ctx())
            .map(|s| s.trim().to_string());
        let mut text = String::new();
        if scope.render(pieces, &mut text).is_none() {
            out.deferred.push(what.to_string());
            return;
        }
        out.compared += 1;
        match jinja {
            Ok(j) if j == text.trim() => {}
            j => out
                .mismatches
                .push(format!("{what}: compiled {text:?}, minijinja {j:?}")),
        }
    }
}

/// An expression for minijinja, and compiled to Rust where it can be (see `native`).
pub(crate) struct Both<'a> {
    jinja: Expression<'a, 'a>,
    native: Option<native::Expr>,
}

impl Both<'_> {
    fn eval(&self, scope: &mut native::Scope<'_>) -> Result<Value, minijinja::Error> {
        match self.native.as_ref().and_then(|n| scope.eval(n)) {
            Some(v) => Ok(scope.value(v)),
            None => self.jinja.eval(scope.ctx()),
        }
    }

    /// Compares the compiled evaluation with minijinja's on one subject.
    fn check(&self, scope: &mut native::Scope<'_>, what: &str, out: &mut Agreement) {
        let jinja = self.jinja.eval(scope.ctx());
        let Some(n) = &self.native else {
            out.not_compiled.push(what.to_string());
            return;
        };
        let Some(v) = scope.eval(n) else {
            out.deferred.push(what.to_string());
            return;
        };
        let v = scope.value(v);
        out.compared += 1;
        match jinja {
            Ok(j) if (j.kind(), j.to_string()) == (v.kind(), v.to_string()) => {}
            j => out
                .mismatches
                .push(format!("{what}: compiled {v:?}, minijinja {j:?}")),
        }
    }
}

/// How the compiled expressions compared with minijinja's (`check_native`).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Agreement {
    /// Evaluations both made.
    pub compared: usize,
    /// Expressions (`rule field on subject`) the compiled form left to minijinja at run time.
    pub deferred: Vec<String>,
    /// Expressions that are not compiled at all.
    pub not_compiled: Vec<String>,
    pub mismatches: Vec<String>,
}

/// Checks every expression of every rule against minijinja on one subject.
pub(crate) fn check_rules(
    rules: &[Compiled<'_>],
    scope: &mut native::Scope<'_>,
    subject: &str,
    scope_kind: Scope,
    out: &mut Agreement,
) {
    for c in rules.iter().filter(|c| c.rule.spec.scope == scope_kind) {
        let id = &c.rule.spec.id;
        c.when.check(scope, &format!("{id} when on {subject}"), out);
        // The short way to a false condition agrees with the general evaluator.
        if let Some(n) = &c.when.native {
            let (short, full) = (
                scope.is_false(n),
                matches!(scope.eval(n), Some(native::V::Bool(false))),
            );
            if short != full {
                let m = format!("{id} when on {subject}: is_false {short}, evaluated {full}");
                out.mismatches.push(m);
            }
        }
        if let Some(b) = &c.bytes {
            b.check(scope, &format!("{id} bytes on {subject}"), out);
        }
        for (name, e) in &c.evidence {
            e.check(scope, &format!("{id} evidence.{name} on {subject}"), out);
        }
        for t in &c.texts {
            t.check(scope, &format!("{id} {} on {subject}", t.field), out);
        }
    }
}

/// The indices of the cgroups the cgroup rules run on.
fn subjects(model: &Model) -> Vec<usize> {
    (0..model.cgroups.len())
        .filter(|&i| is_subject(model, &model.cgroups[i]))
        .collect()
}

/// The cgroups cgroup rules look at: those of the memory hierarchy with statistics.
fn is_subject(model: &Model, c: &crate::model::Cgroup) -> bool {
    c.hierarchy_is_memory(model.bundle.cgroup_mode) && c.bridge.is_some()
}

/// For tests: evaluates every expression of the set both ways on the node and every cgroup
/// of a model, as the engine would see them.
#[doc(hidden)]
pub fn check_native(set: &RuleSet, model: &Arc<Model>) -> Agreement {
    let cat = compile(set);
    let node_value = Value::from_serialize(facts::node_facts(model));
    let mut out = Agreement::default();
    let mut scope = native::Scope::new(&cat.paths, facts::node_context(&node_value));
    check_rules(&cat.rules, &mut scope, "node", Scope::Node, &mut out);
    for (i, c) in model.cgroups.iter().enumerate() {
        if is_subject(model, c) {
            scope.reset(model, &node_value, i);
            check_rules(&cat.rules, &mut scope, &c.path, Scope::Cgroup, &mut out);
        }
    }
    out
}

/// Compiles every rule's expressions and texts (minijinja's and the native ones).
pub fn compile<'a>(set: &'a RuleSet) -> Catalogue<'a> {
    let env = set.env();
    let mut paths = Paths::new(env);
    let mut rules = Vec::with_capacity(set.rules().len());
    for rule in set.rules() {
        let spec = &rule.spec;
        let mut both = |s: &'a toml::Spanned<String>| Both {
            // Every expression compiled when the set loaded; this cannot fail.
            jinja: env
                .compile_expression(s.get_ref())
                .expect("checked at load"),
            native: paths.compile(s.get_ref()),
        };
        let when = both(&spec.when);
        let bytes = spec.bytes.as_ref().map(&mut both);
        let evidence = spec
            .evidence
            .iter()
            .map(|(k, e)| (Arc::from(k.as_str()), both(e)))
            .collect();
        let texts = super::templates(spec).map(|(field, source)| {
            let source = source.get_ref().as_str();
            let template = env
                .get_template(&rule.template(field))
                .expect("added when the set loaded");
            let plain = !["{{", "{%", "{#"].iter().any(|t| source.contains(t));
            Text {
                field,
                template,
                fixed: plain.then(|| source.trim().into()),
                native: (!plain).then(|| paths.compile_template(source)).flatten(),
            }
        });
        rules.push(Compiled {
            rule,
            shared: RuleTexts {
                id: spec.id.as_str().into(),
                title: spec.title.as_str().into(),
                cause: spec.cause.as_str().into(),
                refs: spec.refs.as_slice().into(),
                empty: "".into(),
            },
            when,
            bytes,
            evidence,
            texts_for_people: true,
            texts,
        });
    }
    Catalogue { rules, paths }
}

impl Catalogue<'_> {
    /// The same rules, their findings without the texts only people read (empty): evidence
    /// texts, `explain` and `fix`. For a batch without pages, whose JSON lines carry the
    /// evidence values and the summary; formatting and rendering the rest was ~1.5% of such a
    /// batch's instructions.
    pub fn without_texts_for_people(mut self) -> Self {
        for c in &mut self.rules {
            c.texts_for_people = false;
        }
        self
    }
}

/// The subject a finding is about, and what its findings share, made for its first finding.
struct Subject<'a> {
    cgroup: Option<(usize, &'a crate::model::Cgroup)>,
    shared: std::cell::OnceCell<SubjectTexts>,
}

struct SubjectTexts {
    name: Arc<str>,
    path: Option<Arc<str>>,
    k8s: Option<Arc<K8s>>,
}

impl<'a> Subject<'a> {
    fn new(cgroup: Option<(usize, &'a crate::model::Cgroup)>) -> Subject<'a> {
        Subject {
            cgroup,
            shared: std::cell::OnceCell::new(),
        }
    }

    fn texts(&self) -> &SubjectTexts {
        self.shared.get_or_init(|| match self.cgroup {
            None => SubjectTexts {
                name: "node".into(),
                path: None,
                k8s: None,
            },
            Some((_, c)) => SubjectTexts {
                name: c.display_name().into(),
                path: Some(Arc::clone(&c.path)),
                k8s: c.k8s.clone().map(Arc::new),
            },
        })
    }

    /// `node`, or the cgroup's display name.
    fn name(&self) -> Arc<str> {
        self.texts().name.clone()
    }
}

/// What evaluating one rule on one subject gave.
pub(crate) enum Verdict {
    Quiet,
    Fired(Box<Fired>),
}

pub(crate) struct Fired {
    pub bytes: Option<u64>,
    pub evidence: Vec<Evidence>,
    pub summary: Arc<str>,
    pub explain: Arc<str>,
    pub fix: Arc<str>,
}

/// Which part of a rule failed, and why.
pub(crate) struct RuleFailure {
    pub field: String,
    pub message: String,
}

pub(crate) fn run_rule(
    c: &Compiled<'_>,
    scope: &mut native::Scope<'_>,
) -> Result<Verdict, RuleFailure> {
    // The compiled condition's boolean as is; anything else through the checks below.
    let fires = match c.when.native.as_ref().and_then(|n| scope.eval(n)) {
        Some(native::V::Bool(b)) => b,
        Some(v) => is_true(&scope.value(v))?,
        None => is_true(
            &c.when
                .jinja
                .eval(scope.ctx())
                .map_err(|e| fail("when", e))?,
        )?,
    };
    if fires {
        fire(c, scope)
    } else {
        Ok(Verdict::Quiet)
    }
}

fn fail(field: &str, e: minijinja::Error) -> RuleFailure {
    RuleFailure {
        field: field.to_string(),
        message: error_text(&e),
    }
}

/// A `when` result: it must be a boolean.
fn is_true(w: &Value) -> Result<bool, RuleFailure> {
    if w.kind() != ValueKind::Bool {
        return Err(RuleFailure {
            field: "when".into(),
            message: format!("must be true or false, got {} ({w})", w.kind()),
        });
    }
    Ok(w.is_true())
}

/// Evaluates what a fired rule reports.
fn fire(c: &Compiled<'_>, scope: &mut native::Scope<'_>) -> Result<Verdict, RuleFailure> {
    let bytes = match &c.bytes {
        Some(b) => {
            let v = b.eval(scope).map_err(|e| fail("bytes", e))?;
            to_bytes(&v).map_err(|m| RuleFailure {
                field: "bytes".into(),
                message: m,
            })?
        }
        None => None,
    };
    let mut evidence = Vec::with_capacity(c.evidence.len());
    for (name, e) in &c.evidence {
        let v = e
            .eval(scope)
            .map_err(|x| fail(&format!("evidence.{name}"), x))?;
        evidence.push(Evidence {
            name: name.clone(),
            value: serde_json::to_value(&v).unwrap_or(serde_json::Value::Null),
            text: if c.texts_for_people {
                evidence_text(name, &v)
            } else {
                String::new()
            },
        });
    }
    let [summary, explain, fix] = &c.texts;
    let for_people = |t: &Text<'_>, scope: &mut native::Scope<'_>| match c.texts_for_people {
        true => t.render(scope),
        false => Ok(c.shared.empty.clone()),
    };
    Ok(Verdict::Fired(Box::new(Fired {
        bytes,
        evidence,
        summary: summary.render(scope)?,
        explain: for_people(explain, scope)?,
        fix: for_people(fix, scope)?,
    })))
}

fn to_bytes(v: &Value) -> Result<Option<u64>, String> {
    if v.is_none() {
        return Ok(None);
    }
    if let Some(i) = v.as_i64() {
        return Ok(Some(i.max(0) as u64));
    }
    match f64::try_from(v.clone()) {
        Ok(f) if f.is_finite() => Ok(Some(f.max(0.0) as u64)),
        _ => Err(format!("must be a number of bytes, got {} ({v})", v.kind())),
    }
}

/// minijinja's error with its detail, on one line.
fn error_text(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    if let Some(d) = e.detail() {
        if !s.contains(d) {
            s = format!("{s}: {d}");
        }
    }
    s
}

/// Evaluates every rule over the model.
pub fn evaluate(set: &RuleSet, model: &Arc<Model>) -> Outcome {
    evaluate_compiled(&compile(set), model)
}

/// Evaluates every rule of a compiled catalogue over the model.
pub fn evaluate_compiled(cat: &Catalogue<'_>, model: &Arc<Model>) -> Outcome {
    let node_value = Value::from_serialize(facts::node_facts(model));
    let (node_rules, cg_rules): (Vec<&Compiled>, Vec<&Compiled>) = cat
        .rules
        .iter()
        .partition(|c| c.rule.spec.scope == Scope::Node);
    let (holding_rules, cg_rules): (Vec<&Compiled>, Vec<&Compiled>) = cg_rules
        .into_iter()
        .partition(|c| c.rule.spec.subjects == super::Subjects::Holding);

    let node_ctx = facts::node_context(&node_value);
    let node_subject = Subject::new(None);
    let mut out = Outcome::default();
    let mut scope = native::Scope::new(&cat.paths, node_ctx);
    run_all(&node_rules, &mut scope, &node_subject, model, &mut out);
    rank(&mut out.findings);

    // Cgroups in batches: within a batch the rules run rule by rule, each cgroup keeping its
    // own scope (measured 7-9% faster than cgroup by cgroup, and far fewer rayon tasks).
    let subjects = subjects(model);
    let mut uniform = Uniform::default();
    let (mut cg_rules, mut holding_rules) = (cg_rules, holding_rules);
    for rules in [&mut cg_rules, &mut holding_rules] {
        rules.retain(|c| !uniform.never_fires(c, &cat.paths, model, &subjects, &node_value));
    }
    let per_batch: Vec<Outcome> = subjects
        .par_chunks(BATCH)
        .map_init(Vec::new, |scopes: &mut Vec<native::Scope<'_>>, batch| {
            if scopes.len() < batch.len() {
                scopes.resize_with(batch.len(), || {
                    native::Scope::new(&cat.paths, Value::UNDEFINED)
                });
            }
            let subjects: Vec<Subject<'_>> = batch
                .iter()
                .map(|&i| Subject::new(Some((i, &model.cgroups[i]))))
                .collect();
            let mut outs: Vec<Outcome> = batch.iter().map(|_| Outcome::default()).collect();
            for (scope, &i) in scopes.iter_mut().zip(batch) {
                scope.reset(model, &node_value, i);
            }
            for c in &cg_rules {
                for k in 0..batch.len() {
                    if !quiet(c, &mut scopes[k]) {
                        run_one(c, &mut scopes[k], &subjects[k], model, &mut outs[k]);
                    }
                }
            }
            // Asked once per cgroup, not once per rule.
            let mut holds = [false; BATCH];
            for (h, &i) in holds.iter_mut().zip(batch) {
                *h = model.cgroups[i].holds_own();
            }
            for c in &holding_rules {
                for k in 0..batch.len() {
                    if holds[k] && !quiet(c, &mut scopes[k]) {
                        run_one(c, &mut scopes[k], &subjects[k], model, &mut outs[k]);
                    }
                }
            }
            let mut o = Outcome::default();
            for mut x in outs {
                rank(&mut x.findings);
                o.findings.append(&mut x.findings);
                o.diagnostics.append(&mut x.diagnostics);
            }
            o
        })
        .collect();
    for mut o in per_batch {
        out.findings.append(&mut o.findings);
        out.diagnostics.append(&mut o.diagnostics);
    }
    out
}

/// The values paths have on every subject of a model, found once for all rules (`None`: not
/// one value).
#[derive(Default)]
struct Uniform(std::collections::HashMap<usize, Option<native::V>>);

impl Uniform {
    /// Whether a cgroup rule's condition is `false` on every one of `subjects` because its
    /// first conjunct is: it reads nothing that differs between them (a node setting, a fact
    /// no cgroup of this node has, the version of a node with one), so it is evaluated once,
    /// as every subject's scope would. Such a rule then costs a pass over the cgroups for
    /// each fact it reads instead of a condition per cgroup: the synthetic 5,000-cgroup v1
    /// node (one snapshot, no swap, no OOM kill, no mlock) skips 16 of its 32 cgroup rules
    /// this way. Exactly `false` only: any other value is the rule's to report (a condition
    /// that is not a boolean is an error).
    fn never_fires(
        &mut self,
        c: &Compiled<'_>,
        paths: &Paths,
        model: &Model,
        subjects: &[usize],
        node: &Value,
    ) -> bool {
        let first = match c.when.native.as_ref() {
            Some(native::Expr::And(all)) => all.first(),
            e => e,
        };
        let Some(first) = first else { return false };
        let mut read = Vec::new();
        first.paths(&mut read);
        let mut scope = native::Scope::new(paths, facts::node_context(node));
        for i in read.into_iter().filter(|&i| paths.varies(i)) {
            let v = *self
                .0
                .entry(i)
                .or_insert_with(|| paths.uniform(i, model, subjects));
            match v {
                Some(v) => scope.pin(i, v),
                None => return false,
            }
        }
        matches!(scope.eval(first), Some(native::V::Bool(false)))
    }
}

/// Whether a rule's compiled condition is `false` on the scope's subject, as it is for most
/// rules on most cgroups: then nothing else needs evaluating (or its frames setting up).
/// Anything else, a value that is not a boolean included, is [`run_rule`]'s to judge.
fn quiet(c: &Compiled<'_>, scope: &mut native::Scope<'_>) -> bool {
    c.when.native.as_ref().is_some_and(|n| scope.is_false(n))
}

/// Cgroups evaluated together, rule by rule.
const BATCH: usize = 64;

/// Runs rules on one subject, adding what they find (or how they failed) to `out`.
fn run_all(
    rules: &[&Compiled<'_>],
    scope: &mut native::Scope<'_>,
    subject: &Subject<'_>,
    model: &Model,
    out: &mut Outcome,
) {
    for c in rules {
        run_one(c, scope, subject, model, out);
    }
}

/// Runs one rule on one subject, adding what it finds (or how it failed) to `out`.
fn run_one(
    c: &Compiled<'_>,
    scope: &mut native::Scope<'_>,
    subject: &Subject<'_>,
    model: &Model,
    out: &mut Outcome,
) {
    match run_rule(c, scope) {
        Ok(Verdict::Quiet) => {}
        Ok(Verdict::Fired(f)) => {
            let spec = &c.rule.spec;
            out.findings.push(Finding {
                rule: c.shared.id.clone(),
                title: c.shared.title.clone(),
                cause: c.shared.cause.clone(),
                severity: spec.severity,
                scope: spec.scope,
                subject: subject.name(),
                cgroup_path: subject.texts().path.clone(),
                cgroup_index: subject.cgroup.map(|(i, _)| i),
                k8s: subject.texts().k8s.clone(),
                bytes: f.bytes,
                rank: 0,
                evidence: f.evidence,
                summary: f.summary,
                explain: f.explain,
                fix: f.fix,
                refs: c.shared.refs.clone(),
            });
        }
        Err(e) => out.diagnostics.push(Diagnostic {
            level: Level::Warning,
            bundle: model.bundle.source.clone(),
            file: None,
            message: format!(
                "rule {} ({}), field {}, on {}: {}",
                c.rule.spec.id,
                c.rule.file,
                e.field,
                subject.name(),
                e.message
            ),
        }),
    }
}

/// Orders one subject's findings: most bytes first (the headline), then severity, then id.
fn rank(f: &mut [Finding]) {
    f.sort_by(|a, b| {
        b.bytes
            .unwrap_or(0)
            .cmp(&a.bytes.unwrap_or(0))
            .then(b.severity.cmp(&a.severity))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    for (i, x) in f.iter_mut().enumerate() {
        x.rank = i + 1;
    }
}

/// Findings most severe first, then the largest, then in model order (node first).
pub fn by_importance(findings: &[Finding]) -> Vec<&Finding> {
    let mut v: Vec<&Finding> = findings.iter().collect();
    v.sort_by(|x, y| {
        y.severity
            .cmp(&x.severity)
            .then(y.bytes.unwrap_or(0).cmp(&x.bytes.unwrap_or(0)))
            .then(x.cgroup_index.cmp(&y.cgroup_index))
    });
    v
}

/// Findings at or above a severity.
pub fn at_least(findings: &[Finding], min: Severity) -> impl Iterator<Item = &Finding> {
    findings.iter().filter(move |f| f.severity >= min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use memgap_collector::synth::{self, Spec, Version};

    /// A one-snapshot node of version `v` from the collector's synthetic tree.
    fn node_of(v: Version) -> Arc<Model> {
        let d = tempfile::tempdir().unwrap();
        synth::generate(d.path(), &Spec::new(v, 40, 20)).unwrap();
        let cfg = memgap_collector::Config {
            root: d.path().to_path_buf(),
            kmsg: None,
            jobs: 1,
            ..Default::default()
        };
        let gz = memgap_collector::collect(&cfg, Vec::new()).unwrap().1;
        let b = crate::reader::read_from(&gz[..], "t.tar.gz", &Default::default()).unwrap();
        Arc::new(crate::model::build(&b))
    }

    /// A cgroup rule, with an example that fires and one that does not (`fire` and `miss`:
    /// the example's `cg = ...` and `node = ...` lines).
    fn rule(id: &str, when: &str, fire: &str, miss: &str) -> String {
        format!(
            "[[rule]]\nid = \"{id}\"\ntitle = \"t\"\ncause = \"test\"\nseverity = \"info\"\n\
             scope = \"cgroup\"\nthresholds = \"test\"\nwhen = \"{when}\"\nsummary = \"s\"\n\
             explain = \"e\"\nfix = \"f\"\nrefs = [\"x\"]\n\
             [[rule.example]]\nname = \"fires\"\nfire = true\n{fire}\n\
             [[rule.example]]\nname = \"near miss\"\nfire = false\n{miss}\n"
        )
    }

    /// Only a first conjunct that is exactly `false` on every cgroup, from facts with one value
    /// on all of them, skips a rule; what the skipped rules would have given is nothing, and
    /// the others give what they give.
    #[test]
    fn a_rule_is_skipped_only_when_its_first_conjunct_is_false_everywhere() {
        let (v1, v2) = (
            "cg = { version = 1, usage_bytes = 1 }",
            "cg = { version = 2, usage_bytes = 1 }",
        );
        let (grows, shrinks) = (
            "cg = { growth = { anon = 1 }, usage_bytes = 1 }",
            "cg = { growth = { anon = 1 }, usage_bytes = -1 }",
        );
        let cases = [
            (
                "other-version",
                "cg.version == 2 and cg.usage_bytes >= 0",
                v2,
                v1,
                true,
            ),
            (
                "no-growth",
                "cg.growth is not none and cg.usage_bytes >= 0",
                grows,
                shrinks,
                true,
            ),
            (
                "node-setting",
                "node.thp_enabled == 'no such mode' and cg.usage_bytes >= 0",
                "node = { thp_enabled = 'no such mode' }\ncg = { usage_bytes = 1 }",
                "node = { thp_enabled = 'always' }\ncg = { usage_bytes = 1 }",
                true,
            ),
            ("alone", "cg.version == 2", v2, v1, true),
            (
                "this-version",
                "cg.version == 1 and cg.usage_bytes >= 0",
                v1,
                v2,
                false,
            ),
            // One value everywhere, but none, not false: every cgroup's error to report.
            (
                "none-not-false",
                "cg.growth and cg.usage_bytes >= 0",
                grows,
                shrinks,
                false,
            ),
            // Not one value: evaluated per cgroup.
            (
                "varies",
                "cg.usage_bytes < 0 and cg.version == 1",
                "cg = { version = 1, usage_bytes = -1 }",
                v1,
                false,
            ),
            (
                "procs-vary",
                "cg.procs.count == 12345 and cg.usage_bytes >= 0",
                "cg = { procs = { count = 12345 }, usage_bytes = 1 }",
                "cg = { procs = { count = 1 }, usage_bytes = 1 }",
                false,
            ),
            (
                "parts-vary",
                "cg.part.anon == 1 and cg.usage_bytes >= 0",
                "cg = { part = { anon = 1 }, usage_bytes = 1 }",
                "cg = { part = { anon = 2 }, usage_bytes = 1 }",
                false,
            ),
            (
                "undefined",
                "cg.stat.no_such_key > 0",
                "cg = { stat = { no_such_key = 1 } }",
                "cg = { stat = { no_such_key = 0 } }",
                false,
            ),
        ];
        let text: String = cases
            .iter()
            .map(|(id, when, fire, miss, _)| rule(id, when, fire, miss))
            .collect();
        let set = RuleSet::load([("t.toml".to_string(), text)]).unwrap();
        let cat = compile(&set);
        let model = node_of(Version::V1);
        let subjects = subjects(&model);
        assert!(subjects.len() > 20, "{}", subjects.len());
        let node = Value::from_serialize(facts::node_facts(&model));
        let mut uniform = Uniform::default();
        for (c, (id, .., skipped)) in cat.rules.iter().zip(&cases) {
            assert_eq!(&*c.rule.spec.id, *id);
            let never = uniform.never_fires(c, &cat.paths, &model, &subjects, &node);
            assert_eq!(never, *skipped, "{id}");
        }
        let out = evaluate_compiled(&cat, &model);
        let count = |id: &str| out.findings.iter().filter(|f| &*f.rule == id).count();
        let errors = |id: &str| {
            let id = format!("rule {id} ");
            out.diagnostics
                .iter()
                .filter(|d| d.message.contains(&id))
                .count()
        };
        for (id, .., skipped) in cases {
            if skipped {
                assert_eq!((count(id), errors(id)), (0, 0), "{id}");
            }
        }
        assert_eq!(count("this-version"), subjects.len());
        assert_eq!(errors("none-not-false"), subjects.len());
        assert_eq!(errors("undefined"), subjects.len());
        assert_eq!(count("varies") + errors("varies"), 0);
    }

    /// Every built-in rule skipped on a synthetic node (of each version) is one whose
    /// condition each cgroup's own scope evaluates to `false`; and some are skipped.
    #[test]
    fn a_skipped_builtin_rule_is_false_on_every_cgroup() {
        let set = RuleSet::builtin().unwrap();
        let cat = compile(&set);
        for v in [Version::V1, Version::V2] {
            let model = node_of(v);
            let subjects = subjects(&model);
            let node = Value::from_serialize(facts::node_facts(&model));
            let rules: Vec<&Compiled> = cat
                .rules
                .iter()
                .filter(|c| c.rule.spec.scope == Scope::Cgroup)
                .collect();
            let mut uniform = Uniform::default();
            let mut skipped = 0;
            for c in rules {
                if !uniform.never_fires(c, &cat.paths, &model, &subjects, &node) {
                    continue;
                }
                skipped += 1;
                let when = c.when.native.as_ref().unwrap();
                for &i in &subjects {
                    let mut scope = native::Scope::new(&cat.paths, Value::UNDEFINED);
                    scope.reset(&model, &node, i);
                    let v = scope.eval(when);
                    assert!(
                        matches!(v, Some(native::V::Bool(false))),
                        "{v:?}: {} on {}",
                        c.rule.spec.id,
                        model.cgroups[i].path
                    );
                }
            }
            assert!(skipped >= 3, "{v:?}: {skipped}");
        }
    }
}
