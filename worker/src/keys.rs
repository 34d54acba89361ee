//! The one place that knows the Redis key layout. Everything the worker stores lives under `bbl:`.
//!
//! | key                                   | type       | holds                                             |
//! |---------------------------------------|------------|---------------------------------------------------|
//! | `bbl:q:{topic}`                       | stream     | queued and in-flight jobs of one topic (`job` field); entries are deleted on ack, acked leftovers trimmed by the retention pass |
//! | `bbl:topics`                          | set        | every topic that ever had a stream                |
//! | `bbl:delayed`                         | sorted set | job JSON scored by due time (ms): retries, lock waits |
//! | `bbl:dlq`                             | stream     | dead jobs: `job`, `error`, `failed_at`; capped by `retention.dlq_max_*` |
//! | `bbl:coalesce:{topic}:{entity}`       | string     | id of the queued, not yet started job of an entity (content-keyed jobs: kept as dedup marker) |
//! | `bbl:lock:{handler}:{type}:{id}`      | string     | owner token of an entity lock (with TTL)          |
//! | `bbl:schedule:{name}:{tick_epoch}`    | string     | marks a schedule tick as fired (SET NX)           |
//! | `bbl:seen:{topic}:{event_id}`         | string     | an enqueued gateway event, until its signature expires (replay guard) |
//! | `bbl:advoware:token:{user}`           | string     | Advoware bearer token of an API user (with TTL)   |
//! | `bbl:google:bucket`                   | hash       | the Google request token bucket shared by all workers (`tokens`, `at_ms`) |
//! | `bbl:google:backoff`                  | string     | ms timestamp until which nobody calls Google (after 403/429), with TTL |
//! | `bbl:cal:{kuerzel}:pairs`             | hash       | calendar sync state: `frNr` → pair JSON (ids and both content hashes) |
//! | `bbl:cal:{kuerzel}:tombstones`        | hash       | `frNr` → Advoware hash of appointments deliberately not recreated in Google |
//! | `bbl:cal:{kuerzel}:pending`           | hash       | Google event id → hash of events being created in Advoware |
//! | `bbl:cal:{kuerzel}:mirror`            | hash       | Google event id → event JSON, kept current by incremental lists |
//! | `bbl:cal:{kuerzel}:meta`              | hash       | `calendar_id`, `sync_token`, `last_sync_ms`, `last_result` |
//! | `bbl:cal:last_sync`                   | sorted set | Kürzel scored by the time of its last successful sync (ms) |
//! | `bbl:bet:{espoId}`                    | hash       | Beteiligte sync per record: `creating` (time of a `POST` whose answer is not recorded yet), `created` (Advoware `betNr` of a create not yet written back), `betnr` (linked at the last sync), `hash` (content hash after the last sync), `echo` (EspoCRM `modifiedAt` after our last status-only write) |
//! | `bbl:bank:{espoId}`                   | hash       | Bankverbindungen sync per `CBankverbindungen`: `beteiligte` (EspoCRM id of its Beteiligter), `betnr`, `konto` (linked Advoware id), `creating` (time of a `POST` whose answer is not recorded yet), `created` (Advoware id of a create not yet written back), `hash` (content hash after the last sync; never the IBAN) |
//! | `bbl:cal:failures`                    | sorted set | Kürzel scored by its calendar runs failed since its last success |
//! | `bbl:lead:{webhookId}`               | hash       | Vermieterhelden lead per submission (30 days): `intent` (ms of the first attempt), `record` (`Lead:<id>` / `Contact:<id>` written), `linked`, `followup`, `done` |
//! | `bbl:call:{key}`                      | hash       | 3CX call journal per reported call (30 days; key = hash of start, end, number, agent): `intent`, `record` (`Call:<id>`), `followup` (task written), `done` |
//! | `bbl:phone:{e164}`                    | string     | 3CX lookup index: the person the lookup answers for that number (`{entity, record}` JSON: id, names, company, e-mail, phone), 7 days |
//! | `bbl:3cx:call:{id}`                   | hash       | an outbound call placed through `POST /3cx/call` (1 day): `state` (`placing` before makecall, `placed`, `in_doubt` when 3CX never answered), `extension`, `participant`, `callid`, `lead`, `at_ms` |
//! | `bbl:3cx:bucket` / `bbl:3cx:backoff`  | hash / string | the outbound-call budget of all workers (`threecx.calls_per_minute`) and the pause after a 3CX 429 |
//! | `bbl:doc:{espoId}`                    | hash       | document sync per `CDokumente`: `upload` (`{hash, file}` of an upload not yet written back), `synced` (`{file, hash, collections}` after the last write-back; what a delete needs once the record is gone) |
//! | `bbl:xai:bucket`, `bbl:xai:backoff`   | hash, string | the xAI request gate shared by all workers; the backoff (ms timestamp, with TTL) is set from a 429's `Retry-After` so no worker calls xAI before it |
//! | `bbl:docfile:{fileId}`                | string     | the `CDokumente` id an uploaded xAI file belongs to (so an unlink, which no longer lists the document, still finds it in the collection) |
//! | `bbl:doccol:{entityType}:{espoId}`    | string     | the xAI collection created for an entity, recorded before the EspoCRM write-back |
//! | `bbl:test:*`                          | various    | bookkeeping of the `test.*` handlers              |

