//! The topic catalogue: which topics exist, where they come from and what their payload looks like.
//!
//! Intake validates against it, the queue derives one stream per topic from it and `config check`
//! rejects overrides for topics that do not exist.

/// Where a topic's events come from, and so how intake turns a body into jobs.
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

pub const CALENDAR_SYNC_ALL: &str = "calendar.sync.all";
pub const CALENDAR_SYNC_EMPLOYEE: &str = "calendar.sync.employee";
pub const BETEILIGTE_SYNC_CHECK: &str = "vmh.beteiligte.sync_check";
pub const BETEILIGTE_CREATE: &str = "vmh.beteiligte.create";
pub const BETEILIGTE_UPDATE: &str = "vmh.beteiligte.update";
pub const BETEILIGTE_DELETE: &str = "vmh.beteiligte.delete";
pub const LEAD_RECEIVED: &str = "leads.vermieterhelden.received";
pub const CALL_REPORTED: &str = "telephony.call.reported";

/// Every production topic, in the order `queue stats` lists them.
pub const KNOWN_TOPICS: &[&str] = &[
    BETEILIGTE_CREATE,
    BETEILIGTE_UPDATE,
    BETEILIGTE_DELETE,
    "vmh.bankverbindungen.create",
    "vmh.bankverbindungen.update",
    "vmh.bankverbindungen.delete",
    "vmh.document.create",
    "vmh.document.update",
    "vmh.document.delete",
    LEAD_RECEIVED,
    CALL_REPORTED,
    CALENDAR_SYNC_ALL,
    CALENDAR_SYNC_EMPLOYEE,
    BETEILIGTE_SYNC_CHECK,
];

/// Classifies a topic name; `None` for names that are not topics at all.
pub fn kind(topic: &str) -> Option<TopicKind> {
    match topic {
        CALENDAR_SYNC_ALL | CALENDAR_SYNC_EMPLOYEE | BETEILIGTE_SYNC_CHECK => {
            Some(TopicKind::Internal)
        }
        LEAD_RECEIVED | CALL_REPORTED => Some(TopicKind::SingleObject),
        t if KNOWN_TOPICS.contains(&t) && t.starts_with("vmh.") => Some(TopicKind::EspoBatch),
        t if is_test_topic(t) => Some(TopicKind::Test),
        _ => None,
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
        assert_eq!(kind("vmh.unknown.create"), None);
        assert_eq!(kind("test."), None);
        assert!(!valid_entity_id("a b"));
        assert!(valid_entity_id("6745a1b2c3d4e5f60"));
    }
}
