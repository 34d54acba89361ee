//! The leads engine against the fake EspoCRM and a real `redis-server`: each lead type with its
//! fields, exactly one Lead per `webhook-id` (also after a crash between create and record),
//! existing Lead/Contact per policy, EspoCRM's 409, newsletter → target list, Task for the
//! assignee.
#![allow(clippy::expect_used, clippy::unwrap_used)] // In tests a failed expect is a failed test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bitbylaw_core::ids::EspoId;
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake};
use bitbylaw_worker::clients::espocrm::{
    ClientSettings, EspoCrmClient, EspoCrmError, ListQuery, NewNotification,
};
use bitbylaw_worker::config::{EspoCrmSettings, ExistingPolicy, LeadsSettings, Secret};
use bitbylaw_worker::handlers::leads::crm::LeadsCrm;
use bitbylaw_worker::handlers::leads::engine::{Engine, Outcome};
use bitbylaw_worker::handlers::leads::store::LeadStore;
use bitbylaw_worker::sync::contact::Region;
use bitbylaw_worker::sync::leads::{validate, Assignee, LeadType};
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

mod common;
use common::RedisServer;

struct Env {
    _redis: RedisServer,
    fake: EspoCrmFake,
    espo: EspoCrmClient,
    store: LeadStore<MultiplexedConnection>,
    settings: LeadsSettings,
    list_id: String,
}

async fn env() -> Env {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default())
        .await
        .expect("espocrm fake");
    let espo = EspoCrmClient::new(
        ClientSettings::from_settings(&EspoCrmSettings {
            api_base_url: Some(fake.api_url()),
            api_key: Some(Secret::new(fake.config().api_key.clone())),
            timeout: Some(Duration::from_secs(5)),
            page_size: None,
        })
        .expect("settings"),
    )
    .expect("client");
    let list = fake
        .insert("TargetList", json!({"name": "Newsletter Vermieterhelden"}))
        .expect("list");
    let list_id = list["id"].as_str().expect("id").to_owned();
    let mut settings = LeadsSettings {
        newsletter_target_list_id: Some(list_id.clone()),
        ..LeadsSettings::default()
    };
    settings.assign.insert(
        LeadType::Mieter,
        Assignee {
            user_id: Some("userMieter".into()),
            team_id: Some("teamMiete".into()),
        },
    );
    settings.assign.insert(
        LeadType::Vermieter,
        Assignee {
            user_id: Some("userVermieter".into()),
            team_id: None,
        },
    );
    let store = LeadStore::new(redis.conn().await);
    Env {
        _redis: redis,
        fake,
        espo,
        store,
        settings,
        list_id,
    }
}

fn payload(lead_type: &str, email: &str) -> Value {
    json!({
        "schema_version": "1",
        "event": if lead_type == "kontakt" { "contact.submitted" } else { "lead.created" },
        "lead_type": lead_type,
        "submitted_at": "2026-05-01T10:00:00+02:00",
        "contact": {"salutation": "Herr", "name": "Max  Mustermann", "email": email, "phone": "0511 / 123 45 67"},
        "message": "Bitte rufen Sie mich an.",
        "page_url": "https://vermieterhelden.de/hilfe",
        "utm": {"source": "newsletter", "campaign": "mai"},
        "consent": {"newsletter": lead_type == "newsletter", "text_version": "nl-2026-03", "given_at": "2026-05-01T08:00:00Z"},
        "wp_form_id": 12
    })
}

impl Env {
    async fn run_with(&self, crm: &dyn LeadsCrm, key: &str, p: &Value) -> Result<Outcome, String> {
        let lead = validate(p, Region::DE).map_err(|e| e.to_string())?;
        Engine {
            crm,
            store: &self.store,
            settings: &self.settings,
        }
        .process(key, &lead, chrono::Utc::now())
        .await
        .map_err(|e| e.to_string())
    }
    async fn run(&self, key: &str, p: &Value) -> Result<Outcome, String> {
        self.run_with(&self.espo, key, p).await
    }
}

