//! Event topics.
//!
//! Topics are dot-separated lowercase names (`[a-z0-9._-]{1,128}`, the same
//! rule as the gateway signature's `X-Event-Topic`). [`Topic`] lists the
//! topics this system knows; webhook routes produce them from a template
//! such as `vmh.beteiligte.{action}` filled from the request path with
//! [`fill_topic_template`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::gateway::is_valid_topic;

/// Errors of topic parsing and template filling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not one of the known topics.
    #[error("unknown topic {0:?}")]
    Unknown(String),
    /// The template has unbalanced braces or an empty/invalid placeholder.
    #[error("invalid topic template")]
    InvalidTemplate,
    /// The path pattern is not `/`-separated literals and `{name}` segments.
    #[error("invalid path pattern")]
    InvalidPattern,
    /// The template names a placeholder the pattern does not capture.
    #[error("template placeholder {0:?} is not in the path pattern")]
    UnknownPlaceholder(String),
    /// The request path does not match the pattern.
    #[error("request path does not match the pattern")]
    PathMismatch,
    /// A captured segment is not `[a-z0-9_-]+`.
    #[error("path segment for {0:?} is not [a-z0-9_-]+")]
    InvalidSegment(String),
    /// The filled topic is not `[a-z0-9._-]{1,128}`.
    #[error("resulting topic is invalid")]
    InvalidTopic,
    /// Credentials are bound to actions, but the pattern has no `{action}`.
    #[error("path pattern has no {{action}} placeholder")]
    NoActionPlaceholder,
    /// The pattern captures another placeholder besides `{action}`: a
    /// credential bound to an action could then reach other topics.
    #[error("path pattern placeholder {0:?} is not {{action}}: an action binding would not fix the topic")]
    NotOnlyAction(String),
}

/// Where a topic's events come from, and so how intake turns a body into jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// EspoCRM webhook: the body is a JSON array of objects with a string `id`; one job per entity.
    EspoBatch,
    /// One JSON object, one job (leads, 3CX call reports).
    SingleObject,
    /// Produced by the system itself (schedules, manual triggers), never by an outside sender.
    Internal,
}

/// The one topic catalogue: a topic is added here, with its kind, and the
/// filters (via this crate) and the worker (`worker::topics`) both derive
/// their lists from it.
macro_rules! topics {
    ($($variant:ident => $name:literal, $kind:ident;)*) => {
        /// The event topics this system knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Topic {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl Topic {
            /// Every known topic, in catalogue order.
            pub const ALL: &'static [Topic] = &[$(Topic::$variant),*];

            /// Every known topic's name, in catalogue order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The topic's name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Topic::$variant => $name,)*
                }
            }

            /// Where the topic's events come from.
            pub const fn kind(self) -> TopicKind {
                match self {
                    $(Topic::$variant => TopicKind::$kind,)*
                }
            }

            /// Whether only the system itself emits it (schedules, manual
            /// triggers), never an outside sender.
            pub fn is_internal(self) -> bool {
                self.kind() == TopicKind::Internal
            }
        }

        impl FromStr for Topic {
            type Err = TopicError;
            fn from_str(s: &str) -> Result<Self, TopicError> {
                match s {
                    $($name => Ok(Topic::$variant),)*
                    _ => Err(TopicError::Unknown(s.to_owned())),
                }
            }
        }
    };
}

