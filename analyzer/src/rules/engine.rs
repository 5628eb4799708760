//! Evaluates a rule set over one model: the node rules once, the cgroup rules over every cgroup
//! of the memory hierarchy in parallel. Output order is deterministic: node findings first,
//! then cgroups in model order, each cgroup's findings ranked by the bytes they explain.

use std::sync::Arc;

use minijinja::value::ValueKind;
use minijinja::{Expression, Value};
use rayon::prelude::*;
use serde::Serialize;

use super::{evidence_text, facts, Rule, RuleSet, Scope, Severity};
use crate::model::{K8s, Model};
use crate::reader::{Diagnostic, Level};

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: String,
    pub title: String,
    pub cause: String,
    pub severity: Severity,
    pub scope: Scope,
    /// `node`, or the cgroup's display name (Kubernetes identity where known).
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    /// Index into the model's `cgroups`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8s>,
    /// Bytes this cause accounts for, when it is one.
    pub bytes: Option<u64>,
    /// 1 for the cause explaining the most bytes in its cgroup (the headline), 2 for the next...
    pub rank: usize,
    pub evidence: Vec<Evidence>,
    pub summary: String,
    pub explain: String,
    pub fix: String,
    pub refs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub name: String,
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

/// A rule with its expressions compiled against the set's environment.
pub(crate) struct Compiled<'a> {
    pub rule: &'a Rule,
    pub when: Expression<'a, 'a>,
    pub bytes: Option<Expression<'a, 'a>>,
    pub evidence: Vec<(&'a str, Expression<'a, 'a>)>,
    /// `summary`, `explain`, `fix`.
    pub texts: [(&'static str, minijinja::Template<'a, 'a>); 3],
}

pub(crate) fn compile(set: &RuleSet) -> Vec<Compiled<'_>> {
    let env = set.env();
    // Every expression compiled when the set loaded; this cannot fail.
    fn c<'a>(
        env: &'a minijinja::Environment<'static>,
        s: &'a toml::Spanned<String>,
    ) -> Expression<'a, 'a> {
        env.compile_expression(s.get_ref())
            .expect("checked at load")
    }
    set.rules()
        .iter()
        .map(|rule| Compiled {
            rule,
            when: c(env, &rule.spec.when),
            bytes: rule.spec.bytes.as_ref().map(|b| c(env, b)),
            evidence: rule
                .spec
                .evidence
                .iter()
                .map(|(k, e)| (k.as_str(), c(env, e)))
                .collect(),
            texts: ["summary", "explain", "fix"].map(|f| {
                (
                    f,
                    env.get_template(&rule.template(f))
                        .expect("added when the set loaded"),
                )
            }),
        })
        .collect()
}

/// The subject a finding is about.
struct Subject<'a> {
    name: String,
    cgroup: Option<(usize, &'a crate::model::Cgroup)>,
}

/// What evaluating one rule on one subject gave.
pub(crate) enum Verdict {
    Quiet,
    Fired(Box<Fired>),
}

pub(crate) struct Fired {
    pub bytes: Option<u64>,
    pub evidence: Vec<Evidence>,
    pub summary: String,
    pub explain: String,
    pub fix: String,
}

/// Which part of a rule failed, and why.
pub(crate) struct RuleFailure {
    pub field: String,
    pub message: String,
}

