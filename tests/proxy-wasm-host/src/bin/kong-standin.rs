//! `kong-standin`: serve a rendered kong.yaml through the proxy-wasm host, as a
//! stand-in for Kong 3.9 on machines where Kong cannot be installed.
//!
//! ```text
//! kong-standin --config kong.rendered.yaml --listen 127.0.0.1:8000 --workers 2
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use proxy_wasm_host::gateway::{parse_nginx_size, Gateway, GatewayOptions};

/// Kong's setting for nginx's `client_body_buffer_size` (default 8k).
const BODY_BUFFER_ENV: &str = "KONG_NGINX_HTTP_CLIENT_BODY_BUFFER_SIZE";

#[derive(Parser, Debug)]
#[command(
    about = "Kong 3.9 stand-in: routes by a rendered kong.yaml and runs its proxy-wasm filter chains"
)]
struct Args {
    /// A rendered declarative config (see `kong-config render`).
    #[arg(long, default_value = "kong.rendered.yaml")]
    config: PathBuf,
    /// Directory holding `<filter>.wasm` (Kong's `wasm_filters_path`).
    #[arg(long)]
    filters_dir: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// nginx worker processes (one VM instance per filter each).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Print filter logs to stderr.
    #[arg(long)]
    echo_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config = kong_config::model::KongConfig::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let mut opts = GatewayOptions::new(config);
    if let Some(dir) = args.filters_dir {
        opts.filters_dir = dir;
    }
    opts.listen = args.listen;
    opts.workers = args.workers;
    opts.echo_logs = args.echo_logs;
    if let Some(size) = body_buffer_size_from_env()? {
        opts.client_body_buffer_size = size;
    }
    let gateway = Gateway::start(opts).await?;
    eprintln!(
        "kong-standin listening on {} ({} workers)",
        gateway.base_url(),
        args.workers
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Reads `KONG_NGINX_HTTP_CLIENT_BODY_BUFFER_SIZE` like Kong does (nginx size
/// syntax); unset means Kong's default, a bad value stops the start.
fn body_buffer_size_from_env() -> anyhow::Result<Option<usize>> {
    match std::env::var(BODY_BUFFER_ENV) {
        Ok(text) => parse_nginx_size(text.trim())
            .map(Some)
            .with_context(|| BODY_BUFFER_ENV),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{BODY_BUFFER_ENV} is not valid UTF-8")
        }
    }
}