#[tokio::test]
async fn each_lead_type_arrives_with_its_fields() {
    let env = env().await;
    for (i, t) in ["mieter", "vermieter", "kontakt"].iter().enumerate() {
        let mut p = payload(t, &format!("Max{i}@Example.de"));
        p["contact"]["phone"] = json!(format!("0511 / 123 45 6{i}"));
        let out = env.run(&format!("msg_{t}"), &p).await.expect("run");
        assert!(out.created && out.entity == "Lead", "{out:?}");
        let lead = env.fake.get("Lead", &out.id).expect("lead");
        assert_eq!(lead["firstName"], "Max");
        assert_eq!(lead["lastName"], "Mustermann");
        assert_eq!(lead["salutationName"], "Mr.");
        assert_eq!(lead["emailAddress"], format!("max{i}@example.de"));
        assert_eq!(lead["phoneNumber"], format!("+49511123456{i}"));
        assert_eq!(lead["source"], "Web Site");
        let d = lead["description"].as_str().unwrap_or("");
        assert!(d.contains("https://vermieterhelden.de/hilfe"), "{d}");
        assert!(
            d.contains("utm_campaign=mai") && d.contains("\"wp_form_id\":12"),
            "{d}"
        );
        assert!(d.contains(&format!("[vermieterhelden:msg_{t}]")), "{d}");
    }
    let leads = env.fake.all("Lead");
    let by_type = |label: &str| {
        leads
            .iter()
            .find(|l| l["description"].as_str().unwrap_or("").starts_with(label))
            .cloned()
            .expect(label)
    };
    let m = by_type("Mieter-Anfrage");
    assert_eq!(m["assignedUserId"], "userMieter");
    assert_eq!(m["teamsIds"], json!(["teamMiete"]));
    assert_eq!(m["status"], "Assigned");
    assert_eq!(by_type("Kontaktformular")["status"], "New");
    // A Task for each assigned inquiry, none for the unassigned contact form.
    let tasks = env.fake.all("Task");
    assert_eq!(tasks.len(), 2);
    let t = tasks
        .iter()
        .find(|t| t["assignedUserId"] == "userMieter")
        .expect("task");
    assert_eq!(t["parentType"], "Lead");
    assert_eq!(t["parentId"], m["id"]);
    assert_eq!(t["status"], "Not Started");
}

#[tokio::test]
async fn newsletter_goes_to_the_target_list_not_the_pipeline() {
    let env = env().await;
    let out = env
        .run("msg_nl", &payload("newsletter", "leser@example.de"))
        .await
        .expect("run");
    let lead = env.fake.get("Lead", &out.id).expect("lead");
    assert_eq!(lead["status"], "Recycled");
    assert!(lead.get("assignedUserId").is_none());
    assert!(lead["description"].as_str().unwrap_or("").contains(
        "Newsletter-Einwilligung: Textversion nl-2026-03, erteilt 2026-05-01 08:00:00 UTC"
    ));
    assert_eq!(
        env.fake.related("TargetList", &env.list_id, "leads"),
        vec![out.id.clone()]
    );
    assert!(env.fake.all("Task").is_empty());
    // An existing contact signing up is linked, not duplicated as a Lead.
    let c = env
        .fake
        .insert(
            "Contact",
            json!({"lastName": "Leser", "emailAddress": "stamm@example.de"}),
        )
        .expect("contact");
    let out = env
        .run("msg_nl2", &payload("newsletter", "Stamm@example.de"))
        .await
        .expect("run");
    assert_eq!(
        (out.entity.as_str(), out.id.as_str()),
        ("Contact", c["id"].as_str().unwrap())
    );
    assert_eq!(
        env.fake.related("TargetList", &env.list_id, "contacts"),
        vec![out.id]
    );
    assert_eq!(env.fake.all("Lead").len(), 1);
}

/// Fails the first create of `entity` *after* EspoCRM stored it, like a crash (or a lost
/// answer) between the create and recording it.
struct LoseCreateAnswer<'a> {
    inner: &'a EspoCrmClient,
    entity: &'static str,
    lose: AtomicUsize,
}

impl LeadsCrm for LoseCreateAnswer<'_> {
    fn find<'a>(
        &'a self,
        e: &'a str,
        q: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Vec<Value>, EspoCrmError>> {
        self.inner.find(e, q)
    }
    fn create<'a>(
        &'a self,
        e: &'a str,
        b: &'a Value,
        skip: bool,
    ) -> BoxFuture<'a, Result<Value, EspoCrmError>> {
        Box::pin(async move {
            let r = LeadsCrm::create(self.inner, e, b, skip).await;
            if e == self.entity && self.lose.load(Ordering::SeqCst) > 0 {
                self.lose.fetch_sub(1, Ordering::SeqCst);
                return Err(EspoCrmError::Transport {
                    path: e.into(),
                    message: "injected: answer lost after the create".into(),
                });
            }
            r
        })
    }
    fn update<'a>(
        &'a self,
        e: &'a str,
        id: &'a EspoId,
        p: &'a Value,
    ) -> BoxFuture<'a, Result<Value, EspoCrmError>> {
        LeadsCrm::update(self.inner, e, id, p)
    }
    fn link<'a>(
        &'a self,
        e: &'a str,
        id: &'a EspoId,
        l: &'a str,
        f: &'a EspoId,
    ) -> BoxFuture<'a, Result<(), EspoCrmError>> {
        LeadsCrm::link(self.inner, e, id, l, f)
    }
    fn notify<'a>(&'a self, n: &'a NewNotification) -> BoxFuture<'a, Result<(), EspoCrmError>> {
        self.inner.notify(n)
    }
}

