//! Expected findings of a sample bundle (`samples/*.expect.toml`): the rule that must fire on a
//! subject, whether it must be the headline, the bytes the scenario created and how to measure
//! them, and rules that must not fire (a healthy container must not be blamed on the kernel).

use serde::{Deserialize, Serialize};

use crate::Analysis;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// What the scenario did, in words.
    pub scenario: String,
    /// The cgroup path the finding is about, or `node`.
    pub subject: String,
    /// The rule that must fire there.
    pub rule: String,
    /// Whether it must be the subject's headline (rank 1).
    #[serde(default)]
    pub primary: bool,
    /// Bytes the scenario created, and how to read the diagnosed amount: `bytes` (the
    /// finding's bytes), `evidence:NAME` or `part:KEY` (the cgroup's bridge part).
    pub bytes: Option<u64>,
    #[serde(default = "default_measure")]
    pub measure: String,
    /// Allowed relative difference between the diagnosed and the created bytes.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Rules that must not fire on the subject.
    #[serde(default)]
    pub absent: Vec<String>,
}

fn default_measure() -> String {
    "bytes".into()
}

fn default_tolerance() -> f64 {
    0.15
}

impl Expectation {
    pub fn parse(text: &str) -> Result<Expectation, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks an analysis; the error says what differs.
    pub fn check(&self, a: &Analysis) -> Result<(), String> {
        let on_subject = |f: &&crate::rules::Finding| match f.cgroup_path.as_deref() {
            Some(p) => p == self.subject,
            None => self.subject == "node",
        };
        let fired: Vec<&crate::rules::Finding> = a.findings.iter().filter(on_subject).collect();
        let names = || fired.iter().map(|f| &*f.rule).collect::<Vec<_>>();
        let f = fired
            .iter()
            .find(|f| &*f.rule == self.rule.as_str())
            .ok_or_else(|| {
                format!(
                    "{} did not fire on {} (fired: {:?})",
                    self.rule,
                    self.subject,
                    names()
                )
            })?;
        if self.primary && f.rank != 1 {
            return Err(format!(
                "{} is rank {} on {}, not the headline (fired: {:?})",
                self.rule,
                f.rank,
                self.subject,
                names()
            ));
        }
        for r in &self.absent {
            if fired.iter().any(|f| &*f.rule == r.as_str()) {
                return Err(format!("{r} fired on {} and must not", self.subject));
            }
        }
        let Some(want) = self.bytes else {
            return Ok(());
        };
        let got = self.measured(a, f)?;
        let off = (got as f64 - want as f64).abs() / want.max(1) as f64;
        if off > self.tolerance {
            return Err(format!(
                "{} measured {} bytes by {}, the scenario created {} ({:.0}% off, {:.0}% allowed)",
                self.rule,
                got,
                self.measure,
                want,
                off * 100.0,
                self.tolerance * 100.0
            ));
        }
        Ok(())
    }

    fn measured(&self, a: &Analysis, f: &crate::rules::Finding) -> Result<u64, String> {
        let m = self.measure.as_str();
        if m == "bytes" {
            return f
                .bytes
                .ok_or_else(|| format!("{} reports no bytes", f.rule));
        }
        if let Some(name) = m.strip_prefix("evidence:") {
            return f
                .evidence
                .iter()
                .find(|e| &*e.name == name)
                .and_then(|e| e.value.as_f64())
                .map(|v| v as u64)
                .ok_or_else(|| format!("{} has no numeric evidence {name}", f.rule));
        }
        if let Some(key) = m.strip_prefix("part:") {
            let c = f
                .cgroup_index
                .map(|i| &a.model.cgroups[i])
                .ok_or("part: needs a cgroup subject")?;
            return Ok(c.bridge.as_ref().map_or(0, |b| b.part(key)));
        }
        Err(format!(
            "unknown measure {m:?} (bytes, evidence:NAME, part:KEY)"
        ))
    }
}
