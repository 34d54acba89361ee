//! Entry point: parse the command line, load the configuration once, run the command.
//! `anyhow` lives only here: at the edge every error just needs a readable report.

use anyhow::Context as _;
use clap::Parser;

use bitbylaw_worker::cli::{Cli, Command, ConfigCmd};
use bitbylaw_worker::config::{Config, LogFormat, Purpose};
use bitbylaw_worker::{app, cli, shutdown};

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Pure output: needs neither configuration nor Redis.
    if let Command::Threecx(cli::ThreecxCmd::Template { base_url, country }) = &cli.command {
        return match bitbylaw_worker::handlers::telephony::template::template(base_url, country) {
            Ok(xml) => {
                print!("{xml}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let purpose = match cli.command {
        Command::Serve(_) | Command::Config(_) => Purpose::Serve,
        _ => Purpose::Admin,
    };
    let config = match Config::from_env(cli.config.as_deref(), purpose) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Command::Config(ConfigCmd::Check) = cli.command {
        if let Some(w) = config.admin_token_warning() {
            eprintln!("warning: {w}");
        }
        println!("configuration ok: {config:#?}");
        return std::process::ExitCode::SUCCESS;
    }
    let calendar = matches!(
        cli.command,
        Command::Calendar(_) | Command::Beteiligte(_) | Command::Documents(_)
    );
    match run(cli.command, config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // The calendar and Beteiligte commands distinguish "out of sync" (1) from "could not
            // check" (2).
            match e.downcast_ref::<cli::CliError>() {
                Some(ce) if calendar => std::process::ExitCode::from(ce.exit_code()),
                _ => std::process::ExitCode::FAILURE,
            }
        }
    }
}

fn run(command: Command, mut config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        match command {
            Command::Serve(args) => {
                config.roles.intake &= !args.no_intake;
                config.roles.consumers &= !args.no_consumers;
                config.roles.schedules &= !args.no_schedules;
                init_logging(&config);
                let (trigger, shutdown) = shutdown::channel();
                tokio::spawn(async move {
                    shutdown::os_signal().await;
                    tracing::info!("shutdown signal received");
                    trigger.fire();
                });
                app::serve(config, shutdown).await.context("serve")
            }
            other => cli::run_admin(other, &config)
                .await
                .context("command failed"),
        }
    })
}
