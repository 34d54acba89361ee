//! `kong-config`: renders `kong.yaml` from the environment and validates it for Kong 3.9.
//!
//! `anyhow` lives only here, for I/O at the edge; the library's typed errors decide the exit
//! code. Nothing printed by this binary contains a value taken from the environment: problems
//! are described by place and rule, and every message of a render is passed through
//! [`kong_config::Rendered::redact`] as a second line of defence.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kong_config::{render_detailed, template_vars, validate_document, Problem, RenderError};

/// Exit codes (also in README.md). 2 is clap's own usage error.
const EXIT_IO: u8 = 1;
const EXIT_VARS: u8 = 3;
const EXIT_INVALID: u8 = 4;

#[derive(Parser)]
#[command(
    name = "kong-config",
    version,
    about = "Render and validate the gateway's Kong 3.9 declarative config"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct FilterDirs {
    /// Directory holding the built filters (<name>.wasm, ideally with <name>.meta.json beside them).
    #[arg(long, default_value = "target/wasm32-wasip1/release")]
    filters_dir: PathBuf,
    /// Further places to find <name>.meta.json (as <dir>/<name>.meta.json or <dir>/<name>/<name>.meta.json). Repeatable.
    #[arg(long = "meta-dir", default_value = "wasm-plugins")]
    meta_dirs: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Fill ${VAR} placeholders from the environment, validate, write the result (mode 0600).
    Render {
        #[arg(long, default_value = "kong.yaml")]
        template: PathBuf,
        #[arg(long, default_value = "kong.rendered.yaml")]
        out: PathBuf,
        #[command(flatten)]
        dirs: FilterDirs,
    },
    /// Validate an already rendered config.
    Check {
        file: PathBuf,
        #[command(flatten)]
        dirs: FilterDirs,
    },
    /// List the variables the template needs (and their defaults).
    Vars {
        #[arg(long, default_value = "kong.yaml")]
        template: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kong-config: {e:#}");
            ExitCode::from(EXIT_IO)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Render {
            template,
            out,
            dirs,
        } => render_cmd(&template, &out, &dirs),
        Command::Check { file, dirs } => check_cmd(&file, &dirs),
        Command::Vars { template } => vars_cmd(&template),
    }
}

fn render_cmd(template: &Path, out: &Path, dirs: &FilterDirs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("cannot read template {}", template.display()))?;
    let lookup = |name: &str| std::env::var(name).ok();
    let rendered = match render_detailed(&text, &lookup) {
        Ok(r) => r,
        Err(e) => return Ok(report_render_error(template, &e)),
    };
    let meta: Vec<&Path> = dirs.meta_dirs.iter().map(PathBuf::as_path).collect();
    let config = match validate_document(&rendered.yaml, &dirs.filters_dir, &meta) {
        Ok(c) => c,
        Err(problems) => {
            let redacted: Vec<String> = problems
                .iter()
                .map(|p| rendered.redact(&p.to_string()))
                .collect();
            return Ok(report_problems(&template.display().to_string(), &redacted));
        }
    };
    let header = format!(
        "# Rendered by kong-config from {} — contains secrets: never commit, keep mode 0600.\n",
        template.display()
    );
    write_private(out, &format!("{header}{}", rendered.yaml))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "rendered {} services, {} routes, {} filter chains to {}",
        config.services.len(),
        config.route_count(),
        config.all_filter_chains().count(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn check_cmd(file: &Path, dirs: &FilterDirs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let meta: Vec<&Path> = dirs.meta_dirs.iter().map(PathBuf::as_path).collect();
    match validate_document(&text, &dirs.filters_dir, &meta) {
        Ok(config) => {
            println!(
                "{}: ok ({} services, {} routes, {} filter chains)",
                file.display(),
                config.services.len(),
                config.route_count(),
                config.all_filter_chains().count()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
            Ok(report_problems(&file.display().to_string(), &lines))
        }
    }
}

fn vars_cmd(template: &Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("cannot read template {}", template.display()))?;
    match template_vars(&text) {
        Ok(vars) => {
            for v in vars {
                match v.default {
                    Some(d) => println!("{} (default: {d})", v.name),
                    None => println!("{}", v.name),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(report_render_error(template, &e)),
    }
}

fn report_render_error(template: &Path, e: &RenderError) -> ExitCode {
    match e {
        RenderError::Placeholders { missing, invalid } => {
            eprintln!("kong-config: cannot render {}:", template.display());
            for m in missing {
                eprintln!("  missing variable {m} (unset or empty)");
            }
            for i in invalid {
                eprintln!("  {i}");
            }
            ExitCode::from(EXIT_VARS)
        }
        other => {
            eprintln!("kong-config: {}: {other}", template.display());
            ExitCode::from(EXIT_IO)
        }
    }
}

fn report_problems(what: &str, lines: &[String]) -> ExitCode {
    eprintln!("kong-config: {what}: {} problem(s):", lines.len());
    for l in lines {
        eprintln!("  {l}");
    }
    ExitCode::from(EXIT_INVALID)
}

/// Writes `contents` to `path` readable by the owner only: via a 0600 temporary file in the
/// same directory and a rename, so the secret-bearing file never exists with wider permissions
/// and a reader never sees half a config.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .context("output path has no file name")?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| -> anyhow::Result<()> {
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