topics! {
    BeteiligteCreate => "vmh.beteiligte.create", EspoBatch;
    BeteiligteUpdate => "vmh.beteiligte.update", EspoBatch;
    BeteiligteDelete => "vmh.beteiligte.delete", EspoBatch;
    BankverbindungenCreate => "vmh.bankverbindungen.create", EspoBatch;
    BankverbindungenUpdate => "vmh.bankverbindungen.update", EspoBatch;
    BankverbindungenDelete => "vmh.bankverbindungen.delete", EspoBatch;
    DocumentCreate => "vmh.document.create", EspoBatch;
    DocumentUpdate => "vmh.document.update", EspoBatch;
    DocumentDelete => "vmh.document.delete", EspoBatch;
    EntityLink => "vmh.entity.link", EspoBatch;
    EntityUnlink => "vmh.entity.unlink", EspoBatch;
    LeadVermieterheldenReceived => "leads.vermieterhelden.received", SingleObject;
    TelephonyCallReported => "telephony.call.reported", SingleObject;
    CalendarSyncAll => "calendar.sync.all", Internal;
    CalendarSyncEmployee => "calendar.sync.employee", Internal;
    BeteiligteSyncCheck => "vmh.beteiligte.sync_check", Internal;
    TelephonyIndexRefresh => "telephony.index.refresh", Internal;
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Topic {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn is_segment_value(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

fn placeholder_name(segment: &str) -> Option<&str> {
    let name = segment.strip_prefix('{')?.strip_suffix('}')?;
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some(name)
}

/// Fills `template` (e.g. `vmh.beteiligte.{action}`) with the segments that
/// `path` (e.g. `/vmh/webhook/beteiligte/update`) has where `path_pattern`
/// (e.g. `/vmh/webhook/beteiligte/{action}`) has placeholders.
///
/// - A pattern segment is either a literal (matched exactly) or a whole
///   `{name}` placeholder (`name` = ASCII letters, digits, `_`), which
///   matches one path segment of `[a-z0-9_-]+`.
/// - A query string (`?…`) on `path` is ignored, as is one trailing `/`.
/// - Every `{name}` in the template must be captured by the pattern; the
///   result must be a valid topic (`[a-z0-9._-]{1,128}`). The result need
///   not be a known [`Topic`]: check with `parse::<Topic>()` if required.
pub fn fill_topic_template(
    template: &str,
    path: &str,
    path_pattern: &str,
) -> Result<String, TopicError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let trim = |s: &'_ str| -> String {
        if s.len() > 1 {
            s.strip_suffix('/').unwrap_or(s).to_owned()
        } else {
            s.to_owned()
        }
    };
    let path = trim(path);
    let pattern = trim(path_pattern);

    let pattern_segments: Vec<&str> = pattern.split('/').collect();
    let path_segments: Vec<&str> = path.split('/').collect();
    let mut captures: Vec<(&str, &str)> = Vec::new();
    for seg in &pattern_segments {
        if seg.contains('{') || seg.contains('}') {
            let name = placeholder_name(seg).ok_or(TopicError::InvalidPattern)?;
            if captures.iter().any(|(n, _)| *n == name) {
                return Err(TopicError::InvalidPattern);
            }
            captures.push((name, ""));
        }
    }
    if pattern_segments.len() != path_segments.len() {
        return Err(TopicError::PathMismatch);
    }
    for (pat, seg) in pattern_segments.iter().zip(&path_segments) {
        match placeholder_name(pat) {
            Some(name) => {
                if !is_segment_value(seg) {
                    return Err(TopicError::InvalidSegment(name.to_owned()));
                }
                if let Some(c) = captures.iter_mut().find(|(n, _)| *n == name) {
                    c.1 = seg;
                }
            }
            None if pat == seg => {}
            None => return Err(TopicError::PathMismatch),
        }
    }

    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(TopicError::InvalidTemplate);
        }
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(TopicError::InvalidTemplate)?;
        let name = &after[..close];
        if placeholder_name(&format!("{{{name}}}")).is_none() {
            return Err(TopicError::InvalidTemplate);
        }
        let value = captures
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| TopicError::UnknownPlaceholder(name.to_owned()))?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    if !is_valid_topic(&out) {
        return Err(TopicError::InvalidTopic);
    }
    Ok(out)
}

/// The placeholder that credentials are bound by ([`route_for_action`]).
pub const ACTION_PLACEHOLDER: &str = "action";

/// Where one bound action of a route leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRoute {
    /// The request path that carries the action (the pattern filled in).
    pub path: String,
    /// The topic that path produces.
    pub topic: String,
}

/// Whether a topic template takes anything from the request path.
pub fn has_placeholders(template: &str) -> bool {
    template.contains(['{', '}'])
}

