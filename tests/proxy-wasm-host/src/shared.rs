//! State shared by every VM instance of a host: the test clock, `shm_kv` zones,
//! metrics, and captured logs.
//!
//! In nginx each worker process runs its own VM instances, and what they share
//! lives in shared memory: key/value zones (`nginx_wasm_shm_kv*`, docs/DIRECTIVES.md)
//! and the metrics zone (docs/METRICS.md). Here workers are threads and the shared
//! memory is a mutex-protected map, so races between "workers" are real races.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

use crate::abi::LogLevel;

/// Where the host's time comes from. Tests use `Manual` so that token expiry,
/// dedup windows and ticks are driven exactly; gateway mode uses `System`.
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at the current wall time.
    pub fn manual() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock::Manual(Arc::new(AtomicU64::new(now.as_nanos() as u64)))
    }

    /// A manual clock starting at the given unix time in nanoseconds.
    pub fn manual_at(unix_nanos: u64) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(unix_nanos)))
    }

    pub fn now_nanos(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward; a system clock cannot be moved.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        }
    }

    pub fn is_manual(&self) -> bool {
        matches!(self, Clock::Manual(_))
    }
}

/// One `shm_kv` entry: value plus the CAS counter a `get` hands out.
#[derive(Clone, Debug)]
struct KvEntry {
    value: Vec<u8>,
    cas: u32,
}

/// Outcome of `set_shared_data`, mapped to ABI status codes by the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum KvSet {
    Ok,
    CasMismatch,
    /// No zone for the key's `NAME/` prefix (ngx_wasm_module traps).
    NoZone,
}

/// The key/value zones. Keys `NAME/rest` go to zone `NAME` when such a zone is
/// configured, everything else to the default zone (`nginx_wasm_shm_kv`), as in
/// ngx_wasm_module's `ngx_proxy_wasm_properties`/`shm_kv` lookup.
#[derive(Debug, Default)]
pub struct SharedKv {
    default_zone: bool,
    named: Vec<String>,
    entries: HashMap<(String, String), KvEntry>,
    next_cas: u32,
}

impl SharedKv {
    pub fn new(default_zone: bool, named: Vec<String>) -> Self {
        SharedKv {
            default_zone,
            named,
            entries: HashMap::new(),
            next_cas: 1,
        }
    }

    fn zone_of(&self, key: &str) -> Option<String> {
        if let Some((prefix, _)) = key.split_once('/') {
            if self.named.iter().any(|z| z == prefix) {
                return Some(prefix.to_string());
            }
        }
        self.default_zone.then(|| "*".to_string())
    }

    /// `None` zone → trap; `Some(None)` → key missing.
    pub fn get(&self, key: &str) -> Option<Option<(Vec<u8>, u32)>> {
        let zone = self.zone_of(key)?;
        Some(
            self.entries
                .get(&(zone, key.to_string()))
                .map(|e| (e.value.clone(), e.cas)),
        )
    }

