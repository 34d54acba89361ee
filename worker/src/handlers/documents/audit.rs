//! `documents audit [--entity TYPE:ID]`: EspoCRM's view of the documents against the
//! collections' document lists in xAI.
//!
//! Per owning entity with a collection: every linked document must be in it with its `xaiId`
//! (else **missing**), every file in it must belong to a linked document (else **orphaned**),
//! and the attachment's SHA-256 must equal the document's `xaiSyncedHash` (else **stale**).
//! An entity with linked documents but no collection is reported as well. Reads only.

use std::collections::BTreeSet;

use bitbylaw_core::ids::EspoId;
use serde_json::Value;

use super::engine::{is_closed, related, text, DocError, DocumentsSides};
use crate::clients::espocrm::{ListQuery, Where};
use crate::config::DocumentsSettings;
use crate::sync::documents::{fields, ContentHash, EntityType, DOCUMENTS_LINK};

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A linked document whose file is not in the entity's collection.
    Missing { entity: String, document: String },
    /// A file in the collection that no linked document refers to.
    Orphaned { entity: String, file: String },
    /// The attachment changed since the last sync.
    Stale { entity: String, document: String },
    /// Documents are linked, but the entity has no collection.
    NoCollection { entity: String, documents: usize },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { entity, document } => {
                write!(
                    f,
                    "missing   {entity}: document {document} is not in the collection"
                )
            }
            Self::Orphaned { entity, file } => write!(
                f,
                "orphaned  {entity}: file {file} belongs to no linked document"
            ),
            Self::Stale { entity, document } => write!(
                f,
                "stale     {entity}: document {document} changed since its last sync (hash differs)"
            ),
            Self::NoCollection { entity, documents } => write!(
                f,
                "missing   {entity}: {documents} linked document(s) but no collection"
            ),
        }
    }
}

/// Everything found, and how many entities were looked at.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub entities: usize,
    pub documents: usize,
    pub findings: Vec<Finding>,
}

/// Parses `TYPE:ID` (e.g. `Raeumungsklage:66a1…`).
pub fn parse_entity(raw: &str) -> Result<(EntityType, EspoId), String> {
    let (t, id) = raw
        .split_once(':')
        .ok_or_else(|| format!("{raw:?} is not TYPE:ID"))?;
    let t: EntityType = t.parse().map_err(|e| format!("{e}"))?;
    if !t.owns_collection() {
        return Err(format!("{t} has no collection"));
    }
    let id = EspoId::new(id).map_err(|e| format!("EspoCRM id {id:?}: {e}"))?;
    Ok((t, id))
}

pub async fn audit(
    sides: &DocumentsSides,
    settings: &DocumentsSettings,
    only: Option<(EntityType, EspoId)>,
) -> Result<Report, DocError> {
    let mut entities: Vec<(EntityType, Value)> = Vec::new();
    match only {
        Some((t, id)) => entities.push((t, sides.espo.get(t.as_str(), &id).await?)),
        None => {
            for t in EntityType::OWNING {
                let q = ListQuery::new().filter(Where::is_not_null(fields::XAI_COLLECTION_ID));
                let found = match sides.espo.list_all::<Value>(t.as_str(), &q).await {
                    Ok(list) => list,
                    // An entity type this EspoCRM does not have.
                    Err(e) if e.is_not_found() => Vec::new(),
                    Err(e) => return Err(e.into()),
                };
                entities.extend(found.into_iter().map(|e| (t, e)));
            }
        }
    }
    let mut report = Report::default();
    let limit = sides.xai.settings().max_file_bytes;
    for (t, entity) in entities {
        if is_closed(settings, &entity) {
            continue;
        }
        let Some(id) = text(&entity, "id").and_then(|i| EspoId::new(&i).ok()) else {
            continue;
        };
        report.entities += 1;
        let label = format!("{t} {id}");
        let docs = related(&sides.espo, t.as_str(), &id, DOCUMENTS_LINK).await?;
        report.documents += docs.len();
        let Some(collection) = text(&entity, fields::XAI_COLLECTION_ID) else {
            if !docs.is_empty() {
                report.findings.push(Finding::NoCollection {
                    entity: label,
                    documents: docs.len(),
                });
            }
            continue;
        };
        let members: BTreeSet<String> = sides
            .xai
            .list_documents(&collection)
            .await?
            .iter()
            .map(|d| d.file_id().to_owned())
            .collect();
        let mut expected = BTreeSet::new();
        for doc in &docs {
            let doc_id = text(doc, "id").unwrap_or_default();
            match text(doc, fields::XAI_ID) {
                Some(file) if members.contains(&file) => {
                    expected.insert(file);
                }
                Some(file) => {
                    expected.insert(file);
                    report.findings.push(Finding::Missing {
                        entity: label.clone(),
                        document: doc_id.clone(),
                    });
                }
                None => report.findings.push(Finding::Missing {
                    entity: label.clone(),
                    document: doc_id.clone(),
                }),
            }
            let attachment = text(doc, fields::ATTACHMENT_ID).and_then(|a| EspoId::new(&a).ok());
            if let Some(a) = attachment {
                let content = sides.espo.download_attachment(&a, limit).await;
                let current = content.ok().map(|c| ContentHash::of(&c.bytes));
                let synced =
                    text(doc, fields::XAI_SYNCED_HASH).and_then(|h| ContentHash::parse(&h));
                if current.is_some() && current != synced {
                    report.findings.push(Finding::Stale {
                        entity: label.clone(),
                        document: doc_id,
                    });
                }
            }
        }
        for file in members.difference(&expected) {
            report.findings.push(Finding::Orphaned {
                entity: label.clone(),
                file: file.clone(),
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_arguments_are_type_and_id() {
        let (t, id) =
            parse_entity("Raeumungsklage:661d760b8966e88fb").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t, EntityType::Raeumungsklage);
        assert_eq!(id.as_str(), "661d760b8966e88fb");
        assert!(parse_entity("Raeumungsklage").is_err());
        assert!(parse_entity("Nope:1").is_err());
        assert!(
            parse_entity("CDokumente:661d760b8966e88fb").is_err(),
            "documents own no collection"
        );
        assert!(parse_entity("Account:../x").is_err());
    }
}