pub(crate) fn run_rule(c: &Compiled<'_>, ctx: &Value) -> Result<Verdict, RuleFailure> {
    let w = c.when.eval(ctx).map_err(|e| fail("when", e))?;
    if is_true(&w)? {
        fire(c, ctx)
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
fn fire(c: &Compiled<'_>, ctx: &Value) -> Result<Verdict, RuleFailure> {
    let bytes = match &c.bytes {
        Some(b) => {
            let v = b.eval(ctx).map_err(|e| fail("bytes", e))?;
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
            .eval(ctx)
            .map_err(|x| fail(&format!("evidence.{name}"), x))?;
        evidence.push(Evidence {
            name: name.to_string(),
            value: serde_json::to_value(&v).unwrap_or(serde_json::Value::Null),
            text: evidence_text(name, &v),
        });
    }
    let [summary, explain, fix] = &c.texts;
    let render = |(field, t): &(&str, minijinja::Template<'_, '_>)| {
        t.render(ctx)
            .map(|s| s.trim().to_string())
            .map_err(|e| fail(field, e))
    };
    Ok(Verdict::Fired(Box::new(Fired {
        bytes,
        evidence,
        summary: render(summary)?,
        explain: render(explain)?,
        fix: render(fix)?,
    })))
}

/// All `when` expressions of a group of rules as one list expression, so that a subject costs
/// one evaluation instead of one per rule. If any rule fails on a subject, the rules are
/// evaluated one by one there, so the failure is reported against the right rule.
pub(crate) fn all_when<'a>(
    set: &'a RuleSet,
    rules: &[&Compiled<'_>],
) -> Option<Expression<'a, 'static>> {
    let list: Vec<String> = rules
        .iter()
        .map(|c| format!("({})", c.rule.spec.when.get_ref()))
        .collect();
    set.env()
        .compile_expression_owned(format!("[{}]", list.join(", ")))
        .ok()
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
    let compiled = compile(set);
    let node_value = Value::from_serialize(facts::node_facts(model));
    let (node_rules, cg_rules): (Vec<&Compiled>, Vec<&Compiled>) = compiled
        .iter()
        .partition(|c| c.rule.spec.scope == Scope::Node);
    let (holding_rules, cg_rules): (Vec<&Compiled>, Vec<&Compiled>) = cg_rules
        .into_iter()
        .partition(|c| c.rule.spec.subjects == super::Subjects::Holding);
    let mode = model.bundle.cgroup_mode;

    let node_ctx = facts::node_context(&node_value);
    let node_subject = Subject {
        name: "node".into(),
        cgroup: None,
    };
    let mut out = Outcome::default();
    let node_when = all_when(set, &node_rules);
    let cg_when = all_when(set, &cg_rules);
    let holding_when = all_when(set, &holding_rules);
    let mut node_out = run_all(
        &node_rules,
        node_when.as_ref(),
        &node_ctx,
        &node_subject,
        model,
    );
    out.findings.append(&mut node_out.findings);
    out.diagnostics.append(&mut node_out.diagnostics);

    let per_cgroup: Vec<Outcome> = model
        .cgroups
        .par_iter()
        .enumerate()
        .filter(|(_, c)| c.hierarchy_is_memory(mode) && c.bridge.is_some())
        .map(|(i, c)| {
            let ctx = facts::cgroup_context(model, &node_value, i);
            let subject = Subject {
                name: c.display_name(),
                cgroup: Some((i, c)),
            };
            let mut o = run_all(&cg_rules, cg_when.as_ref(), &ctx, &subject, model);
            if c.holds_own() {
                let mut h = run_all(&holding_rules, holding_when.as_ref(), &ctx, &subject, model);
                o.findings.append(&mut h.findings);
                o.diagnostics.append(&mut h.diagnostics);
            }
            rank(&mut o.findings);
            o
        })
        .collect();
    for mut o in per_cgroup {
        out.findings.append(&mut o.findings);
        out.diagnostics.append(&mut o.diagnostics);
    }
    out
}

fn run_all(
    rules: &[&Compiled<'_>],
    all_when: Option<&Expression<'_, '_>>,
    ctx: &Value,
    subject: &Subject<'_>,
    model: &Model,
) -> Outcome {
    let mut out = Outcome::default();
    // The fast path: every `when` at once, each a boolean.
    let whens: Option<Vec<bool>> = all_when
        .and_then(|e| e.eval(ctx).ok())
        .and_then(|v| {
            v.try_iter()
                .ok()?
                .map(|w| (w.kind() == ValueKind::Bool).then(|| w.is_true()))
                .collect()
        })
        .filter(|w: &Vec<bool>| w.len() == rules.len());
    for (i, c) in rules.iter().enumerate() {
        let verdict = match &whens {
            Some(w) if !w[i] => Ok(Verdict::Quiet),
            Some(_) => fire(c, ctx),
            None => run_rule(c, ctx),
        };
        match verdict {
            Ok(Verdict::Quiet) => {}
            Ok(Verdict::Fired(f)) => {
                let spec = &c.rule.spec;
                out.findings.push(Finding {
                    rule: spec.id.clone(),
                    title: spec.title.clone(),
                    cause: spec.cause.clone(),
                    severity: spec.severity,
                    scope: spec.scope,
                    subject: subject.name.clone(),
                    cgroup_path: subject.cgroup.map(|(_, c)| c.path.clone()),
                    cgroup_index: subject.cgroup.map(|(i, _)| i),
                    k8s: subject.cgroup.and_then(|(_, c)| c.k8s.clone()),
                    bytes: f.bytes,
                    rank: 0,
                    evidence: f.evidence,
                    summary: f.summary,
                    explain: f.explain,
                    fix: f.fix,
                    refs: spec.refs.clone(),
                });
            }
            Err(e) => out.diagnostics.push(Diagnostic {
                level: Level::Warning,
                bundle: model.bundle.source.clone(),
                file: None,
                message: format!(
                    "rule {} ({}), field {}, on {}: {}",
                    c.rule.spec.id, c.rule.file, e.field, subject.name, e.message
                ),
            }),
        }
    }
    if subject.cgroup.is_none() {
        rank(&mut out.findings);
    }
    out
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
