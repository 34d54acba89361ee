//! End-to-end: a template like the gateway's, rendered from a fake environment, validated
//! against fake filter files and meta.json written here; plus the binary's commands.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use kong_config::{
    render, render_detailed, template_vars, validate, validate_document, validate_with_meta_dirs,
    KongConfig, Problem,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TEMPLATE: &str = r#"
_format_version: "3.0"
services:
  - name: worker
    url: http://${WORKER_HOST:-worker}:8080
    read_timeout: ${READ_TIMEOUT:-30000}
    routes:
      - name: espocrm-webhook
        paths: ["/vmh/webhook"]
        methods: [POST]
        filter_chains:
          - name: espocrm
            filters:
              - name: webhook_guard
                config:
                  route: espocrm
                  scheme: espocrm
                  webhooks:
                    - id: hook1
                      secret: ${ESPO_WEBHOOK_SECRET}
                  gateway_secret: ${GATEWAY_SECRET}
  - name: advoware
    url: https://${ADVOWARE_HOST}/
    routes:
      - name: advoware-api
        paths: ["~/advoware/(?<rest>.*)$"]
        plugins:
          - name: key-auth
            config: {key_names: [apikey]}
          - name: rate-limiting
            config: {minute: 600, policy: local}
        filter_chains:
          - filters:
              - name: advoware_auth
                config:
                  token_target: "${TOKEN_TARGET}"
                  token_authority: security.advo-net.net
                  kanzlei: k1
                  database: db1
                  user: API
                  app_id: app-1
                  password: ${ADVOWARE_PASSWORD}
                  api_key: ${ADVOWARE_API_KEY}
consumers:
  - username: worker
    keyauth_credentials:
      - key: ${WORKER_API_KEY}
  - username: n8n
    keyauth_credentials:
      - key: ${N8N_API_KEY}
"#;

const GUARD_SCHEMA: &str = r#"{"config_schema": {"type": "object", "additionalProperties": false,
  "required": ["route", "scheme"],
  "properties": {
    "route": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
    "scheme": {"type": "string", "enum": ["espocrm", "shared-token"]},
    "webhooks": {"type": "array", "items": {"type": "object", "required": ["id", "secret"],
      "properties": {"id": {"type": "string"}, "secret": {"type": "string", "minLength": 1}}}},
    "gateway_secret": {"type": "string", "minLength": 16}
  }}}"#;

const AUTH_SCHEMA: &str = r#"{"config_schema": {"$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object", "additionalProperties": false,
  "required": ["token_target", "password", "api_key"],
  "properties": {
    "token_target": {"type": "string", "minLength": 1},
    "token_authority": {"type": "string", "minLength": 1},
    "kanzlei": {"type": "string"}, "database": {"type": "string"}, "user": {"type": "string"},
    "app_id": {"type": "string"}, "consumers": {"type": "object"},
    "password": {"type": "string", "minLength": 1},
    "api_key": {"type": "string", "minLength": 1}
  }}}"#;

fn full_env() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("ESPO_WEBHOOK_SECRET", "espo-secret-AAAA"),
        ("GATEWAY_SECRET", "gateway-secret-0123456789"),
        ("ADVOWARE_HOST", "relay.example.net"),
        ("TOKEN_TARGET", "10.0.0.5:443"),
        // Hostile for YAML, but no control characters (the filter refuses those).
        ("ADVOWARE_PASSWORD", "pa55: #word\"' ]x"),
        ("ADVOWARE_API_KEY", "YXBpLWtleQ=="),
        ("WORKER_API_KEY", "worker-key-1111"),
        ("N8N_API_KEY", "n8n-key-2222"),
    ])
}

fn lookup<'a>(
    env: &'a HashMap<&'static str, &'static str>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |k: &str| env.get(k).map(|v| v.to_string())
}