    /// `cas == 0` succeeds only when the key does not exist yet (ngx_wasm_module
    /// semantics); otherwise the cas must match the one from the last `get`.
    pub fn set(&mut self, key: &str, value: &[u8], cas: u32) -> KvSet {
        let Some(zone) = self.zone_of(key) else {
            return KvSet::NoZone;
        };
        let slot = (zone, key.to_string());
        match (self.entries.get(&slot), cas) {
            (Some(_), 0) => return KvSet::CasMismatch,
            (Some(e), c) if e.cas != c => return KvSet::CasMismatch,
            (None, c) if c != 0 => return KvSet::CasMismatch,
            _ => {}
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.entries.insert(
            slot,
            KvEntry {
                value: value.to_vec(),
                cas: self.next_cas,
            },
        );
        KvSet::Ok
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A metric as the filter defined it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum MetricValue {
    Counter(u64),
    Gauge(i64),
    Histogram {
        count: u64,
        sum: u64,
        values: Vec<u64>,
    },
}

/// Metrics live in shared memory in ngx_wasm_module and are named
/// `pw:{filter}:{name}` (docs/METRICS.md); ids are stable per name.
#[derive(Debug, Default)]
pub struct Metrics {
    by_name: BTreeMap<String, (u32, MetricValue)>,
    names: Vec<String>,
}

impl Metrics {
    pub fn define(&mut self, full_name: String, kind: i32) -> Option<u32> {
        if let Some((id, _)) = self.by_name.get(&full_name) {
            return Some(*id);
        }
        let value = match kind {
            crate::abi::metric::COUNTER => MetricValue::Counter(0),
            crate::abi::metric::GAUGE => MetricValue::Gauge(0),
            crate::abi::metric::HISTOGRAM => MetricValue::Histogram {
                count: 0,
                sum: 0,
                values: Vec::new(),
            },
            _ => return None,
        };
        let id = self.names.len() as u32 + 1;
        self.names.push(full_name.clone());
        self.by_name.insert(full_name, (id, value));
        Some(id)
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut MetricValue> {
        let name = self.names.get((id as usize).checked_sub(1)?)?;
        self.by_name.get_mut(name).map(|(_, v)| v)
    }

    pub fn increment(&mut self, id: u32, by: i64) -> bool {
        match self.get_mut(id) {
            Some(MetricValue::Counter(c)) => {
                *c = c.saturating_add_signed(by);
                true
            }
            Some(MetricValue::Gauge(g)) => {
                *g = g.saturating_add(by);
                true
            }
            _ => false,
        }
    }

    pub fn record(&mut self, id: u32, value: i64) -> bool {
        match self.get_mut(id) {
            Some(MetricValue::Counter(c)) => *c = value.max(0) as u64,
            Some(MetricValue::Gauge(g)) => *g = value,
            Some(MetricValue::Histogram { count, sum, values }) => {
                *count += 1;
                *sum = sum.saturating_add(value.max(0) as u64);
                values.push(value.max(0) as u64);
            }
            None => return false,
        }
        true
    }

    pub fn get(&self, id: u32) -> Option<u64> {
        let name = self.names.get((id as usize).checked_sub(1)?)?;
        match &self.by_name.get(name)?.1 {
            MetricValue::Counter(c) => Some(*c),
            MetricValue::Gauge(g) => Some(*g as u64),
            MetricValue::Histogram { .. } => None,
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, MetricValue> {
        self.by_name
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }
}

/// One captured log line: what a filter wrote with `proxy_log` or to WASI stdout/stderr,
/// plus the host's own error lines (traps, refused calls), as nginx's error.log would show.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    pub worker: usize,
    pub filter: String,
    pub level: LogLevel,
    pub message: String,
}

/// Everything the workers share.
#[derive(Debug)]
pub struct Shared {
    pub clock: Clock,
    pub kv: Mutex<SharedKv>,
    pub metrics: Mutex<Metrics>,
    pub logs: Mutex<Vec<LogRecord>>,
    pub echo_logs: bool,
}

impl Shared {
    pub fn log(&self, worker: usize, filter: &str, level: LogLevel, message: String) {
        if self.echo_logs {
            eprintln!("[wasm] [{level:?}] worker={worker} filter={filter}: {message}");
        }
        self.logs.lock().push(LogRecord {
            worker,
            filter: filter.to_string(),
            level,
            message,
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn cas_zero_only_inserts() {
        let mut kv = SharedKv::new(true, vec![]);
        assert_eq!(kv.set("k", b"1", 0), KvSet::Ok);
        assert_eq!(kv.set("k", b"2", 0), KvSet::CasMismatch);
        let (_, cas) = kv.get("k").flatten().unwrap();
        assert_eq!(kv.set("k", b"2", cas), KvSet::Ok);
        assert_eq!(kv.set("k", b"3", cas), KvSet::CasMismatch);
        assert_eq!(kv.get("k").flatten().unwrap().0, b"2");
    }

    #[test]
    fn keys_without_zone_trap() {
        let mut kv = SharedKv::new(false, vec!["tokens".into()]);
        assert_eq!(kv.set("other/k", b"1", 0), KvSet::NoZone);
        assert!(kv.get("x").is_none());
        assert_eq!(kv.set("tokens/k", b"1", 0), KvSet::Ok);
    }
}
