//! `webhook_guard` rules a JSON Schema cannot express: every EspoCRM webhook is bound to the
//! action(s) it delivers, checked against the route's `path_pattern` with the same core function
//! the filter's `on_configure` uses (`bitbylaw_core::topic::route_for_action`), and against the
//! Kong route's `paths` — a bound action the route cannot reach, or a route path no webhook is
//! bound to, is a deploy-time problem rather than 404s or 401s in production.
//!
//! Messages name fields and paths, never ids or secrets.

use bitbylaw_core::topic::{fill_topic_template, has_placeholders, route_for_action};
use serde_json::Value as Json;

/// The filter these rules are about.
pub const FILTER: &str = "webhook_guard";

/// Problems of one `webhook_guard` config as `(place below the config, message)`.
/// `route_paths` are the Kong route's `paths` (empty for service or top-level chains).
pub fn check(config: &Json, route_paths: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let text = |k: &str| config.get(k).and_then(Json::as_str);
    let scheme = text("scheme");
    let template = text("topic");
    let from_path = template
        .filter(|t| has_placeholders(t))
        .zip(text("path_pattern"));
    if scheme != Some("espocrm") {
        if scheme.is_some() && template.is_some_and(has_placeholders) {
            out.push((
                "topic".into(),
                "topic placeholders need scheme espocrm: the other schemes' credentials name no \
                 webhook that could be bound to an action (use one route per topic)"
                    .into(),
            ));
        }
        return out;
    }
    let hooks = config
        .get("webhooks")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // Prefix routes only: a regex path cannot be compared without Kong's router.
    let plain_paths: Option<Vec<&str>> = route_paths
        .iter()
        .map(|p| (!p.starts_with('~')).then_some(p.as_str()))
        .collect();
    let plain_paths = plain_paths.filter(|p| !p.is_empty());
    let mut bound_paths: Vec<String> = Vec::new();
    let mut by_id: Vec<(&str, Vec<String>)> = Vec::new();
    for (i, hook) in hooks.iter().enumerate() {
        let at = format!("webhooks[{i}]");
        let actions = hook.get("actions").and_then(Json::as_array);
        let Some((template, pattern)) = from_path else {
            if actions.is_some() && template.is_some() {
                out.push((
                    format!("{at}.actions"),
                    "only applies when the topic comes from the path (a topic with placeholders)"
                        .into(),
                ));
            }
            continue;
        };
        let Some(actions) = actions else {
            out.push((
                at,
                "actions is required: the topic comes from the path, so each webhook names the \
                 action(s) it delivers"
                    .into(),
            ));
            continue;
        };
        let mut topics = Vec::new();
        for (j, action) in actions.iter().enumerate() {
            let Some(action) = action.as_str() else {
                continue; // the schema reports the type
            };
            match route_for_action(template, pattern, action) {
                Err(e) => out.push((format!("{at}.actions[{j}]"), e.to_string())),
                Ok(r) => {
                    if let Some(paths) = &plain_paths {
                        if !paths.iter().any(|p| r.path.starts_with(p)) {
                            out.push((
                                format!("{at}.actions[{j}]"),
                                format!("the route's paths do not reach {}", r.path),
                            ));
                        }
                    }
                    topics.push(r.topic);
                    bound_paths.push(r.path);
                }
            }
        }
        topics.sort();
        topics.dedup();
        if let Some(id) = hook.get("id").and_then(Json::as_str) {
            match by_id.iter().find(|(known, _)| *known == id) {
                Some((_, earlier)) if *earlier != topics => out.push((
                    format!("{at}.actions"),
                    "differ from an earlier entry with the same id".into(),
                )),
                Some(_) => {}
                None => by_id.push((id, topics)),
            }
        }
    }
    // Every route path that selects a topic needs a webhook bound to it, else all of its
    // deliveries are refused.
    if let (Some((template, pattern)), Some(paths)) = (from_path, &plain_paths) {
        for path in paths {
            if fill_topic_template(template, path, pattern).is_ok()
                && !bound_paths.iter().any(|b| b == path)
            {
                out.push((
                    "webhooks".into(),
                    format!("no webhook is bound to the action of route path {path}"),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn espo(hooks: Json) -> Json {
        json!({"scheme": "espocrm", "topic": "vmh.beteiligte.{action}",
            "path_pattern": "/vmh/webhook/beteiligte/{action}", "webhooks": hooks})
    }

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bound_webhooks_pass() {
        let c = espo(
            json!([{"id": "a", "actions": ["create"]}, {"id": "b", "actions": ["update", "delete"]}]),
        );
        let p = paths(&[
            "/vmh/webhook/beteiligte/create",
            "/vmh/webhook/beteiligte/update",
            "/vmh/webhook/beteiligte/delete",
        ]);
        assert_eq!(check(&c, &p), Vec::<(String, String)>::new());
        // a regex route is not second-guessed
        assert!(check(&c, &paths(&["~/vmh/webhook/beteiligte/(create|update)$"])).is_empty());
    }

    #[test]
    fn every_binding_problem_is_listed() {
        let c = espo(json!([
            {"id": "a"},
            {"id": "b", "actions": ["Update"]},
            {"id": "c", "actions": ["archive"]},
            {"id": "c", "actions": ["create"]}
        ]));
        let p = paths(&[
            "/vmh/webhook/beteiligte/create",
            "/vmh/webhook/beteiligte/delete",
        ]);
        let got: Vec<String> = check(&c, &p)
            .into_iter()
            .map(|(a, m)| format!("{a}: {m}"))
            .collect();
        let all = got.join("\n");
        for want in [
            "webhooks[0]: actions is required",
            "webhooks[1].actions[0]: path segment for \"action\" is not [a-z0-9_-]+",
            "webhooks[2].actions[0]: the route's paths do not reach /vmh/webhook/beteiligte/archive",
            "webhooks[3].actions: differ from an earlier entry with the same id",
            "webhooks: no webhook is bound to the action of route path /vmh/webhook/beteiligte/delete",
        ] {
            assert!(all.contains(want), "{want}\n{all}");
        }
        let two = json!({"scheme": "espocrm", "topic": "vmh.{entity}.{action}",
            "path_pattern": "/vmh/{entity}/{action}", "webhooks": [{"id": "a", "actions": ["update"]}]});
        assert!(check(&two, &[])[0].1.contains("\"entity\" is not {action}"));
        let hmac =
            json!({"scheme": "hmac-sha256", "topic": "x.{action}", "path_pattern": "/x/{action}"});
        assert!(check(&hmac, &[])[0].1.contains("need scheme espocrm"));
        let fixed = json!({"scheme": "espocrm", "topic": "vmh.x", "webhooks": [{"id": "a", "actions": ["x"]}]});
        assert!(check(&fixed, &[])[0].1.contains("only applies"));
    }
}