pub const PREFIX: &str = "bbl:";
/// Streams are `STREAM_PREFIX + topic`; the promote script builds keys from it.
pub const STREAM_PREFIX: &str = "bbl:q:";
pub const TOPICS: &str = "bbl:topics";
pub const DELAYED: &str = "bbl:delayed";
pub const DLQ: &str = "bbl:dlq";
pub const LOCK_PREFIX: &str = "bbl:lock:";

pub fn stream(topic: &str) -> String {
    format!("{STREAM_PREFIX}{topic}")
}

pub fn coalesce(topic: &str, entity: &str) -> String {
    format!("{PREFIX}coalesce:{topic}:{entity}")
}

pub fn lock(handler: &str, entity_type: &str, entity_id: &str) -> String {
    format!("{LOCK_PREFIX}{handler}:{entity_type}:{entity_id}")
}

pub fn lock_pattern() -> String {
    format!("{LOCK_PREFIX}*")
}

/// An enqueued gateway event (`X-Event-Id` of `topic`), kept for the signature tolerance window.
pub fn seen_event(topic: &str, event_id: &str) -> String {
    format!("{PREFIX}seen:{topic}:{event_id}")
}

pub fn schedule_tick(name: &str, tick_epoch: i64) -> String {
    format!("{PREFIX}schedule:{name}:{tick_epoch}")
}

/// The cached Advoware token of `user`, shared by all worker instances.
pub fn advoware_token(user: &str) -> String {
    format!("bbl:advoware:token:{user}")
}

/// The Google Calendar request budget of all workers together.
pub const GOOGLE_BUCKET: &str = "bbl:google:bucket";
/// Set after Google answered 403 `rateLimitExceeded` / 429: everybody waits until then.
pub const GOOGLE_BACKOFF: &str = "bbl:google:backoff";

/// The calendar sync's per-employee records; `part` is one of `pairs`, `tombstones`, `pending`,
/// `mirror`, `meta`.
pub fn calendar(kuerzel: &str, part: &str) -> String {
    format!("{PREFIX}cal:{kuerzel}:{part}")
}

/// Kürzel → time of the last successful calendar sync; orders `calendar.sync.all`.
pub const CALENDAR_LAST_SYNC: &str = "bbl:cal:last_sync";

/// The Beteiligte sync's record of one `CBeteiligte` (create intent, last synced content hash).
pub fn beteiligte(espo_id: &str) -> String {
    format!("{PREFIX}bet:{espo_id}")
}

/// Kürzel → calendar runs failed in a row (removed by a success); shared by all workers, so
/// `/metrics` reports the same streak whichever instance ran the employee.
pub const CALENDAR_FAILURES: &str = "bbl:cal:failures";

/// The leads handler's record of one submission, keyed by its Standard Webhooks `webhook-id`.
pub fn lead(idempotency_key: &str) -> String {
    format!("{PREFIX}lead:{idempotency_key}")
}

/// The 3CX call journal's record of one reported call (same steps as [`lead`]).
pub fn call(idempotency_key: &str) -> String {
    format!("{PREFIX}call:{idempotency_key}")
}

/// The Bankverbindungen sync's record of one `CBankverbindungen` (link, create intent, hash).
pub fn bankverbindung(espo_id: &str) -> String {
    format!("{PREFIX}bank:{espo_id}")
}

/// The `CBankverbindungen` ids waiting for a Beteiligter's `betnr` (a set, keyed by the
/// Beteiligter's EspoCRM id): the Beteiligte sync re-queues them after its create.
pub fn bank_waiting(beteiligte: &str) -> String {
    format!("{PREFIX}bank:waiting:{beteiligte}")
}

/// The 3CX lookup index entry of one E.164 number.
pub fn phone(e164: &str) -> String {
    format!("{PREFIX}phone:{e164}")
}

/// The xAI request gate (a token bucket whose backoff honours xAI's `Retry-After`).
pub const XAI_BUCKET: &str = "bbl:xai:bucket";
pub const XAI_BACKOFF: &str = "bbl:xai:backoff";

/// Document sync state of one `CDokumente` record.
pub fn document(espo_id: &str) -> String {
    format!("{PREFIX}doc:{espo_id}")
}

/// The document an uploaded xAI file belongs to.
pub fn document_file(file_id: &str) -> String {
    format!("{PREFIX}docfile:{file_id}")
}

/// The collection created for an entity (written before EspoCRM learns its id).
pub fn document_collection(entity_type: &str, espo_id: &str) -> String {
    format!("{PREFIX}doccol:{entity_type}:{espo_id}")
}

pub fn test(name: &str) -> String {
    format!("{PREFIX}test:{name}")
}

/// One outbound call placed through `POST /3cx/call` (its idempotency record and status handle).
pub fn threecx_call(id: &str) -> String {
    format!("{PREFIX}3cx:call:{id}")
}

/// The outbound-call budget of all workers (token bucket of [`crate::ratelimit`]).
pub const THREECX_CALL_BUCKET: &str = "bbl:3cx:bucket";
/// Set after 3CX answered 429: no outbound call until then.
pub const THREECX_CALL_BACKOFF: &str = "bbl:3cx:backoff";
