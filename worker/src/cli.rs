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
    /// Calendar sync tools that talk to Advoware and Google directly.
    #[command(subcommand)]
    Calendar(CalendarCmd),
    /// Beteiligte sync tools that talk to EspoCRM and Advoware directly.
    #[command(subcommand)]
    Beteiligte(BeteiligteCmd),
    /// 3CX telephony tools.
    #[command(subcommand)]
    Threecx(ThreecxCmd),
    /// Document sync tools (EspoCRM documents → xAI collections).
    #[command(subcommand)]
    Documents(DocumentsCmd),
}

#[derive(Debug, Subcommand)]
pub enum DocumentsCmd {
    /// Compare EspoCRM's documents with the collections' document lists in xAI: missing,
    /// orphaned, stale hash. Exit status: 0 in sync, 1 differences, 2 when the audit failed.
    Audit {
        /// Only this entity, e.g. `Raeumungsklage:66a1b2c3d4e5f6789`.
        #[arg(long)]
        entity: Option<String>,
    },
    /// Enqueue a sync of one `CDokumente` record now (`vmh.document.update`).
    Resync { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ThreecxCmd {
    /// Print the 3CX CRM template XML for our endpoints (upload it in the 3CX admin console).
    Template {
        /// The gateway's public base URL, e.g. https://api.bitbylaw.com
        #[arg(long)]
        base_url: String,
        /// The template's `Country` attribute.
        #[arg(long, default_value = "DE")]
        country: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BeteiligteCmd {
    /// Sync one `CBeteiligte` now, in this process (holding its entity lock); prints the outcome.
    Sync { espo_id: String },
    /// Records per `syncStatus` and the oldest unclean one (pending_sync, dirty, failed).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Compare one record field by field on both sides, with its sync bookkeeping.
    /// Exit status: 0 equal, 1 different, 2 when the comparison itself failed.
    Audit { espo_id: String },
    /// Give a record a fresh start (`failed`, retry count 0, a create whose answer was lost
    /// forgotten: check Advoware first!) and enqueue a sync for it.
    Reset { espo_id: String },
    /// Enqueue the 15-minute check (`vmh.beteiligte.sync_check`) now.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum CalendarCmd {
    /// Compare Advoware, Google and the sync state of one employee and print every difference.
    /// Exit status: 0 in sync, 1 out of sync, 2 when the comparison itself failed.
    Audit {
        #[arg(long)]
        kuerzel: String,
        /// Audit as the given content mode would sync (default: the configured one).
        #[arg(long)]
        full_content: Option<bool>,
    },
    /// Sync one employee now, in this process (holding the employee lock), showing progress.
    Run {
        #[arg(long)]
        kuerzel: String,
        #[arg(long)]
        full_content: Option<bool>,
        /// Lift the empty-side guard for this run (after checking the audit!).
        #[arg(long)]
        force: bool,
    },
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
    /// Depth per topic: queued, in flight, delayed, age of the oldest job, stream length and age
    /// of the oldest stream entry; the dead-letter stream's length and oldest entry age.
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
        /// Pass `full_content` through to the job (`false` narrows to busy blocks; `true` never
        /// overrides `CALENDAR_BUSY_ONLY`).
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
    /// The audit found differences (exit status 1).
    #[error("{0} difference(s): out of sync")]
    OutOfSync(usize),
    /// The calendar sync could not run (exit status 2).
    #[error("calendar: {0}")]
    Calendar(String),
    /// The Beteiligte sync or its check could not run (exit status 2).
    #[error("Beteiligte: {0}")]
    Beteiligte(String),
    /// The document audit could not run (exit status 2).
    #[error("documents: {0}")]
    Documents(String),
}

impl CliError {
    /// The process exit status: 1 for "out of sync", 2 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::OutOfSync(_) => 1,
            _ => 2,
        }
    }
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
            let dlq = queue.dlq_stats().await?;
            let age = |a: Option<f64>| a.map(|a| format!("{a:.1}s")).unwrap_or_else(|| "-".into());
            if json {
                print_json(&serde_json::json!({
                    "topics": stats,
                    "dlq": dlq.len,
                    "dlq_oldest_entry_age_secs": dlq.oldest_entry_age_secs,
                }));
            } else {
                // LENGTH and ENTRY_AGE: what the stream holds and since when (retention limits).
                println!(
                    "{:<34} {:>8} {:>9} {:>8} {:>11} {:>8} {:>11}",
                    "TOPIC", "QUEUED", "IN_FLIGHT", "DELAYED", "OLDEST_AGE", "LENGTH", "ENTRY_AGE"
                );
                for s in stats {
                    println!(
                        "{:<34} {:>8} {:>9} {:>8} {:>11} {:>8} {:>11}",
                        s.topic,
                        s.stream_len.saturating_sub(s.in_flight),
                        s.in_flight,
                        s.delayed,
                        age(s.oldest_age_secs),
                        s.stream_len,
                        age(s.oldest_entry_age_secs),
                    );
                }
                println!(
                    "dead-lettered: {} (oldest entry age {})",
                    dlq.len,
                    age(dlq.oldest_entry_age_secs)
                );
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
        Command::Calendar(cmd) => calendar(cmd, config, &queue).await?,
        Command::Beteiligte(cmd) => beteiligte(cmd, config, &queue).await?,
        Command::Documents(cmd) => documents(cmd, config, &queue).await?,
        Command::Serve(_) | Command::Config(_) | Command::Threecx(_) => {
            return Err(CliError::Usage("not an admin command".into()))
        }
    }
    Ok(())
}

async fn calendar(
    cmd: CalendarCmd,
    config: &Config,
    queue: &crate::queue::Queue,
) -> Result<(), CliError> {
    use crate::handlers::calendar::{
        build_sides, engine::Engine, engine::Progress, handler_error, run_options,
        store::CalendarStore,
    };
    use bitbylaw_core::ids::Kuerzel;

    let (raw, full_content) = match &cmd {
        CalendarCmd::Audit {
            kuerzel,
            full_content,
        }
        | CalendarCmd::Run {
            kuerzel,
            full_content,
            ..
        } => (kuerzel.clone(), *full_content),
    };
    let kuerzel =
        Kuerzel::new(&raw).map_err(|e| CliError::Usage(format!("--kuerzel {raw:?}: {e}")))?;
    let sides = build_sides(config, queue, None)
        .await
        .map_err(|e| CliError::Calendar(e.to_string()))?;
    let engine = Engine {
        advoware: sides.advoware.as_ref(),
        google: sides.google.as_ref(),
        settings: &config.calendar,
    };
    let mut payload = serde_json::Map::new();
    if let Some(fc) = full_content {
        payload.insert("full_content".into(), fc.into());
    }
    if let CalendarCmd::Run { force: true, .. } = cmd {
        payload.insert("force".into(), true.into());
    }
    let opts = run_options(&config.calendar, &kuerzel, &payload.into());
    let conn = queue.redis().conn().await?;
    let mut store = CalendarStore::new(conn, kuerzel.clone());
    match cmd {
        CalendarCmd::Audit { .. } => {
            let report = engine
                .audit(&mut store, &kuerzel, &opts)
                .await
                .map_err(|e| CliError::Calendar(e.to_string()))?;
            println!(
                "calendar {}: Advoware {} appointment(s), Google {} event(s), {} known pair(s)",
                report.calendar_id.as_deref().unwrap_or("(none recorded)"),
                report.advoware,
                report.google,
                report.pairs
            );
            if let Some(refused) = &report.refused {
                println!("REFUSED: {refused}");
            }
            for d in &report.differences {
                println!("DIFF: {d}");
            }
            if report.in_sync() {
                println!("in sync");
            } else {
                return Err(CliError::OutOfSync(
                    report.differences.len() + usize::from(report.refused.is_some()),
                ));
            }
        }
        CalendarCmd::Run { .. } => {
            let locks = Locks::new(queue.redis().clone());
            let guard = locks
                .try_acquire("calendar", "employee", kuerzel.as_str(), config.lock_ttl)
                .await?;
            let mut last_shown = 0usize;
            let mut progress = |p: &Progress| match p {
                Progress::Planned {
                    advoware,
                    google,
                    steps,
                } => eprintln!("{advoware} appointment(s), {google} event(s): {steps} step(s)"),
                Progress::Step { done, total } => {
                    // About 20 lines for a long run, every step for a short one.
                    if *done == *total || *done >= last_shown + (*total / 20).max(1) {
                        last_shown = *done;
                        eprintln!("[{done}/{total}]");
                    }
                }
            };
            // Kept alive like the worker's runs: a lost lock stops this run, too.
            let run = engine.sync_employee(&mut store, &kuerzel, &opts, &mut progress);
            let result = guard
                .hold_while(config.lock_ttl, run)
                .await
                .map_err(|lost| CliError::Calendar(lost.to_string()))?;
            let _ = guard.release().await;
            let report = result.map_err(|e| CliError::Calendar(handler_error(e).to_string()))?;
            println!("{}", report.summary());
        }
    }
    Ok(())
}

async fn documents(
    cmd: DocumentsCmd,
    config: &Config,
    queue: &crate::queue::Queue,
) -> Result<(), CliError> {
    use crate::handlers::documents::{self as docs, audit};
    use bitbylaw_core::ids::EspoId;

    match cmd {
        DocumentsCmd::Resync { id } => {
            let id =
                EspoId::new(&id).map_err(|e| CliError::Usage(format!("EspoCRM id {id:?}: {e}")))?;
            let jobs = docs::document_jobs(&[id.to_string()], "cli");
            for e in queue.enqueue(docs::TOPIC_UPDATE, jobs).await? {
                println!(
                    "{} {} job {}{}",
                    docs::TOPIC_UPDATE,
                    e.entity,
                    e.job_id,
                    if e.coalesced { " (coalesced)" } else { "" }
                );
            }
        }
        DocumentsCmd::Audit { entity } => {
            let only = entity
                .as_deref()
                .map(audit::parse_entity)
                .transpose()
                .map_err(CliError::Usage)?;
            if !docs::configured(config) {
                return Err(CliError::Documents(
                    "needs ESPOCRM_API_BASE_URL, XAI_API_KEY and XAI_MANAGEMENT_API_KEY".into(),
                ));
            }
            let sides = docs::build_sides(config).map_err(CliError::Documents)?;
            let report = audit::audit(&sides, &config.documents, only)
                .await
                .map_err(|e| CliError::Documents(e.to_string()))?;
            for f in &report.findings {
                println!("{f}");
            }
            println!(
                "{} entit(ies), {} linked document(s), {} difference(s)",
                report.entities,
                report.documents,
                report.findings.len()
            );
            if !report.findings.is_empty() {
                return Err(CliError::OutOfSync(report.findings.len()));
            }
        }
    }
    Ok(())
}

async fn beteiligte(
    cmd: BeteiligteCmd,
    config: &Config,
    queue: &crate::queue::Queue,
) -> Result<(), CliError> {
    use crate::handlers::beteiligte::{
        self as bet, engine::Engine, engine::EngineSettings, store::BeteiligteStore,
    };
    use crate::queue::NewJob;
    use bitbylaw_core::ids::EspoId;

    let fail = |e: &dyn std::fmt::Display| CliError::Beteiligte(e.to_string());
    let id_of = |raw: &str| {
        EspoId::new(raw).map_err(|e| CliError::Usage(format!("EspoCRM id {raw:?}: {e}")))
    };
    match cmd {
        BeteiligteCmd::Check => {
            let job = NewJob::new(
                "beteiligte-sync-check",
                serde_json::json!({"trigger": "cli"}),
            );
            for e in queue
                .enqueue(crate::topics::BETEILIGTE_SYNC_CHECK, vec![job])
                .await?
            {
                println!(
                    "{} job {}{}",
                    crate::topics::BETEILIGTE_SYNC_CHECK,
                    e.job_id,
                    if e.coalesced { " (coalesced)" } else { "" }
                );
            }
            return Ok(());
        }
        BeteiligteCmd::Status { json } => return beteiligte_status(config, json).await,
        _ => {}
    }
    if !bet::configured(config) {
        return Err(CliError::Beteiligte(
            "needs ADVOWARE_API_BASE_URL and ESPOCRM_API_BASE_URL".into(),
        ));
    }
    let sides = bet::build_sides(config, queue)
        .await
        .map_err(|e| fail(&e))?;
    let store = BeteiligteStore::new(queue.redis().conn().await?);
    match cmd {
        BeteiligteCmd::Sync { espo_id } => {
            let id = id_of(&espo_id)?;
            let settings = EngineSettings::from_config(&config.beteiligte);
            let engine = Engine {
                espo: sides.espo.as_ref(),
                advoware: sides.advoware.as_ref(),
                store: &store,
                settings: &settings,
            };
            let guard = Locks::new(queue.redis().clone())
                .try_acquire(bet::HANDLER, bet::LOCK_TYPE, id.as_str(), config.lock_ttl)
                .await?;
            let run = engine.sync_one(&id, chrono::Utc::now());
            let result = guard
                .hold_while(config.lock_ttl, run)
                .await
                .map_err(|lost| fail(&lost))?;
            let _ = guard.release().await;
            let outcome = result.map_err(|e| fail(&e))?;
            println!("{}: {outcome:?}", outcome.label());
            if let bet::engine::Outcome::InvalidData(reason) = outcome {
                return Err(CliError::Beteiligte(format!("invalid data: {reason}")));
            }
        }
        BeteiligteCmd::Audit { espo_id } => {
            let id = id_of(&espo_id)?;
            let report = bet::audit::audit(
                sides.espo.as_ref(),
                sides.advoware.as_ref(),
                &store,
                &id,
                &EngineSettings::from_config(&config.beteiligte),
            )
            .await
            .map_err(|e| fail(&e))?;
            // Issue 12 item 4: the Beteiligter's Bankverbindungen too.
            let report = crate::handlers::bankverbindungen::audit::with_bankverbindungen(
                report, config, queue, &id,
            )
            .await
            .map_err(|e| fail(&e))?;
            for line in &report.lines {
                println!("{line}");
            }
            if report.differences == 0 {
                println!("equal");
            } else {
                return Err(CliError::OutOfSync(report.differences));
            }
        }
        BeteiligteCmd::Reset { espo_id } => {
            let id = id_of(&espo_id)?;
            let reset = serde_json::to_value(crate::sync::beteiligte::StatusUpdate::reset())
                .unwrap_or_default();
            sides.espo.update(&id, &reset).await.map_err(|e| fail(&e))?;
            // A person has checked Advoware: a create whose answer was lost may be repeated.
            store.clear_creating(&id).await.map_err(|e| fail(&e))?;
            let job = NewJob::new(id.as_str(), serde_json::json!({"trigger": "cli"}));
            let enqueued = queue.enqueue(bet::TOPIC_UPDATE, vec![job]).await?;
            println!(
                "{id}: reset to failed (retry count 0); sync job {}",
                enqueued.first().map(|e| e.job_id.as_str()).unwrap_or("?")
            );
        }
        BeteiligteCmd::Check | BeteiligteCmd::Status { .. } => {}
    }
    Ok(())
}

/// `beteiligte status`: one `maxSize=1` list per status (EspoCRM answers the `total`).
async fn beteiligte_status(config: &Config, json: bool) -> Result<(), CliError> {
    use crate::clients::espocrm::{ClientSettings, EspoCrmClient, ListQuery, Order, Where};
    use crate::sync::beteiligte::model::espo_fields as f;
    use crate::sync::beteiligte::SyncStatus;

    let fail = |e: &dyn std::fmt::Display| CliError::Beteiligte(e.to_string());
    let espo = ClientSettings::from_settings(&config.espocrm)
        .and_then(EspoCrmClient::new)
        .map_err(|e| fail(&e))?;
    let mut counts = serde_json::Map::new();
    let queries = SyncStatus::ALL
        .iter()
        .map(|s| (s.as_str(), Where::equals(f::SYNC_STATUS, s.as_str())))
        .chain([("(none)", Where::is_null(f::SYNC_STATUS))]);
    for (name, filter) in queries {
        let q = ListQuery::new().filter(filter).select([f::SYNC_STATUS]);
        let (list, total) = espo
            .list_page::<serde_json::Value>(f::ENTITY, &q, 1, 0)
            .await
            .map_err(|e| fail(&e))?;
        counts.insert(name.into(), total.unwrap_or(list.len()).into());
    }
    let unclean = [
        SyncStatus::PendingSync,
        SyncStatus::Dirty,
        SyncStatus::Failed,
    ];
    let q = ListQuery::new()
        .filter(Where::is_in(f::SYNC_STATUS, unclean.map(|s| s.as_str())))
        .select([f::SYNC_STATUS, f::MODIFIED_AT])
        .order_by(f::MODIFIED_AT, Order::Asc);
    let (oldest, _) = espo
        .list_page::<serde_json::Value>(f::ENTITY, &q, 1, 0)
        .await
        .map_err(|e| fail(&e))?;
    let oldest = oldest.into_iter().next().map(|o| {
        serde_json::json!({"id": o["id"], "syncStatus": o[f::SYNC_STATUS], "modifiedAt": o[f::MODIFIED_AT]})
    });
    if json {
        print_json(&serde_json::json!({"counts": counts, "oldest_unclean": oldest}));
    } else {
        for (status, n) in &counts {
            println!("{status:<22} {n}");
        }
        match oldest {
            Some(o) => println!(
                "oldest unclean: {} ({}, modified {})",
                o["id"].as_str().unwrap_or("?"),
                o["syncStatus"].as_str().unwrap_or("?"),
                o["modifiedAt"].as_str().unwrap_or("?")
            ),
            None => println!("oldest unclean: none"),
        }
    }
    Ok(())
}