/// A filters dir with both `.wasm` files; webhook_guard's meta.json beside it, advoware_auth's
/// in a `wasm-plugins/<name>/` source layout.
fn dirs() -> Result<(tempfile::TempDir, tempfile::TempDir), std::io::Error> {
    let filters = tempfile::tempdir()?;
    let plugins = tempfile::tempdir()?;
    std::fs::write(
        filters.path().join("webhook_guard.wasm"),
        b"\0asm\x01\0\0\0",
    )?;
    std::fs::write(
        filters.path().join("advoware_auth.wasm"),
        b"\0asm\x01\0\0\0",
    )?;
    std::fs::write(filters.path().join("webhook_guard.meta.json"), GUARD_SCHEMA)?;
    std::fs::create_dir(plugins.path().join("advoware_auth"))?;
    std::fs::write(
        plugins.path().join("advoware_auth/advoware_auth.meta.json"),
        AUTH_SCHEMA,
    )?;
    Ok((filters, plugins))
}

fn problems_of(yaml: &str, filters: &Path, meta: &Path) -> Vec<Problem> {
    match validate_document(yaml, filters, &[meta]) {
        Ok(_) => Vec::new(),
        Err(p) => p,
    }
}

fn has(problems: &[Problem], at: &str, msg: &str) -> bool {
    problems
        .iter()
        .any(|p| p.at.contains(at) && p.message.contains(msg))
}

fn all_text(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("{p}\n")).collect()
}

#[test]
fn full_environment_renders_a_valid_config() -> TestResult {
    let env = full_env();
    let (filters, plugins) = dirs()?;
    let yaml = render(TEMPLATE, &lookup(&env))?;
    let config = KongConfig::parse(&yaml)?;
    validate_with_meta_dirs(&config, filters.path(), &[plugins.path()])
        .map_err(|p| all_text(&p))?;
    assert_eq!(config.service_url("worker"), Some("http://worker:8080"));
    assert_eq!(config.services[0].read_timeout, 30000);
    // The hostile password stays one string value of the filter config.
    let (_, route) = config.route("advoware-api").ok_or("route missing")?;
    let cfg = route.filter_chains[0].filters[0]
        .config
        .as_ref()
        .ok_or("config missing")?;
    assert_eq!(cfg["password"], serde_json::json!("pa55: #word\"' ]x"));
    assert_eq!(cfg.as_object().map(|o| o.len()), Some(8));
    // Without the meta dir advoware_auth's meta.json is not found.
    let p = validate(&config, filters.path()).err().unwrap_or_default();
    assert!(
        has(&p, "advoware_auth", "advoware_auth.meta.json"),
        "{}",
        all_text(&p)
    );
    Ok(())
}

#[test]
fn every_missing_variable_is_listed_without_values() {
    let mut env = full_env();
    env.remove("GATEWAY_SECRET");
    env.remove("N8N_API_KEY");
    env.insert("ADVOWARE_HOST", "");
    match render(TEMPLATE, &lookup(&env)) {
        Ok(_) => panic!("expected missing variables"),
        Err(e) => {
            assert_eq!(
                e.missing(),
                ["ADVOWARE_HOST", "GATEWAY_SECRET", "N8N_API_KEY"]
            );
            let msg = e.to_string();
            for v in full_env().values() {
                assert!(!msg.contains(v), "{msg} leaks {v}");
            }
        }
    };
}

#[test]
fn vars_lists_the_template_variables() -> TestResult {
    let vars = template_vars(TEMPLATE)?;
    let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ADVOWARE_API_KEY",
            "ADVOWARE_HOST",
            "ADVOWARE_PASSWORD",
            "ESPO_WEBHOOK_SECRET",
            "GATEWAY_SECRET",
            "N8N_API_KEY",
            "READ_TIMEOUT",
            "TOKEN_TARGET",
            "WORKER_API_KEY",
            "WORKER_HOST"
        ]
    );
    Ok(())
}