#[tokio::test]
async fn a_crash_between_create_and_record_creates_no_second_lead() {
    let env = env().await;
    let crm = LoseCreateAnswer {
        inner: &env.espo,
        entity: "Lead",
        lose: AtomicUsize::new(1),
    };
    let p = payload("mieter", "anna@example.de");
    let first = env.run_with(&crm, "msg_crash", &p).await;
    assert!(
        first.is_err(),
        "the injected failure surfaces as an error: {first:?}"
    );
    assert_eq!(
        env.fake.all("Lead").len(),
        1,
        "EspoCRM has the lead already"
    );
    let retry = env.run_with(&crm, "msg_crash", &p).await.expect("retry");
    assert_eq!(retry.label(), "adopted");
    let again = env.run("msg_crash", &p).await.expect("redelivery");
    assert_eq!(again.label(), "already_done");
    assert_eq!(env.fake.all("Lead").len(), 1);
    assert_eq!(env.fake.writes("Lead"), 1, "exactly one create request");
    assert_eq!(env.fake.all("Task").len(), 1, "one task, too");
}

#[tokio::test]
async fn existing_records_are_updated_or_named_per_policy() {
    let mut env = env().await;
    let existing = env
        .fake
        .insert(
            "Lead",
            json!({"lastName": "Mustermann", "phoneNumber": "+495111234567", "description": "Erstkontakt"}),
        )
        .expect("lead");
    // Same phone, other e-mail: policy update appends the inquiry, fills the empty e-mail.
    let out = env
        .run("msg_again", &payload("vermieter", "neu@example.de"))
        .await
        .expect("run");
    assert_eq!(out.id, existing["id"].as_str().unwrap());
    assert!(!out.created);
    let stored = env.fake.get("Lead", &out.id).expect("lead");
    let d = stored["description"].as_str().unwrap_or("");
    assert!(
        d.starts_with("Erstkontakt\n\n---\nVermieter-Anfrage"),
        "{d}"
    );
    assert_eq!(stored["emailAddress"], "neu@example.de");
    assert_eq!(env.fake.all("Lead").len(), 1);
    // Policy new_lead: a second Lead naming the first.
    env.settings.existing = ExistingPolicy::NewLead;
    let out = env
        .run("msg_third", &payload("vermieter", "neu@example.de"))
        .await
        .expect("run");
    assert!(out.created);
    let d = env.fake.get("Lead", &out.id).expect("lead")["description"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        d.starts_with(&format!(
            "Bereits bekannt als Lead {}",
            existing["id"].as_str().unwrap()
        )),
        "{d}"
    );
}

#[tokio::test]
async fn espocrm_409_duplicate_is_understood() {
    let env = env().await;
    // EspoCRM's duplicate check (trimmed, case-insensitive) finds what our equals search
    // does not: the 409 names the record, which gets the inquiry.
    let existing = env
        .fake
        .insert(
            "Lead",
            json!({"lastName": "Alt", "emailAddress": " dup@example.de "}),
        )
        .expect("lead");
    let mut p = payload("kontakt", "dup@example.de");
    p["contact"]["phone"] = Value::Null;
    let out = env.run("msg_dup", &p).await.expect("run");
    assert_eq!(out.id, existing["id"].as_str().unwrap());
    assert_eq!(env.fake.all("Lead").len(), 1);
    assert!(env.fake.get("Lead", &out.id).unwrap()["description"]
        .as_str()
        .unwrap_or("")
        .contains("[vermieterhelden:msg_dup]"));
}

#[tokio::test]
async fn newsletter_without_target_list_fails_permanently_after_nothing_half_written() {
    let mut env = env().await;
    env.settings.newsletter_target_list_id = None;
    let err = env
        .run("msg_nolist", &payload("newsletter", "x@example.de"))
        .await
        .expect_err("must fail");
    assert!(err.contains("LEADS_NEWSLETTER_TARGET_LIST_ID"), "{err}");
    assert_eq!(env.fake.total_writes(), 0);
}

#[tokio::test]
async fn a_lost_task_answer_creates_no_second_task_or_lead() {
    let env = env().await;
    let crm = LoseCreateAnswer {
        inner: &env.espo,
        entity: "Task",
        lose: AtomicUsize::new(1),
    };
    let p = payload("vermieter", "vera@example.de");
    assert!(env.run_with(&crm, "msg_task", &p).await.is_err());
    assert_eq!(
        env.fake.all("Task").len(),
        1,
        "EspoCRM has the task already"
    );
    let retry = env.run_with(&crm, "msg_task", &p).await.expect("retry");
    assert_eq!(retry.label(), "adopted", "the recorded Lead is reused");
    assert_eq!(env.fake.writes("Lead"), 1);
    assert_eq!(
        env.fake.writes("Task"),
        1,
        "found by its marker, not created again"
    );
}
