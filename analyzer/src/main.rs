use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use memgap_analyzer::{model, output, reader};

/// Explain why containers' memory usage exceeds their processes' RSS, from memgap bundles.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "\
Examples:
  memgap report node.tar.gz                      # terminal summary
  memgap report node.tar.gz --format json -o -   # the model as JSON on stdout
  memgap report unpacked-bundle-dir/ --top 20

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
    /// Print shell completions
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff)
    Man,
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
    let mut models = Vec::new();
    let mut failed = false;
    for path in &a.bundles {
        match reader::read(path, &reader::Limits::default()) {
            Ok(b) => models.push(model::build(&b)),
            Err(e) => {
                eprintln!("memgap: error: {e}");
                failed = true;
            }
        }
    }
    let bytes = match a.format {
        Format::Json => output::json(&models)?,
        Format::Text => models
            .iter()
            .map(|m| output::text(m, a.top))
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
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