#[test]
fn validation_reports_every_rule_at_once_without_secrets() -> TestResult {
    let (filters, plugins) = dirs()?;
    std::fs::write(filters.path().join("key-auth.wasm"), b"\0asm")?;
    std::fs::write(
        filters.path().join("key-auth.meta.json"),
        r#"{"config_schema": {"type": "string"}}"#,
    )?;
    std::fs::write(filters.path().join("empty_req.wasm"), b"\0asm")?;
    std::fs::write(
        filters.path().join("empty_req.meta.json"),
        r#"{"config_schema": {"type": "object", "required": []}}"#,
    )?;
    std::fs::write(filters.path().join("no_meta.wasm"), b"\0asm")?;
    let yaml = r#"
_format_version: 3.0
services:
  - name: a
    url: ftp://files.example
    routes:
      - name: dup
        paths: [no-slash, "~/x(?=y)"]
        methods: [get, FETCH]
        plugins:
          - name: rate-limiting
            config: {minute: 5, policy: cluster}
        filter_chains:
          - filters:
              - name: webhook_guard
                config: {route: "BAD ROUTE", scheme: espocrm, gateway_secret: "SECRETVALUE", extra: 1}
              - name: advoware_auth
              - name: missing_filter
              - name: key-auth
                config: "x"
              - name: empty_req
                config: {}
              - name: no_meta
                config: {a: 1}
  - name: b
    url: "not a url ${LEFT_OVER}"
    routes:
      - name: dup
        paths: ["/ok"]
        filter_chains:
          - filters:
              - name: webhook_guard
                config: {route: x, scheme: espocrm, gateway_secret: "{vault://env/gw-secret-xyz}"}
          - filters: []
consumers:
  - username: c1
    keyauth_credentials: [{key: "SAMEKEY-123"}, {key: ""}]
  - username: c2
    keyauth_credentials: [{key: "SAMEKEY-123"}, {key: "{vault://env/consumer-key}"}, {key: "${UNSET_KEY}"}]
"#;
    let p = problems_of(yaml, filters.path(), plugins.path());
    let text = all_text(&p);
    let expect = [
        ("_format_version", "string \"3.0\""),
        ("services[a].url", "http or https"),
        ("services[b].url", "LEFT_OVER"),
        ("routes[dup]", "duplicate route name"),
        ("paths[0]", "must start with `/`"),
        ("paths[1]", "look-around"),
        ("methods[0]", "upper case"),
        ("methods[1]", "not an HTTP method"),
        ("plugins[rate-limiting]", "cluster"),
        ("filters[webhook_guard].config/route", "pattern"),
        (
            "filters[webhook_guard].config/gateway_secret",
            "shorter than 16",
        ),
        ("filters[webhook_guard]", "unknown properties: extra"),
        ("filters[advoware_auth]", "no config"),
        ("filters[missing_filter]", "missing_filter.wasm not found"),
        ("filters[key-auth]", "collides"),
        ("empty_req.meta.json", "\"required\": []"),
        ("filters[no_meta]", "no no_meta.meta.json"),
        ("filters[webhook_guard].config.gateway_secret", "vault"),
        ("routes[dup].filter_chains", "one per route"),
        ("routes[dup].filter_chains[1]", "no filters"),
        ("consumers[c1].keyauth_credentials[1]", "empty"),
        ("consumers[c2].keyauth_credentials[0]", "same key"),
        ("consumers[c2].keyauth_credentials[1]", "vault"),
        ("consumers[c2].keyauth_credentials[2]", "UNSET_KEY"),
    ];
    for (at, msg) in expect {
        assert!(has(&p, at, msg), "missing problem {at}: {msg} in\n{text}");
    }
    for secret in ["SECRETVALUE", "SAMEKEY", "gw-secret-xyz", "consumer-key"] {
        assert!(
            !text.contains(secret),
            "problem text leaks {secret}:\n{text}"
        );
    }
    Ok(())
}

#[test]
fn hostile_value_cannot_add_keys() -> TestResult {
    let env = HashMap::from([("K", "x\nservices: []\n_format_version: '2.1'")]);
    let yaml = render("_format_version: \"3.0\"\nconsumers: [{username: u, keyauth_credentials: [{key: \"${K}\"}]}]\n", &lookup(&env))?;
    let c = KongConfig::parse(&yaml)?;
    assert_eq!(c.format_version, serde_yaml::Value::String("3.0".into()));
    assert_eq!(c.consumers[0].keyauth_credentials[0].key, env["K"]);
    Ok(())
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kong-config"))
}