/// The path and topic of `action` on a route whose topic `template` is
/// filled from `path_pattern` — the check behind binding a webhook
/// credential to the action(s) it may deliver (EspoCRM: one webhook per
/// `create`/`update`/`delete`, all on one route).
///
/// The pattern must capture `{action}` and nothing else: with a second
/// placeholder (say `{entity}`) a credential bound to `update` could still
/// choose among several topics. An action must be a segment the pattern can
/// produce (`[a-z0-9_-]+`), and the topic it yields must be valid.
pub fn route_for_action(
    template: &str,
    path_pattern: &str,
    action: &str,
) -> Result<ActionRoute, TopicError> {
    let mut has_action = false;
    let mut segments = Vec::new();
    for seg in path_pattern.split('/') {
        if seg.contains(['{', '}']) {
            match placeholder_name(seg) {
                Some(ACTION_PLACEHOLDER) => {
                    has_action = true;
                    segments.push(action);
                }
                Some(other) => return Err(TopicError::NotOnlyAction(other.to_owned())),
                None => return Err(TopicError::InvalidPattern),
            }
        } else {
            segments.push(seg);
        }
    }
    if !has_action {
        return Err(TopicError::NoActionPlaceholder);
    }
    if !is_segment_value(action) {
        return Err(TopicError::InvalidSegment(ACTION_PLACEHOLDER.to_owned()));
    }
    let path = segments.join("/");
    let topic = fill_topic_template(template, &path, path_pattern)?;
    Ok(ActionRoute { path, topic })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_for_actions() {
        let pat = "/vmh/webhook/beteiligte/{action}";
        assert_eq!(
            route_for_action("vmh.beteiligte.{action}", pat, "delete"),
            Ok(ActionRoute {
                path: "/vmh/webhook/beteiligte/delete".into(),
                topic: "vmh.beteiligte.delete".into()
            })
        );
        assert_eq!(
            route_for_action("vmh.beteiligte.{action}", pat, "Update"),
            Err(TopicError::InvalidSegment("action".into()))
        );
        assert_eq!(
            route_for_action("vmh.beteiligte.{action}", pat, "up/date"),
            Err(TopicError::InvalidSegment("action".into()))
        );
        assert_eq!(
            route_for_action("vmh.beteiligte.{action}", pat, ""),
            Err(TopicError::InvalidSegment("action".into()))
        );
        assert_eq!(
            route_for_action(
                "vmh.{entity}.{action}",
                "/vmh/webhook/{entity}/{action}",
                "update"
            ),
            Err(TopicError::NotOnlyAction("entity".into()))
        );
        assert_eq!(
            route_for_action("vmh.{kind}", "/vmh/webhook/{kind}", "update"),
            Err(TopicError::NotOnlyAction("kind".into()))
        );
        assert_eq!(
            route_for_action(
                "vmh.beteiligte.update",
                "/vmh/webhook/beteiligte/update",
                "update"
            ),
            Err(TopicError::NoActionPlaceholder)
        );
        assert_eq!(
            route_for_action("vmh.{other}", pat, "update"),
            Err(TopicError::UnknownPlaceholder("other".into()))
        );
        assert!(has_placeholders("vmh.{action}"));
        assert!(!has_placeholders("vmh.x"));
    }

    #[test]
    fn known_topics_roundtrip() {
        assert_eq!(Topic::ALL.len(), 17);
        for t in Topic::ALL {
            assert_eq!(t.as_str().parse::<Topic>(), Ok(*t));
            assert!(is_valid_topic(t.as_str()));
            let json = serde_json::to_string(t).unwrap();
            assert_eq!(serde_json::from_str::<Topic>(&json).unwrap(), *t);
        }
        assert_eq!(Topic::NAMES.len(), Topic::ALL.len());
        for (t, n) in Topic::ALL.iter().zip(Topic::NAMES) {
            assert_eq!(t.as_str(), *n);
        }
        assert_eq!(Topic::DocumentDelete.kind(), TopicKind::EspoBatch);
        assert_eq!(
            Topic::LeadVermieterheldenReceived.kind(),
            TopicKind::SingleObject
        );
        assert!(Topic::CalendarSyncAll.is_internal());
        assert!(!Topic::TelephonyCallReported.is_internal());
        assert_eq!(
            Topic::BeteiligteSyncCheck.to_string(),
            "vmh.beteiligte.sync_check"
        );
        assert!("vmh.unknown".parse::<Topic>().is_err());
    }

    #[test]
    fn fills_templates() {
        let f = fill_topic_template;
        let pat = "/vmh/webhook/beteiligte/{action}";
        assert_eq!(
            f(
                "vmh.beteiligte.{action}",
                "/vmh/webhook/beteiligte/update",
                pat
            )
            .unwrap(),
            "vmh.beteiligte.update"
        );
        assert_eq!(
            f(
                "vmh.beteiligte.{action}",
                "/vmh/webhook/beteiligte/create/",
                pat
            )
            .unwrap(),
            "vmh.beteiligte.create"
        );
        assert_eq!(
            f(
                "vmh.beteiligte.{action}",
                "/vmh/webhook/beteiligte/delete?x=1",
                pat
            )
            .unwrap(),
            "vmh.beteiligte.delete"
        );
        assert_eq!(
            f(
                "vmh.{entity}.{action}",
                "/vmh/webhook/document/update",
                "/vmh/webhook/{entity}/{action}"
            )
            .unwrap(),
            "vmh.document.update"
        );
        assert_eq!(
            f("telephony.call.reported", "/3cx/report", "/3cx/report").unwrap(),
            "telephony.call.reported"
        );
        assert_eq!(
            f(
                "vmh.beteiligte.{action}",
                "/vmh/webhook/beteiligte/Update",
                pat
            ),
            Err(TopicError::InvalidSegment("action".into()))
        );
        assert_eq!(
            f("vmh.beteiligte.{action}", "/vmh/webhook/beteiligte/", pat),
            Err(TopicError::PathMismatch)
        );
        assert_eq!(
            f(
                "vmh.beteiligte.{action}",
                "/vmh/webhook/beteiligte/a/b",
                pat
            ),
            Err(TopicError::PathMismatch)
        );
        assert_eq!(
            f(
                "vmh.beteiligte.{action}",
                "/vmh/hook/beteiligte/update",
                pat
            ),
            Err(TopicError::PathMismatch)
        );
        assert_eq!(
            f(
                "vmh.beteiligte.{action}",
                "/vmh/webhook/beteiligte/up.date",
                pat
            ),
            Err(TopicError::InvalidSegment("action".into()))
        );
        assert_eq!(
            f("vmh.{x}", "/vmh/webhook/beteiligte/update", pat),
            Err(TopicError::UnknownPlaceholder("x".into()))
        );
        assert_eq!(
            f("vmh.{action", "/vmh/webhook/beteiligte/update", pat),
            Err(TopicError::InvalidTemplate)
        );
        assert_eq!(
            f("vmh.action}", "/vmh/webhook/beteiligte/update", pat),
            Err(TopicError::InvalidTemplate)
        );
        assert_eq!(
            f("vmh.{}", "/vmh/webhook/beteiligte/update", pat),
            Err(TopicError::InvalidTemplate)
        );
        assert_eq!(
            f("Vmh.{action}", "/vmh/webhook/beteiligte/update", pat),
            Err(TopicError::InvalidTopic)
        );
        assert_eq!(f("x", "/a/b", "/a/pre{x}"), Err(TopicError::InvalidPattern));
        assert_eq!(
            f("x", "/a/b/c", "/a/{x}/{x}"),
            Err(TopicError::InvalidPattern)
        );
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics(t in any::<String>(), p in any::<String>(), pat in any::<String>()) {
            let _ = fill_topic_template(&t, &p, &pat);
            let _ = fill_topic_template(&t, &p, "/vmh/webhook/{entity}/{action}");
            let _ = fill_topic_template("vmh.{entity}.{action}", &p, &pat);
        }
    }
}
