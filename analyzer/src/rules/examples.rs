//! `memgap rules test`: runs every example in the rule files. An example is a small context
//! (`cg`, `node`) and whether the rule must fire; when it fires, every field must render and,
//! if the example says so, report the expected bytes.

use minijinja::Value;
use serde::Serialize;

use super::engine::{compile, run_rule, Verdict};
use super::native::Scope;
use super::RuleSet;

#[derive(Debug, Clone, Serialize)]
pub struct ExampleResult {
    pub rule: String,
    pub file: String,
    pub example: String,
    /// `None` when the example passed.
    pub failure: Option<String>,
}

/// The example's variables, with the names it lists in `none` set to none.
fn context(ex: &super::Example) -> serde_json::Value {
    let mut v = serde_json::to_value(&ex.context).unwrap_or_default();
    for path in &ex.none {
        let mut at = &mut v;
        let mut keys = path.split('.').peekable();
        while let Some(k) = keys.next() {
            let Some(obj) = at.as_object_mut() else { break };
            if keys.peek().is_none() {
                obj.insert(k.to_string(), serde_json::Value::Null);
                break;
            }
            at = obj
                .entry(k.to_string())
                .or_insert_with(|| serde_json::json!({}));
        }
    }
    v
}

/// A cgroup the rule does not look at (as the engine would skip it).
fn skipped(rule: &super::Rule, ex: &super::Example) -> bool {
    rule.spec.subjects == super::Subjects::Holding
        && ex
            .context
            .get("cg")
            .and_then(|cg| cg.get("holds_own"))
            .and_then(toml::Value::as_bool)
            == Some(false)
}

pub fn run(set: &RuleSet) -> Vec<ExampleResult> {
    let mut out = Vec::new();
    let cat = compile(set);
    for c in &cat.rules {
        for ex in &c.rule.spec.examples {
            let ctx = Value::from_serialize(context(ex));
            let verdict = if skipped(c.rule, ex) {
                Ok(Verdict::Quiet)
            } else {
                run_rule(c, &mut Scope::new(&cat.paths, ctx))
            };
            let failure = match verdict {
                Err(e) => Some(format!("field {}: {}", e.field, e.message)),
                Ok(Verdict::Quiet) if ex.fire => Some("did not fire, must fire".into()),
                Ok(Verdict::Fired(_)) if !ex.fire => Some("fired, must not fire".into()),
                Ok(Verdict::Fired(f)) => match (ex.bytes, f.bytes) {
                    (Some(want), got) if got != Some(want) => {
                        Some(format!("bytes: got {got:?}, want {want}"))
                    }
                    _ => None,
                },
                Ok(Verdict::Quiet) => None,
            };
            out.push(ExampleResult {
                rule: c.rule.spec.id.clone(),
                file: c.rule.file.clone(),
                example: ex.name.clone(),
                failure,
            });
        }
    }
    out
}

/// For tests: every expression of every rule evaluated both ways (compiled and minijinja) on
/// every example's context.
#[doc(hidden)]
pub fn check_native(set: &RuleSet) -> super::engine::Agreement {
    let cat = compile(set);
    let mut out = super::engine::Agreement::default();
    for c in &cat.rules {
        for ex in c
            .rule
            .spec
            .examples
            .iter()
            .filter(|ex| !skipped(c.rule, ex))
        {
            let mut scope = Scope::new(&cat.paths, Value::from_serialize(context(ex)));
            let subject = format!("example {:?}", ex.name);
            super::engine::check_rules(
                std::slice::from_ref(c),
                &mut scope,
                &subject,
                c.rule.spec.scope,
                &mut out,
            );
        }
    }
    out
}