#[test]
fn binary_render_check_and_vars() -> TestResult {
    let (filters, plugins) = dirs()?;
    let work = tempfile::tempdir()?;
    let template = work.path().join("kong.yaml");
    let out = work.path().join("kong.rendered.yaml");
    std::fs::write(&template, TEMPLATE)?;
    let dir_args = [
        "--filters-dir".to_string(),
        filters.path().display().to_string(),
        "--meta-dir".to_string(),
        plugins.path().display().to_string(),
    ];

    // All variables set: exit 0, file written 0600, summary printed.
    let o = bin()
        .arg("render")
        .arg("--template")
        .arg(&template)
        .arg("--out")
        .arg(&out)
        .args(&dir_args)
        .env_clear()
        .envs(full_env())
        .output()?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("rendered 2 services, 2 routes, 2 filter chains to"),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out)?.permissions().mode() & 0o777, 0o600);
    }

    // check on the rendered file.
    let o = bin().arg("check").arg(&out).args(&dir_args).output()?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Missing variables: exit 3, all names, no values.
    let mut env = full_env();
    env.remove("WORKER_API_KEY");
    env.remove("TOKEN_TARGET");
    let o = bin()
        .arg("render")
        .arg("--template")
        .arg(&template)
        .arg("--out")
        .arg(work.path().join("other.yaml"))
        .args(&dir_args)
        .env_clear()
        .envs(&env)
        .output()?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("WORKER_API_KEY") && stderr.contains("TOKEN_TARGET"),
        "{stderr}"
    );
    for v in env.values() {
        assert!(!stderr.contains(v), "stderr leaks {v}");
    }
    assert!(!work.path().join("other.yaml").exists());

    // Validation failure: exit 4, secret redacted even where a rule would quote it.
    let mut env = full_env();
    env.insert("GATEWAY_SECRET", "tooshort");
    let o = bin()
        .arg("render")
        .arg("--template")
        .arg(&template)
        .arg("--out")
        .arg(work.path().join("other.yaml"))
        .args(&dir_args)
        .env_clear()
        .envs(&env)
        .output()?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("gateway_secret") && !stderr.contains("tooshort"),
        "{stderr}"
    );

    // vars.
    let o = bin()
        .arg("vars")
        .arg("--template")
        .arg(&template)
        .output()?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        stdout.contains("READ_TIMEOUT (default: 30000)") && stdout.contains("GATEWAY_SECRET\n"),
        "{stdout}"
    );

    // render_detailed exposes the values for redaction.
    let r = render_detailed(TEMPLATE, &lookup(&full_env()))?;
    assert!(r.secret_values.iter().any(|v| v == "worker-key-1111"));
    Ok(())
}

/// The repository's own template (possibly edited by `edit`), rendered with plausible fake
/// values and validated against the filters' real meta.json files (stand-in `.wasm` files).
/// The template's variables that have a `:-default`.
fn defaulted_vars(template: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    Ok(template_vars(template)?
        .into_iter()
        .filter(|v| v.default.is_some())
        .map(|v| v.name)
        .collect())
}

fn validate_repository_template(
    edit: &dyn Fn(String) -> String,
) -> Result<Result<KongConfig, Vec<Problem>>, Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let template = edit(std::fs::read_to_string(root.join("kong.yaml"))?);
    let filters = tempfile::tempdir()?;
    for name in ["advoware_auth", "webhook_guard"] {
        std::fs::write(
            filters.path().join(format!("{name}.wasm")),
            b"\0asm\x01\0\0\0",
        )?;
    }
    // Variables with defaults keep them; every required one gets a plausible fake value.
    let defaulted = defaulted_vars(&template)?;
    let fake = |name: &str| -> Option<String> {
        if defaulted.iter().any(|d| d == name) {
            return None;
        }
        Some(if name.ends_with("_URL") {
            "http://worker:8080".to_string()
        } else if name.ends_with("_TARGET") {
            "10.0.0.5:443".to_string()
        } else if name == "ADVOWARE_API_KEY" {
            // The key must be base64; this one decodes to "not-a-real-key".
            "bm90LWEtcmVhbC1rZXk=".to_string()
        } else if name.ends_with("_ID") {
            // EspoCRM gives every webhook its own id.
            format!("id-{}", name.to_ascii_lowercase().replace('_', "-"))
        } else {
            format!(
                "fake-{}-0123456789abcdef",
                name.to_ascii_lowercase().replace('_', "-")
            )
        })
    };
    let rendered = render_detailed(&template, &fake)?;
    let meta = root.join("wasm-plugins");
    Ok(validate_document(
        &rendered.yaml,
        filters.path(),
        &[meta.as_path()],
    ))
}

