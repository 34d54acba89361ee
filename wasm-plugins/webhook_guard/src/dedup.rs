//! The edge dedup memory's layout in shared data (pure; the host calls live
//! in `filter.rs`).
//!
//! # Layout and bound
//! Each route owns `dedup_slots` slots, a direct-mapped cache:
//!
//! ```text
//! key:   webhook_guard/dedup/<route>/<slot>        slot = index in 0..dedup_slots
//! value: <expiry unix secs> <topic> <dedup key>    ASCII, ≤ 20 + 1 + 128 + 1 + 64 bytes
//! ```
//!
//! The slot of an event is taken from its dedup key (a SHA-256, so uniform)
//! mixed with the topic. Writing an event into an occupied slot replaces the
//! older entry, so the memory per route never exceeds `dedup_slots` keys
//! (≤ ~300 bytes each with the zone's own overhead) no matter how many
//! distinct events arrive. The price of a collision is a *missed* edge
//! duplicate, never a false one: an entry only matches when topic and full
//! dedup key are equal and it has not expired. The worker deduplicates
//! authoritatively anyway.
//!
//! The first path segment selects the `shm_kv` zone in ngx_wasm_module:
//! keys go to zone `webhook_guard` (`nginx_wasm_shm_kv_webhook_guard`) when
//! it exists, else to the default zone (`nginx_wasm_shm_kv`).

/// Prefix of every key this filter writes.
pub const KEY_PREFIX: &str = "webhook_guard/dedup/";

/// One remembered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub expires_at: u64,
    pub topic: String,
    pub key: String,
}

impl Entry {
    /// Whether this entry proves that (`topic`, `key`) was accepted within
    /// the window at time `now` (unix seconds).
    pub fn matches(&self, topic: &str, key: &str, now: u64) -> bool {
        now < self.expires_at && self.topic == topic && self.key == key
    }

    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {} {}", self.expires_at, self.topic, self.key).into_bytes()
    }

    /// Parses stored bytes; anything unexpected is `None` (treated as empty).
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, ' ');
        let expires_at = parts.next()?.parse().ok()?;
        let topic = parts.next()?.to_owned();
        let key = parts.next()?.to_owned();
        (!topic.is_empty() && !key.is_empty()).then_some(Entry {
            expires_at,
            topic,
            key,
        })
    }
}

/// The slot (0..`slots`) of an event.
pub fn slot_index(dedup_key_hex: &str, topic: &str, slots: u32) -> u32 {
    // FNV-1a over topic and key: cheap, and the key part is already uniform.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes().chain([0u8]).chain(dedup_key_hex.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // `slots` ≥ 1 is guaranteed by the configuration; guard anyway.
    (h % u64::from(slots.max(1))) as u32
}

/// The shared-data key of a slot.
pub fn slot_key(route: &str, slot: u32) -> String {
    format!("{KEY_PREFIX}{route}/{slot}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_matching() {
        let e = Entry {
            expires_at: 1_700_000_600,
            topic: "vmh.beteiligte.update".into(),
            key: "ab".repeat(32),
        };
        let d = Entry::decode(&e.encode()).unwrap();
        assert_eq!(d, e);
        assert!(d.matches("vmh.beteiligte.update", &"ab".repeat(32), 1_700_000_599));
        assert!(!d.matches("vmh.beteiligte.update", &"ab".repeat(32), 1_700_000_600));
        assert!(!d.matches("vmh.beteiligte.create", &"ab".repeat(32), 0));
        assert!(!d.matches("vmh.beteiligte.update", &"cd".repeat(32), 0));
        assert_eq!(Entry::decode(b""), None);
        assert_eq!(Entry::decode(b"x a b"), None);
        assert_eq!(Entry::decode(b"1 a"), None);
        assert_eq!(Entry::decode(&[0xff, 0x20]), None);
    }

    #[test]
    fn slots_are_in_range_and_spread() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let key = format!("{i:064x}");
            let s = slot_index(&key, "t", 64);
            assert!(s < 64);
            seen.insert(s);
        }
        assert!(seen.len() > 56);
        assert_eq!(slot_index("ab", "t", 0), 0);
        assert_eq!(slot_key("espocrm", 7), "webhook_guard/dedup/espocrm/7");
    }
}
