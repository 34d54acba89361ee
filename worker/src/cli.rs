//! The command line. `serve` runs the worker; the other commands talk to Redis directly, so they
//! work while no worker runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::queue_for;
use crate::config::Config;
use crate::intake::calendar::{calendar_job, CalendarSyncRequest};
use crate::locks::{LockError, Locks};
use crate::queue::QueueError;

#[derive(Debug, Parser)]
#[command(
    name = "bitbylaw-worker",
    version,
    about = "bitbylaw gateway worker: durable queue and sync handlers"
)]
pub struct Cli {
    /// TOML configuration file (environment variables override it).
    #[arg(long, global = true, env = "WORKER_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run intake, consumers and schedules (each can be switched off).
    Serve(ServeArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Queue inspection.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Dead-letter stream.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Entity locks.
    #[command(subcommand)]
    Locks(LocksCmd),
    /// Enqueue sync jobs by hand.
    #[command(subcommand)]
    Sync(SyncCmd),
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Do not serve POST /events and /calendar/sync (ops routes stay).
    #[arg(long)]
    pub no_intake: bool,
    /// Do not run consumers.
    #[arg(long)]
    pub no_consumers: bool,
    /// Do not run schedules.
    #[arg(long)]
    pub no_schedules: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate the configuration; lists every problem and exits non-zero if there are any.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Depth per topic: stream length, in flight, delayed, age of the oldest job.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// Show dead jobs with their last error.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Put dead jobs back on their topic's queue with a fresh attempt count.
    Replay {
        /// Dead-letter entry ids (from `dlq list`).
        ids: Vec<String>,
        /// Replay everything.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete every dead job.
    Purge {
        /// Required, so a purge is never an accident.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum LocksCmd {
    /// Show held locks with owner token and remaining TTL.
    List,
    /// Force-release locks (full key or `{handler}:{type}:{id}`).
    Clear {
        keys: Vec<String>,
        #[arg(long, conflicts_with = "keys")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SyncCmd {
    /// Enqueue a calendar sync for one employee or all.
    Calendar {
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        kuerzel: Option<String>,
        #[arg(long)]
        all: bool,
        /// Pass `full_content` through to the job.
        #[arg(long)]
        full_content: Option<bool>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{0}")]
    Usage(String),
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs an admin command (everything but `serve` and `config check`).
pub async fn run_admin(command: Command, config: &Config) -> Result<(), CliError> {
    let queue = queue_for(config)?;
    match command {
        Command::Queue(QueueCmd::Stats { json }) => {
            let stats = queue.stats().await?;
            let dlq = queue.dlq_len().await?;
            if json {
                print_json(&serde_json::json!({ "topics": stats, "dlq": dlq }));
            } else {
                println!(
                    "{:<34} {:>8} {:>9} {:>8} {:>11}",
                    "TOPIC", "QUEUED", "IN_FLIGHT", "DELAYED", "OLDEST_AGE"
                );
                for s in stats {
                    let age = s
                        .oldest_age_secs
                        .map(|a| format!("{a:.1}s"))
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{:<34} {:>8} {:>9} {:>8} {:>11}",
                        s.topic,
                        s.stream_len.saturating_sub(s.in_flight),
                        s.in_flight,
                        s.delayed,
                        age
                    );
                }
                println!("dead-lettered: {dlq}");
            }
        }
        Command::Dlq(DlqCmd::List { limit, json }) => {
            let dead = queue.dlq_list(limit).await?;
            if json {
                print_json(&dead);
            } else {
                for d in dead {
                    let (topic, entity, attempts) = d
                        .job
                        .as_ref()
                        .map(|j| (j.topic.as_str(), j.entity.as_str(), j.attempts))
                        .unwrap_or(("?", "?", 0));
                    println!(
                        "{}  {topic}  {entity}  attempts={attempts}  failed_at={}  error={}",
                        d.dlq_id, d.failed_at, d.error
                    );
                }
            }
        }
        Command::Dlq(DlqCmd::Replay { ids, all }) => {
            if ids.is_empty() && !all {
                return Err(CliError::Usage("give dead-letter ids or --all".into()));
            }
            let replayed = queue.dlq_replay(&ids).await?;
            println!("replayed {} job(s)", replayed.len());
        }
        Command::Dlq(DlqCmd::Purge { yes }) => {
            if !yes {
                return Err(CliError::Usage(
                    "purging deletes dead jobs for good; add --yes".into(),
                ));
            }
            println!("purged {} job(s)", queue.dlq_purge().await?);
        }
        Command::Locks(LocksCmd::List) => {
            for l in Locks::new(queue.redis().clone()).list().await? {
                println!("{}  owner={}  ttl_ms={}", l.key, l.owner, l.ttl_ms);
            }
        }
        Command::Locks(LocksCmd::Clear { keys, all }) => {
            if keys.is_empty() && !all {
                return Err(CliError::Usage("give lock keys or --all".into()));
            }
            println!(
                "cleared {} lock(s)",
                Locks::new(queue.redis().clone()).clear(&keys).await?
            );
        }
        Command::Sync(SyncCmd::Calendar {
            kuerzel,
            all,
            full_content,
        }) => {
            let kuerzel = if all {
                "ALL".to_string()
            } else {
                kuerzel.unwrap_or_default()
            };
            let (topic, job) = calendar_job(&CalendarSyncRequest {
                kuerzel,
                full_content,
            })
            .map_err(|e| CliError::Usage(e.message))?;
            for e in queue.enqueue(topic, vec![job]).await? {
                println!(
                    "{topic} {} job {}{}",
                    e.entity,
                    e.job_id,
                    if e.coalesced { " (coalesced)" } else { "" }
                );
            }
        }
        Command::Serve(_) | Command::Config(_) => {
            return Err(CliError::Usage("not an admin command".into()))
        }
    }
    Ok(())
}