#[test]
fn repository_template_renders_and_validates() -> TestResult {
    let config = validate_repository_template(&|t| t)?.map_err(|p| all_text(&p))?;
    assert!(config.all_filter_chains().count() > 0);
    Ok(())
}

/// Issue 14: the 3CX lookup route (verify-only) must sign its forwards, so a kong.yaml whose
/// lookup filter lacks `gateway_secret` or `topic` fails validation before deploy.
#[test]
fn repository_template_lookup_route_needs_gateway_secret_and_topic() -> TestResult {
    let edited = validate_repository_template(&|t| {
        let start = t.find("route: threecx_lookup").unwrap_or(0);
        let (head, tail) = t.split_at(start);
        let tail = tail
            .replacen("                  topic: threecx.lookup\n", "", 1)
            .replacen(
                "                  gateway_secret: ${GATEWAY_SIGNING_SECRET}\n",
                "",
                1,
            );
        format!("{head}{tail}")
    })?;
    let problems = edited.err().unwrap_or_default();
    let text = all_text(&problems);
    let at = "routes[threecx-lookup].filter_chains[0].filters[webhook_guard]";
    assert!(has(&problems, at, "gateway_secret"), "{text}");
    assert!(has(&problems, at, "topic"), "{text}");
    Ok(())
}

/// Issue 16 item 1: every EspoCRM webhook in kong.yaml is bound to the action of its route
/// path; a binding the route cannot reach, or a route path left unbound, fails `check`/`render`.
#[test]
fn repository_template_binds_every_espocrm_webhook_to_its_action() -> TestResult {
    let edited = validate_repository_template(&|t| {
        t.replacen("actions: [delete]}", "actions: [remove]}", 1)
            .replacen("actions: [update]}", "actions: [Update]}", 1)
    })?;
    let problems = edited.err().unwrap_or_default();
    let text = all_text(&problems);
    let at =
        "routes[vmh-webhook-beteiligte].filter_chains[0].filters[webhook_guard].config.webhooks";
    assert!(
        has(
            &problems,
            &format!("{at}[2].actions[0]"),
            "the route's paths do not reach /vmh/webhook/beteiligte/remove"
        ),
        "{text}"
    );
    assert!(
        has(
            &problems,
            &format!("{at}[1].actions[0]"),
            "path segment for \"action\" is not [a-z0-9_-]+"
        ),
        "{text}"
    );
    assert!(
        has(
            &problems,
            at,
            "no webhook is bound to the action of route path /vmh/webhook/beteiligte/delete"
        ),
        "{text}"
    );
    assert!(
        has(
            &problems,
            at,
            "no webhook is bound to the action of route path /vmh/webhook/beteiligte/update"
        ),
        "{text}"
    );
    assert!(!text.contains("fake-"), "no values in messages: {text}");
    Ok(())
}

