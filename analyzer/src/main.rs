use std::io::Write;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use memgap_analyzer::rules::{self, RuleSet, Severity};
use memgap_analyzer::{batch, html, output, reader, Analysis};

/// mimalloc: model building and the rules allocate many small values; glibc's malloc made
/// them 10-25% slower (docs/performance.md).
#[global_allocator]
static GLOBAL: memgap_analyzer::alloc::Mimalloc = memgap_analyzer::alloc::Mimalloc;

/// Explain why containers' memory usage exceeds their processes' RSS, from memgap bundles.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "\
Examples:
  memgap report node.tar.gz -o node.html         # the report page, for a browser or a ticket
  memgap report node.tar.gz                      # terminal summary
  memgap report node.tar.gz --format json -o -   # the model and findings as JSON on stdout
  memgap report bundles/ -o review/              # many bundles: index.html, pages, findings.jsonl
  memgap report node.tar.gz --fail-on critical   # exit 1 when a critical finding fires
  memgap diff before.tar.gz after.tar.gz         # what grew between two collections
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
    /// Analyze bundles (.tar.gz files, unpacked directories, directories of bundles)
    Report(ReportArgs),
    /// The rule catalogue: list it, or run the examples in every rule file
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Compare two bundles of the same node: what grew, at what rate, what appeared
    Diff(DiffArgs),
    /// Join the output directories of `report --shard` runs into one index
    Merge {
        /// Output directories of the shards, in order
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// Directory to write the merged index, pages and JSON lines to
        #[arg(short, long)]
        output: PathBuf,
        /// Directory of report templates overriding the built-in ones
        #[arg(long, value_name = "DIR")]
        templates: Option<PathBuf>,
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
struct DiffArgs {
    /// The earlier bundle
    old: PathBuf,
    /// The later bundle
    new: PathBuf,
    /// Output file; `-` for standard output (the default)
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
    /// Output format [default: html when the output ends in .html, else text]
    #[arg(short, long, value_enum)]
    format: Option<Format>,
    #[command(flatten)]
    rules: RulesArg,
    /// Directory of report templates overriding the built-in ones
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    /// Bundles to analyze (.tar.gz files, unpacked bundle directories, or directories searched
    /// for bundles)
    #[arg(required = true)]
    bundles: Vec<PathBuf>,
    /// Output file, or directory for a batch (index.html, a page per bundle, findings.jsonl);
    /// `-` for standard output (the default)
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
    /// Analyze only shard K of N (1-based), chosen by a stable hash of each bundle's name
    #[arg(long, value_name = "K/N")]
    shard: Option<batch::Shard>,
    /// In a batch, write only the index and the JSON lines, no page per bundle
    #[arg(long)]
    no_pages: bool,
    /// Output format [default: html when the output ends in .html or is a directory, else text]
    #[arg(short, long, value_enum)]
    format: Option<Format>,
    /// Directory of report templates overriding the built-in ones, file by file
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
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

#[derive(Copy, Clone, Debug, PartialEq, ValueEnum)]
enum Format {
    Text,
    Json,
    Html,
}

fn main() -> ExitCode {
    memgap_analyzer::alloc::keep_freed_memory();
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
        Cmd::Diff(a) => diff_cmd(a),
        Cmd::Merge {
            shards,
            output,
            templates,
        } => {
            let t = html::Templates::load(templates.as_deref())?;
            let o = batch::merge(&shards, &output, &t)?;
            eprintln!(
                "memgap: merged {} bundle(s) from {} shard(s) ({} failed{}) into {}",
                o.bundles,
                shards.len(),
                o.failed,
                read_in_part(o.partial),
                output.join("index.html").display()
            );
            Ok(if o.failed > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
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
    let searched = a.bundles.iter().any(|p| p.is_dir() && !batch::is_bundle(p));
    let mut inputs = batch::discover(&a.bundles);
    if let Some(s) = a.shard {
        inputs.retain(|i| s.has(i));
    }
    if inputs.is_empty() && a.shard.is_none() {
        anyhow::bail!("no bundles found in the given paths");
    }
    let to_stdout = a.output.as_os_str() == "-";
    let to_dir = !to_stdout
        && (a.output.is_dir()
            || a.output.to_string_lossy().ends_with('/')
            || (a.output.extension().is_none() && (searched || inputs.len() > 1)));
    let format = a.format.unwrap_or(
        if to_dir || a.output.extension().is_some_and(|e| e == "html") {
            Format::Html
        } else {
            Format::Text
        },
    );
    let templates = match format {
        Format::Html => Some(html::Templates::load(a.templates.as_deref())?),
        _ => None,
    };
    let fails = |worst: Option<Severity>| a.fail_on.is_some_and(|min| worst >= Some(min));
    if format == Format::Html && to_dir {
        let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            indicatif::ProgressBar::new(inputs.len() as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} bundles ({eta} left)",
                )
                .expect("a valid template"),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        let o = batch::run(
            &inputs,
            &batch::Options {
                out: &a.output,
                rules: &rules,
                templates: templates.as_ref().expect("loaded for html"),
                min_severity: a.min_severity,
                limits: reader::Limits::default(),
                pages: !a.no_pages,
            },
            &progress,
        )?;
        progress.finish_and_clear();
        eprintln!(
            "memgap: {} bundle(s), {} failed{}; wrote {}",
            o.bundles,
            o.failed,
            read_in_part(o.partial),
            a.output.join("index.html").display()
        );
        return Ok(exit_code(o.failed > 0, fails(o.worst)));
    }
    if format == Format::Html && inputs.len() > 1 {
        anyhow::bail!("{} bundles give one page each: use -o DIR/", inputs.len());
    }
    let mut analyses = Vec::new();
    let mut failed = false;
    for input in &inputs {
        match reader::read(&input.path, &reader::Limits::default()) {
            Ok(b) => {
                let mut x = Analysis::of(b, &rules);
                x.findings.retain(|f| f.severity >= a.min_severity);
                analyses.push(x);
            }
            Err(e) => {
                eprintln!("memgap: error: {e}");
                failed = true;
            }
        }
    }
    match format {
        Format::Html => {
            if let Some(x) = analyses.first() {
                let t = templates.as_ref().expect("loaded for html");
                write_output(&a.output, t.report(x)?.as_bytes())?;
            }
        }
        Format::Json => write_output(&a.output, &output::json(&analyses, a.min_severity)?)?,
        Format::Text => {
            let text: Vec<String> = analyses
                .iter()
                .map(|x| output::text(x, a.top, a.min_severity))
                .collect();
            write_output(&a.output, text.join("\n").as_bytes())?;
        }
    }
    let worst = analyses
        .iter()
        .flat_map(|x| x.findings.iter().map(|f| f.severity))
        .max();
    Ok(exit_code(failed, fails(worst)))
}

fn diff_cmd(a: DiffArgs) -> anyhow::Result<ExitCode> {
    let rules = a.rules.load()?;
    let load = |p: &PathBuf| -> anyhow::Result<Analysis> {
        let b = reader::read(p, &reader::Limits::default())?;
        Ok(Analysis::of(b, &rules))
    };
    let (old, new) = (load(&a.old)?, load(&a.new)?);
    let d = memgap_analyzer::diff::diff(&old, &new);
    let format = a
        .format
        .unwrap_or(if a.output.extension().is_some_and(|e| e == "html") {
            Format::Html
        } else {
            Format::Text
        });
    let bytes = match format {
        Format::Html => html::Templates::load(a.templates.as_deref())?
            .render("diff.html", &d)?
            .into_bytes(),
        Format::Json => serde_json::to_vec_pretty(&d)?,
        Format::Text => memgap_analyzer::diff::text(&d).into_bytes(),
    };
    write_output(&a.output, &bytes)?;
    Ok(ExitCode::SUCCESS)
}

/// `, N read in part` for a batch's last line, when bundles were (see `batch::Outcome`).
fn read_in_part(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!(", {n} read in part"),
    }
}

/// 2 when a bundle could not be analyzed, 1 when a finding reached `--fail-on`, else 0.
fn exit_code(failed: bool, alarm: bool) -> ExitCode {
    if failed {
        ExitCode::from(2)
    } else if alarm {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Writes to standard output (`-`) or a file, replaced whole (a temporary file renamed).
fn write_output(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        std::io::stdout().lock().write_all(bytes)?;
        return Ok(());
    }
    // A device or FIFO (`-o /dev/null`) is written in place: renaming over it would replace it.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(std::path::Path::new(".")))
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    // A report is an ordinary file (the temporary file starts private).
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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
