//! Prometheus metrics (text format on `GET /metrics`). Counters are per process; queue gauges are
//! read from Redis at scrape time, so every instance reports the same, current depth.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::queue::{DlqStats, Queue, TopicStats};

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

/// A Redis stream by key (`bbl:q:{topic}`, `bbl:dlq`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DepthLabel {
    pub topic: String,
    pub state: String,
}

/// Calendar sync counters: `kind` is a write kind (`create_google`, …), a conflict
/// resolution, or a run outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CalendarLabel {
    pub kind: String,
}

/// Beteiligte sync runs: `outcome` is the engine's outcome label (`created`, `no_change`, …)
/// or a failure class (`retryable`, `permanent`, `lock_lost`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// The record type an EspoCRM notification points to (`CBeteiligte`, …; `none` without one).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelatedLabel {
    pub related: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KuerzelLabel {
    pub kuerzel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabel {
    pub schedule: String,
}

type HistogramFamily = Family<TopicLabel, Histogram, fn() -> Histogram>;

/// A sorted set read `WITHSCORES`: member and score.
type Scores = Vec<(String, f64)>;

fn duration_histogram() -> Histogram {
    // 1 ms … ~32 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub received: Family<TopicLabel, Counter>,
    pub rejected: Family<ReasonLabel, Counter>,
    pub enqueued: Family<TopicLabel, Counter>,
    pub coalesced: Family<TopicLabel, Counter>,
    pub batch_entries_skipped: Family<TopicLabel, Counter>,
    pub processed: Family<TopicLabel, Counter>,
    pub failed: Family<TopicLabel, Counter>,
    pub retried: Family<TopicLabel, Counter>,
    pub dead_lettered: Family<TopicLabel, Counter>,
    pub reclaimed: Family<TopicLabel, Counter>,
    pub ownership_lost: Family<TopicLabel, Counter>,
    pub retention_trimmed: Family<StreamLabel, Counter>,
    pub consumers_deleted: Counter,
    pub lock_contention: Family<TopicLabel, Counter>,
    pub schedule_fired: Family<ScheduleLabel, Counter>,
    pub handler_duration: HistogramFamily,
    pub queue_depth: Family<DepthLabel, Gauge>,
    pub oldest_job_age: Family<TopicLabel, F64Gauge>,
    pub stream_length: Family<TopicLabel, Gauge>,
    pub stream_oldest_entry_age: Family<TopicLabel, F64Gauge>,
    pub dlq_depth: Gauge,
    pub dlq_oldest_entry_age: F64Gauge,
    pub redis_up: Gauge,
    pub calendar_runs: Family<CalendarLabel, Counter>,
    pub calendar_writes: Family<CalendarLabel, Counter>,
    pub calendar_conflicts: Counter,
    pub calendar_skipped: Counter,
    /// Advoware calls whose configured path does not fit (405, …), from every sync: the
    /// process-wide [`crate::clients::advoware::ENDPOINT_MISMATCHES`].
    pub advoware_endpoint_mismatches: Counter,
    /// EspoCRM notifications the syncs sent to people (something for a person to look at), the
    /// process-wide [`crate::clients::espocrm::NOTIFICATIONS_SENT`].
    pub notifications_sent: Family<RelatedLabel, Counter>,
    /// Per employee, from Redis at scrape time (shared by all instances).
    pub calendar_last_success: Family<KuerzelLabel, Gauge>,
    pub calendar_failures_in_a_row: Family<KuerzelLabel, Gauge>,
    /// Google requests this instance took from the shared budget, and the budget itself.
    pub google_requests_granted: Counter,
    pub google_budget_per_minute: Gauge,
    /// This instance's consumer loops: running and expected (one per handled topic).
    pub consumers_running: Gauge,
    pub consumers_expected: Gauge,
    pub beteiligte_runs: Family<OutcomeLabel, Counter>,
    /// Document sync and collection-manager runs by outcome.
    pub documents_runs: Family<OutcomeLabel, Counter>,
    /// Bankverbindungen sync runs by outcome.
    pub bankverbindungen_runs: Family<OutcomeLabel, Counter>,
    /// 3CX contact lookups by outcome.
    pub threecx_lookups: Family<OutcomeLabel, Counter>,
    /// Outbound calls (`POST /3cx/call`) by outcome.
    pub threecx_calls: Family<OutcomeLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bitbylaw_worker");
        let m = Self {
            received: Family::default(),
            rejected: Family::default(),
            enqueued: Family::default(),
            coalesced: Family::default(),
            batch_entries_skipped: Family::default(),
            processed: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            reclaimed: Family::default(),
            ownership_lost: Family::default(),
            retention_trimmed: Family::default(),
            consumers_deleted: Counter::default(),
            lock_contention: Family::default(),
            schedule_fired: Family::default(),
            handler_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            queue_depth: Family::default(),
            oldest_job_age: Family::default(),
            stream_length: Family::default(),
            stream_oldest_entry_age: Family::default(),
            dlq_depth: Gauge::default(),
            dlq_oldest_entry_age: F64Gauge::default(),
            redis_up: Gauge::default(),
            calendar_runs: Family::default(),
            calendar_writes: Family::default(),
            calendar_conflicts: Counter::default(),
            calendar_skipped: Counter::default(),
            advoware_endpoint_mismatches: crate::clients::advoware::ENDPOINT_MISMATCHES.clone(),
            notifications_sent: crate::clients::espocrm::NOTIFICATIONS_SENT.clone(),
            calendar_last_success: Family::default(),
            calendar_failures_in_a_row: Family::default(),
            google_requests_granted: Counter::default(),
            google_budget_per_minute: Gauge::default(),
            consumers_running: Gauge::default(),
            consumers_expected: Gauge::default(),
            beteiligte_runs: Family::default(),
            documents_runs: Family::default(),
            bankverbindungen_runs: Family::default(),
            threecx_lookups: Family::default(),
            threecx_calls: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "calendar_sync_runs",
            "Per-employee calendar sync runs by outcome (ok, retryable, permanent, outage, lock_lost)",
            m.calendar_runs.clone(),
        );
        registry.register(
            "calendar_sync_writes",
            "Calendar writes by kind (create_google, update_advoware, ...)",
            m.calendar_writes.clone(),
        );
        registry.register(
            "calendar_sync_conflicts",
            "Appointments changed on both sides (or changed on one, deleted on the other)",
            m.calendar_conflicts.clone(),
        );
        registry.register(
            "calendar_sync_skipped",
            "Appointments or events that cannot be mapped and were left alone",
            m.calendar_skipped.clone(),
        );
        registry.register(
            "advoware_endpoint_mismatches",
            "Advoware calls answered 405 (or an impossible 404): a configured Advoware path (calendar, Beteiligte, Bankverbindungen) does not fit",
            m.advoware_endpoint_mismatches.clone(),
        );
        registry.register(
            "notifications_sent",
            "EspoCRM notifications the syncs sent to people (conflicts, manual tasks, lost creates, deletions), by the record type they point to",
            m.notifications_sent.clone(),
        );
        registry.register(
            "calendar_sync_last_success_timestamp_seconds",
            "Unix time of each employee's last successful calendar sync",
            m.calendar_last_success.clone(),
        );
        registry.register(
            "calendar_sync_failures_in_a_row",
            "Calendar runs of each employee failed since its last success",
            m.calendar_failures_in_a_row.clone(),
        );
        registry.register(
            "google_requests_granted",
            "Google Calendar requests this instance took from the shared budget",
            m.google_requests_granted.clone(),
        );
        registry.register(
            "google_budget_requests_per_minute",
            "The shared Google request budget (GOOGLE_CALENDAR_REQUESTS_PER_MINUTE)",
            m.google_budget_per_minute.clone(),
        );
        registry.register(
            "consumers_running",
            "Consumer loops of this instance connected to Redis",
            m.consumers_running.clone(),
        );
        registry.register(
            "consumers_expected",
            "Consumer loops this instance should run (one per topic with a handler)",
            m.consumers_expected.clone(),
        );
        registry.register(
            "beteiligte_sync_runs",
            "Beteiligte sync runs by outcome (created, espocrm_newer, advoware_newer, no_change, conflict, deleted_in_advoware, skipped, invalid_data, create_uncertain, details, unlinked, retryable, permanent, lock_lost)",
            m.beteiligte_runs.clone(),
        );
        registry.register(
            "documents_sync_runs",
            "Document sync and collection runs by outcome (uploaded, resumed, relinked, up_to_date, no_collections, removed, collection_exists, collection_created, collection_removed_closed, collection_removed_deleted, collection_kept, retryable, permanent, lock_lost)",
            m.documents_runs.clone(),
        );
        registry.register(
            "bankverbindungen_sync_runs",
            "Bankverbindungen sync runs by outcome (created, adopted, wrote_advoware, wrote_espocrm, no_change, deleted_in_advoware, invalid_data, skipped, deleted, delete_refused, not_linked, waiting_for_betnr, retryable, permanent, lock_lost)",
            m.bankverbindungen_runs.clone(),
        );
        registry.register(
            "threecx_lookups",
            "3CX contact lookups by outcome (hit_index, hit_crm, miss, deadline, error, no_crm, unusable_number, unauthorized)",
            m.threecx_lookups.clone(),
        );
        registry.register(
            "threecx_calls",
            "Outbound calls through the 3CX Call Control API by outcome (placed, replayed, busy, invalid_number, unknown_extension, rate_limited, unavailable, in_doubt, unauthorized, error)",
            m.threecx_calls.clone(),
        );
        registry.register(
            "events_received",
            "Signed, valid events accepted by intake",
            m.received.clone(),
        );
        registry.register(
            "events_rejected",
            "Requests refused by intake, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "jobs_enqueued",
            "New jobs written to the queue",
            m.enqueued.clone(),
        );
        registry.register(
            "jobs_coalesced",
            "Events absorbed into an already queued job",
            m.coalesced.clone(),
        );
        registry.register(
            "batch_entries_skipped",
            "Unusable entries of accepted EspoCRM batches (reported in the 202 body, not enqueued)",
            m.batch_entries_skipped.clone(),
        );
        registry.register(
            "jobs_processed",
            "Jobs whose handler succeeded",
            m.processed.clone(),
        );
        registry.register(
            "jobs_failed",
            "Handler attempts that failed",
            m.failed.clone(),
        );
        registry.register(
            "jobs_retried",
            "Failed jobs scheduled for another attempt",
            m.retried.clone(),
        );
        registry.register(
            "jobs_dead_lettered",
            "Jobs moved to the dead-letter stream",
            m.dead_lettered.clone(),
        );
        registry.register(
            "jobs_reclaimed",
            "Jobs taken over from a dead consumer",
            m.reclaimed.clone(),
        );
        registry.register(
            "jobs_ownership_lost",
            "Jobs this instance stopped (or whose outcome it dropped) because another consumer had reclaimed them",
            m.ownership_lost.clone(),
        );
        registry.register(
            "retention_trimmed",
            "Entries removed from a stream by the retention limits (acked entries, old dead jobs)",
            m.retention_trimmed.clone(),
        );
        registry.register(
            "consumers_deleted",
            "Idle consumers without pending jobs removed from the consumer group",
            m.consumers_deleted.clone(),
        );
        registry.register(
            "lock_contention",
            "Jobs delayed because their entity lock was busy",
            m.lock_contention.clone(),
        );
        registry.register(
            "schedule_fired",
            "Schedule ticks fired by this instance",
            m.schedule_fired.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "Handler run time",
            m.handler_duration.clone(),
        );
        registry.register(
            "queue_depth",
            "Jobs per topic and state (queued, in_flight, delayed)",
            m.queue_depth.clone(),
        );
        registry.register(
            "oldest_job_age_seconds",
            "Age of the oldest job in each topic's stream",
            m.oldest_job_age.clone(),
        );
        registry.register(
            "stream_length",
            "Entries in each topic's stream (queued and in flight)",
            m.stream_length.clone(),
        );
        registry.register(
            "stream_oldest_entry_age_seconds",
            "Age of the oldest entry of each topic's stream (0 when empty): how long job data has been kept",
            m.stream_oldest_entry_age.clone(),
        );
        registry.register(
            "dlq_depth",
            "Jobs in the dead-letter stream",
            m.dlq_depth.clone(),
        );
        registry.register(
            "dlq_oldest_entry_age_seconds",
            "Age of the oldest dead job (0 when none)",
            m.dlq_oldest_entry_age.clone(),
        );
        registry.register(
            "redis_up",
            "1 if the last scrape could read Redis",
            m.redis_up.clone(),
        );
        Self { registry, ..m }
    }

    pub fn topic(topic: &str) -> TopicLabel {
        TopicLabel {
            topic: topic.to_string(),
        }
    }

    pub fn stream(key: &str) -> StreamLabel {
        StreamLabel {
            stream: key.to_string(),
        }
    }

    /// Counts one Beteiligte run with `outcome`.
    pub fn beteiligte_run(&self, outcome: &str) {
        self.beteiligte_runs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one document sync or collection run with `outcome`.
    pub fn documents_run(&self, outcome: &str) {
        self.documents_runs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one Bankverbindungen run with `outcome`.
    pub fn bankverbindungen_run(&self, outcome: &str) {
        self.bankverbindungen_runs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one 3CX lookup with `outcome`.
    pub fn threecx_lookup(&self, outcome: &str) {
        self.threecx_lookups
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one outbound call request with `outcome`.
    pub fn threecx_call(&self, outcome: &str) {
        self.threecx_calls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    fn set_stats(&self, stats: &[TopicStats]) {
        for s in stats {
            let queued = s.stream_len.saturating_sub(s.in_flight);
            for (state, v) in [
                ("queued", queued),
                ("in_flight", s.in_flight),
                ("delayed", s.delayed),
            ] {
                self.queue_depth
                    .get_or_create(&DepthLabel {
                        topic: s.topic.clone(),
                        state: state.into(),
                    })
                    .set(v as i64);
            }
            self.oldest_job_age
                .get_or_create(&Self::topic(&s.topic))
                .set(s.oldest_age_secs.unwrap_or(0.0));
            self.stream_length
                .get_or_create(&Self::topic(&s.topic))
                .set(s.stream_len as i64);
            self.stream_oldest_entry_age
                .get_or_create(&Self::topic(&s.topic))
                .set(s.oldest_entry_age_secs.unwrap_or(0.0));
        }
    }

    /// Sets the consumer gauges (from [`crate::ops::health::Health::consumers`]).
    pub fn set_consumers(&self, (running, expected): (usize, usize)) {
        self.consumers_running.set(running as i64);
        self.consumers_expected.set(expected as i64);
    }

    /// Refreshes the queue gauges from Redis, then renders everything.
    pub async fn render(&self, queue: &Queue) -> String {
        let refreshed = tokio::time::timeout(queue.redis().timeout(), async {
            let stats = queue.stats().await?;
            let dlq = queue.dlq_stats().await?;
            let mut conn = queue.redis().conn().await?;
            let mut per_employee = redis::pipe();
            for key in [
                crate::keys::CALENDAR_LAST_SYNC,
                crate::keys::CALENDAR_FAILURES,
            ] {
                per_employee
                    .cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES");
            }
            let (synced, failures): (Scores, Scores) = per_employee
                .query_async(&mut conn)
                .await
                .map_err(crate::queue::QueueError::from)?;
            Ok::<_, crate::queue::QueueError>((stats, dlq, synced, failures))
        })
        .await;
        match refreshed {
            Ok(Ok((
                stats,
                DlqStats {
                    len,
                    oldest_entry_age_secs,
                },
                synced,
                failures,
            ))) => {
                self.set_stats(&stats);
                self.dlq_depth.set(len as i64);
                self.dlq_oldest_entry_age
                    .set(oldest_entry_age_secs.unwrap_or(0.0));
                // A success removes the employee from the failure set: its streak is 0 again.
                self.calendar_failures_in_a_row.clear();
                for (kuerzel, ms) in synced {
                    let label = KuerzelLabel { kuerzel };
                    self.calendar_failures_in_a_row.get_or_create(&label).set(0);
                    self.calendar_last_success
                        .get_or_create(&label)
                        .set((ms / 1000.0) as i64);
                }
                for (kuerzel, n) in failures {
                    self.calendar_failures_in_a_row
                        .get_or_create(&KuerzelLabel { kuerzel })
                        .set(n as i64);
                }
                self.redis_up.set(1);
            }
            _ => {
                self.redis_up.set(0);
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