/// Kong's module takes the TLS server name of the token call from its `:authority` and refuses
/// an IP: render refuses `token_scheme: https` (the default) with an IP `token_target` unless
/// `token_authority` names the host, and says what to set — the filter's own rule.
#[test]
fn advoware_auth_https_to_an_ip_needs_a_host_name_authority() -> TestResult {
    let (filters, plugins) = dirs()?;
    let template = TEMPLATE.replace(
        "                  token_authority: security.advo-net.net\n",
        "",
    );
    assert_ne!(template, TEMPLATE);
    let rendered = render_detailed(&template, &lookup(&full_env()))?;
    let p = problems_of(&rendered.yaml, filters.path(), plugins.path());
    let text = all_text(&p);
    assert!(
        has(
            &p,
            "filters[advoware_auth]",
            "could not derive tls sni from host"
        ) && has(
            &p,
            "filters[advoware_auth]",
            "set `token_authority` to the security gateway's host name"
        ),
        "{text}"
    );
    assert!(!text.contains("10.0.0.5"), "no value quoted: {text}");
    // A host name as target needs no authority.
    let mut env = full_env();
    env.insert("TOKEN_TARGET", "security.advo-net.net:443");
    let rendered = render_detailed(&template, &lookup(&env))?;
    let p = problems_of(&rendered.yaml, filters.path(), plugins.path());
    assert!(p.is_empty(), "{}", all_text(&p));

    // The binary exits 4 with the same message.
    let work = tempfile::tempdir()?;
    let path = work.path().join("kong.yaml");
    std::fs::write(&path, &template)?;
    let o = bin()
        .arg("render")
        .arg("--template")
        .arg(&path)
        .arg("--out")
        .arg(work.path().join("out.yaml"))
        .args(["--filters-dir", &filters.path().display().to_string()])
        .args(["--meta-dir", &plugins.path().display().to_string()])
        .env_clear()
        .envs(full_env())
        .output()?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("set `token_authority`"), "{stderr}");
    Ok(())
}

/// advoware_auth's per-consumer scopes name consumers of the same file and sit behind key-auth.
#[test]
fn advoware_auth_consumer_scopes_name_known_consumers_behind_key_auth() -> TestResult {
    let (filters, plugins) = dirs()?;
    let scoped = TEMPLATE.replace(
        "                  api_key: ${ADVOWARE_API_KEY}\n",
        "                  api_key: ${ADVOWARE_API_KEY}\n                  consumers:\n                    worker: {methods: [GET], prefixes: [api/v1/advonet/Termine]}\n                    ghost: {methods: [GET], prefixes: [api/v1/advonet/Termine]}\n                    n8n: {methods: [FETCH], prefixes: [api/v1/advonet/Termine]}\n",
    );
    assert_ne!(scoped, TEMPLATE);
    let rendered = render_detailed(&scoped, &lookup(&full_env()))?;
    let p = problems_of(&rendered.yaml, filters.path(), plugins.path());
    let text = all_text(&p);
    assert!(
        has(&p, "consumers.ghost", "no consumer with this username"),
        "{text}"
    );
    assert!(!has(&p, "consumers.worker", "no consumer"), "{text}");
    assert!(
        has(&p, "filters[advoware_auth]", "`FETCH` is not one of"),
        "{text}"
    );
    // Without key-auth on the route, X-Consumer-Username could come from the client.
    let no_key_auth = scoped
        .replace(
            "                    ghost: {methods: [GET], prefixes: [api/v1/advonet/Termine]}\n",
            "",
        )
        .replace("n8n: {methods: [FETCH]", "n8n: {methods: [GET]")
        .replace(
            "          - name: key-auth\n            config: {key_names: [apikey]}\n",
            "",
        );
    let rendered = render_detailed(&no_key_auth, &lookup(&full_env()))?;
    let p = problems_of(&rendered.yaml, filters.path(), plugins.path());
    assert!(
        has(&p, "routes[advoware-api]", "needs key-auth on the route"),
        "{}",
        all_text(&p)
    );
    assert_eq!(p.len(), 1, "{}", all_text(&p));
    Ok(())
}

/// An `acl` allow group nobody holds would lock every client out.
#[test]
fn acl_allow_groups_must_be_held_by_a_consumer() -> TestResult {
    let (filters, plugins) = dirs()?;
    let with_acl = TEMPLATE
        .replace(
            "          - name: rate-limiting\n            config: {minute: 600, policy: local}\n",
            "          - name: rate-limiting\n            config: {minute: 600, policy: local}\n          - name: acl\n            config: {allow: [advoware-users, typo-group]}\n",
        )
        .replace(
            "  - username: worker\n",
            "  - username: worker\n    acls: [{group: advoware-users}]\n",
        );
    assert_ne!(with_acl, TEMPLATE);
    let rendered = render_detailed(&with_acl, &lookup(&full_env()))?;
    let p = problems_of(&rendered.yaml, filters.path(), plugins.path());
    assert!(
        has(&p, "allow[typo-group]", "no consumer is in this group"),
        "{}",
        all_text(&p)
    );
    assert_eq!(p.len(), 1, "{}", all_text(&p));
    Ok(())
}

