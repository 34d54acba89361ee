//! EspoCRM as the leads handler needs it, behind [`LeadsCrm`] so the engine runs against the
//! fake (and against failure-injecting wrappers in tests) with the same code.

use bitbylaw_core::ids::EspoId;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::clients::espocrm::{EspoCrmClient, EspoCrmError, ListQuery, NewNotification};

pub trait LeadsCrm: Send + Sync {
    /// Records of `entity` matching `query` (at most the query's limit).
    fn find<'a>(
        &'a self,
        entity: &'a str,
        query: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Vec<Value>, EspoCrmError>>;
    /// `POST {entity}`; 409 is [`EspoCrmError::Duplicate`].
    fn create<'a>(
        &'a self,
        entity: &'a str,
        body: &'a Value,
        skip_duplicate_check: bool,
    ) -> BoxFuture<'a, Result<Value, EspoCrmError>>;
    fn update<'a>(
        &'a self,
        entity: &'a str,
        id: &'a EspoId,
        patch: &'a Value,
    ) -> BoxFuture<'a, Result<Value, EspoCrmError>>;
    fn link<'a>(
        &'a self,
        entity: &'a str,
        id: &'a EspoId,
        link: &'a str,
        foreign: &'a EspoId,
    ) -> BoxFuture<'a, Result<(), EspoCrmError>>;
    fn notify<'a>(&'a self, n: &'a NewNotification) -> BoxFuture<'a, Result<(), EspoCrmError>>;
}

impl LeadsCrm for EspoCrmClient {
    fn find<'a>(
        &'a self,
        entity: &'a str,
        query: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Vec<Value>, EspoCrmError>> {
        Box::pin(self.list_all(entity, query))
    }
    fn create<'a>(
        &'a self,
        entity: &'a str,
        body: &'a Value,
        skip_duplicate_check: bool,
    ) -> BoxFuture<'a, Result<Value, EspoCrmError>> {
        Box::pin(EspoCrmClient::create(
            self,
            entity,
            body,
            skip_duplicate_check,
        ))
    }
    fn update<'a>(
        &'a self,
        entity: &'a str,
        id: &'a EspoId,
        patch: &'a Value,
    ) -> BoxFuture<'a, Result<Value, EspoCrmError>> {
        Box::pin(EspoCrmClient::update(self, entity, id, patch))
    }
    fn link<'a>(
        &'a self,
        entity: &'a str,
        id: &'a EspoId,
        link: &'a str,
        foreign: &'a EspoId,
    ) -> BoxFuture<'a, Result<(), EspoCrmError>> {
        Box::pin(EspoCrmClient::link(self, entity, id, link, foreign))
    }
    fn notify<'a>(&'a self, n: &'a NewNotification) -> BoxFuture<'a, Result<(), EspoCrmError>> {
        Box::pin(async move { self.create_notification(n).await.map(|_| ()) })
    }
}
