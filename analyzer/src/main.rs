use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use memgap_analyzer::rules::{self, RuleSet, Severity};
use memgap_analyzer::{output, reader, Analysis};

/// Explain why containers' memory usage exceeds their processes' RSS, from memgap bundles.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "\
Examples:
  memgap report node.tar.gz                      # terminal summary
  memgap report node.tar.gz --format json -o -   # the model as JSON on stdout
  memgap report unpacked-bundle-dir/ --top 20
  memgap report node.tar.gz --fail-on critical   # exit 1 when a critical finding fires
  memgap rules list                              # the catalogue
  memgap rules test --rules ./my-rules/          # run every rule's examples

Exit codes: 0 success; 1 findings at or above --fail-on; 2 a bundle could not be analyzed."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Analyze bundles (.tar.gz files or unpacked directories)
    Report(ReportArgs),
    /// The rule catalogue: list it, or run the examples in every rule file
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Print shell completions
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff)
    Man,
}

#[derive(Subcommand, Debug)]
enum RulesCmd {
    /// Print the catalogue: id, severity, scope, title
    List {
        #[command(flatten)]
        rules: RulesArg,
        /// Print the rules as JSON
        #[arg(long)]
        json: bool,
    },
    /// Run every rule's examples; exit 1 if one fails
    Test {
        #[command(flatten)]
        rules: RulesArg,
    },
}

#[derive(clap::Args, Debug)]
struct RulesArg {
    /// Directory of extra rule files (*.toml); a rule with a built-in rule's id replaces it
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
}

impl RulesArg {
    fn load(&self) -> anyhow::Result<RuleSet> {
        let r = match &self.rules {
            Some(d) => RuleSet::with_dir(d),
            None => RuleSet::builtin(),
        };
        r.map_err(|errs| {
            let list: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
            anyhow::anyhow!(
                "{} problem(s) in the rules:\n{}",
                errs.len(),
                list.join("\n")
            )
        })
    }
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    /// Bundles to analyze
    #[arg(required = true)]
    bundles: Vec<PathBuf>,
    /// Output file; `-` for standard output (the default)
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Cgroups listed in the text summary
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[command(flatten)]
    rules: RulesArg,
    /// Show only findings at or above this severity
    #[arg(long, value_name = "SEVERITY", default_value = "info")]
    min_severity: Severity,
    /// Exit with 1 when a finding at or above this severity fires
    #[arg(long, value_name = "SEVERITY")]
    fail_on: Option<Severity>,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("memgap: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Report(a) => report(a),
        Cmd::Rules { cmd } => rules_cmd(cmd),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "memgap", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn report(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let rules = a.rules.load()?;
    let mut analyses = Vec::new();
    let mut failed = false;
    for path in &a.bundles {
        match reader::read(path, &reader::Limits::default()) {
            Ok(b) => analyses.push(Analysis::of(&b, &rules)),
            Err(e) => {
                eprintln!("memgap: error: {e}");
                failed = true;
            }
        }
    }
    let bytes = match a.format {
        Format::Json => output::json(&analyses, a.min_severity)?,
        Format::Text => analyses
            .iter()
            .map(|x| output::text(x, a.top, a.min_severity))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes(),
    };
    if a.output.as_os_str() == "-" {
        std::io::stdout().lock().write_all(&bytes)?;
    } else {
        std::fs::write(&a.output, &bytes)
            .with_context(|| format!("writing {}", a.output.display()))?;
    }
    let alarm = a.fail_on.is_some_and(|min| {
        analyses
            .iter()
            .any(|x| rules::engine::at_least(&x.findings, min).next().is_some())
    });
    Ok(if failed {
        ExitCode::from(2)
    } else if alarm {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn rules_cmd(cmd: RulesCmd) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        RulesCmd::List { rules, json } => {
            let set = rules.load()?;
            if json {
                let list: Vec<_> = set
                    .rules()
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "id": r.spec.id, "title": r.spec.title, "cause": r.spec.cause,
                            "severity": r.spec.severity, "scope": r.spec.scope,
                            "when": r.spec.when.get_ref(), "thresholds": r.spec.thresholds,
                            "refs": r.spec.refs, "file": r.file,
                        })
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut out, &list)?;
                writeln!(out)?;
            } else {
                for r in set.rules() {
                    let s = &r.spec;
                    writeln!(
                        out,
                        "{:<34} {:<8} {:<6} {:<14} {}",
                        s.id,
                        s.severity.name(),
                        format!("{:?}", s.scope).to_lowercase(),
                        s.cause,
                        s.title
                    )?;
                }
                writeln!(out, "{} rules", set.rules().len())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCmd::Test { rules } => {
            let set = rules.load()?;
            let results = rules::examples::run(&set);
            let failed: Vec<_> = results.iter().filter(|r| r.failure.is_some()).collect();
            for r in &failed {
                writeln!(
                    out,
                    "FAIL {} ({}): example {:?}: {}",
                    r.rule,
                    r.file,
                    r.example,
                    r.failure.as_deref().unwrap_or_default()
                )?;
            }
            writeln!(
                out,
                "{} rules, {} examples, {} failed",
                set.rules().len(),
                results.len(),
                failed.len()
            )?;
            Ok(if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
