//! The topic catalogue: which topics exist, where they come from and what their payload looks like.
//!
//! Intake validates against it, the queue derives one stream per topic from it and `config check`
//! rejects overrides for topics that do not exist.

use bitbylaw_core::topic::{self as core_topic, Topic};

/// How intake treats a topic: the catalogue's kinds ([`core_topic::TopicKind`]) plus the worker's
/// own `test.*` topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// EspoCRM webhook: body is a JSON array of objects with a string `id`; one job per entity.
    EspoBatch,
    /// One JSON object, one job; the entity key is the dedup key (leads, 3CX call reports).
    SingleObject,
    /// Produced inside the worker (schedules, manual triggers); refused on `POST /events`.
    Internal,
    /// `test.*` topics, accepted only when test handlers are enabled; JSON object, entity from `id`.
    Test,
}

impl From<core_topic::TopicKind> for TopicKind {
    fn from(k: core_topic::TopicKind) -> Self {
        match k {
            core_topic::TopicKind::EspoBatch => TopicKind::EspoBatch,
            core_topic::TopicKind::SingleObject => TopicKind::SingleObject,
            core_topic::TopicKind::Internal => TopicKind::Internal,
        }
    }
}

// Names for the topics the worker's code refers to; the list itself lives in `bitbylaw_core::topic`.
pub const CALENDAR_SYNC_ALL: &str = Topic::CalendarSyncAll.as_str();
pub const CALENDAR_SYNC_EMPLOYEE: &str = Topic::CalendarSyncEmployee.as_str();
pub const BETEILIGTE_SYNC_CHECK: &str = Topic::BeteiligteSyncCheck.as_str();
pub const BETEILIGTE_CREATE: &str = Topic::BeteiligteCreate.as_str();
pub const BETEILIGTE_UPDATE: &str = Topic::BeteiligteUpdate.as_str();
pub const BETEILIGTE_DELETE: &str = Topic::BeteiligteDelete.as_str();
pub const LEAD_RECEIVED: &str = Topic::LeadVermieterheldenReceived.as_str();
pub const CALL_REPORTED: &str = Topic::TelephonyCallReported.as_str();
pub const PHONE_INDEX_REFRESH: &str = Topic::TelephonyIndexRefresh.as_str();

/// Every production topic, in the order `queue stats` lists them (the catalogue's order).
pub const KNOWN_TOPICS: &[&str] = Topic::NAMES;

/// Classifies a topic name; `None` for names that are not topics at all.
pub fn kind(topic: &str) -> Option<TopicKind> {
    match topic.parse::<Topic>() {
        Ok(t) => Some(t.kind().into()),
        Err(_) if is_test_topic(topic) => Some(TopicKind::Test),
        Err(_) => None,
    }
}

/// `test.<name>` with a short, key-safe name.
pub fn is_test_topic(topic: &str) -> bool {
    topic.strip_prefix("test.").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 40
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    })
}

/// Entity ids end up in Redis keys and log lines; the one rule lives in core so that
/// `webhook_guard` judges EspoCRM batch entries exactly as intake does.
pub use bitbylaw_core::batch::is_valid_entity_id as valid_entity_id;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(kind("vmh.document.delete"), Some(TopicKind::EspoBatch));
        assert_eq!(kind("vmh.beteiligte.sync_check"), Some(TopicKind::Internal));
        assert_eq!(
            kind("telephony.call.reported"),
            Some(TopicKind::SingleObject)
        );
        assert_eq!(kind("test.record"), Some(TopicKind::Test));
        assert_eq!(
            kind("leads.vermieterhelden.received"),
            Some(TopicKind::SingleObject)
        );
        assert_eq!(kind("vmh.unknown.create"), None);
        assert_eq!(kind("test."), None);
        assert!(!valid_entity_id("a b"));
        assert!(valid_entity_id("6745a1b2c3d4e5f60"));
    }

    /// A topic added to the core catalogue is known to the worker with its kind, nothing more to edit.
    #[test]
    fn derives_from_core_catalogue() {
        assert_eq!(KNOWN_TOPICS.len(), Topic::ALL.len());
        for t in Topic::ALL {
            assert!(KNOWN_TOPICS.contains(&t.as_str()));
            assert_eq!(kind(t.as_str()), Some(t.kind().into()));
        }
    }
}