/// Issue 14, outbound calls: `/3cx/call` places phone calls, so the route authenticates with
/// key-auth (credentials hidden from the worker) and admits only the `telephony` ACL group; a
/// kong.yaml whose consumers lost that group fails validation (nobody could pass).
#[test]
fn repository_template_guards_the_outbound_call_route() -> TestResult {
    let config = validate_repository_template(&|t| t)?.map_err(|p| all_text(&p))?;
    let route = config
        .services
        .iter()
        .flat_map(|s| s.routes.iter())
        .find(|r| r.name == "threecx-call")
        .ok_or("route threecx-call missing")?;
    assert_eq!(route.paths, ["/3cx/call"]);
    let key_auth = route
        .plugins
        .iter()
        .find(|p| p.name == "key-auth")
        .ok_or("no key-auth")?;
    assert_eq!(key_auth.config["hide_credentials"], true);
    let acl = route
        .plugins
        .iter()
        .find(|p| p.name == "acl")
        .ok_or("no acl")?;
    assert_eq!(acl.config["allow"], serde_json::json!(["telephony"]));
    let without_group = validate_repository_template(&|t| {
        t.replace("      - group: telephony ", "      - group: telephone ")
    })?;
    let problems = without_group.err().unwrap_or_default();
    assert!(
        has(
            &problems,
            "plugins[acl].config.allow[telephony]",
            "no consumer"
        ),
        "{}",
        all_text(&problems)
    );
    Ok(())
}

/// The worker's manual endpoints (`/calendar/sync`, `/3cx/call`) want
/// `Authorization: Bearer $WORKER_ADMIN_TOKEN`: both Kong routes drop the client's
/// `Authorization` and inject the bearer with request-transformer (remove before add, so a
/// client cannot smuggle its own), and a render without the variable fails naming it.
#[test]
fn repository_template_injects_the_worker_admin_token() -> TestResult {
    let config = validate_repository_template(&|t| t)?.map_err(|p| all_text(&p))?;
    for name in ["advoware-calendar-sync", "threecx-call"] {
        let route = config
            .services
            .iter()
            .flat_map(|s| s.routes.iter())
            .find(|r| r.name == name)
            .ok_or(format!("route {name} missing"))?;
        let rt = route
            .plugins
            .iter()
            .find(|p| p.name == "request-transformer")
            .ok_or(format!("{name}: no request-transformer"))?;
        assert_eq!(
            rt.config["remove"]["headers"],
            serde_json::json!(["Authorization"]),
            "{name}"
        );
        assert_eq!(
            rt.config["add"]["headers"],
            serde_json::json!(["Authorization:Bearer fake-worker-admin-token-0123456789abcdef"]),
            "{name}"
        );
    }

    // Without the variable: a render error naming it (and only it), nothing written.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let template = std::fs::read_to_string(root.join("kong.yaml"))?;
    let defaulted = defaulted_vars(&template)?;
    let lookup = |name: &str| -> Option<String> {
        (name != "WORKER_ADMIN_TOKEN" && !defaulted.iter().any(|d| d == name))
            .then(|| format!("value-{}", name.to_ascii_lowercase()))
    };
    match render(&template, &lookup) {
        Ok(_) => panic!("rendered without WORKER_ADMIN_TOKEN"),
        Err(e) => {
            assert_eq!(e.missing(), ["WORKER_ADMIN_TOKEN"]);
            assert!(
                e.to_string().contains("WORKER_ADMIN_TOKEN"),
                "message names the variable: {e}"
            );
        }
    }

    // A token Kong would evaluate as a template is refused, without quoting it.
    let templated =
        validate_repository_template(&|t| t.replace("${WORKER_ADMIN_TOKEN}", "$(headers.host)"))?;
    let problems = templated.err().unwrap_or_default();
    assert!(
        has(
            &problems,
            "routes[threecx-call].plugins[request-transformer].config.add.headers[0]",
            "template"
        ),
        "{}",
        all_text(&problems)
    );
    assert!(!all_text(&problems).contains("headers.host"));
    Ok(())
}
