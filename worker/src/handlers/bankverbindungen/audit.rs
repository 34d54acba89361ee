//! `beteiligte audit`, Bankverbindungen part (issue 12 item 4): reads the Beteiligter's
//! `CBankverbindungen` and its Advoware entries, compares them with the pure
//! [`compare`](crate::sync::bankverbindungen::audit::compare) and appends the findings to the
//! Beteiligte report (`DIFF …` lines count for the exit status). Read-only; IBANs masked.

use bitbylaw_core::ids::EspoId;

use super::sides::{BankAdvoware, BankEspo, SideError};
use crate::config::Config;
use crate::handlers::beteiligte::audit::AuditReport;
use crate::sync::bankverbindungen::audit::{compare, Finding};
use crate::sync::bankverbindungen::FieldNames;

/// Why the Bankverbindungen part of the audit could not run (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum BankAuditError {
    #[error("Bankverbindungen: {0}")]
    Side(#[from] SideError),
    #[error("Bankverbindungen: {0}")]
    Build(#[from] crate::handlers::BuildError),
}

/// Both sides' Bankverbindungen of Beteiligter `beteiligte`, compared.
pub async fn findings(
    espo: &dyn BankEspo,
    advoware: &dyn BankAdvoware,
    beteiligte: &EspoId,
    fields: &FieldNames,
) -> Result<Vec<Finding>, SideError> {
    let records = espo.list_for(beteiligte).await?;
    let list = match espo.betnr(beteiligte).await? {
        Some(Some(bet_nr)) => advoware.list(bet_nr).await?,
        _ => None,
    };
    let mut out = vec![Finding::Info(format!(
        "Bankverbindungen: {} in EspoCRM, {} in Advoware",
        records.len(),
        list.as_ref()
            .map_or("(Beteiligter not in Advoware)".to_owned(), |l| l
                .len()
                .to_string())
    ))];
    out.extend(compare(&records, list.as_deref(), fields));
    Ok(out)
}

/// Appends the findings to `report`, in its format (`DIFF ` lines are counted).
pub fn append(report: &mut AuditReport, findings: Vec<Finding>) {
    for f in findings {
        match f {
            Finding::Diff(line) => {
                report.differences += 1;
                report.lines.push(format!("DIFF {line}"));
            }
            Finding::Info(line) => report.lines.push(line),
        }
    }
}

/// The CLI's one call after the Beteiligte audit: builds the clients and appends.
pub async fn with_bankverbindungen(
    mut report: AuditReport,
    config: &Config,
    queue: &crate::queue::Queue,
    beteiligte: &EspoId,
) -> Result<AuditReport, BankAuditError> {
    let sides = super::build_sides(config, queue).await?;
    let found = findings(
        sides.espo.as_ref(),
        sides.advoware.as_ref(),
        beteiligte,
        &config.bankverbindungen.fields,
    )
    .await?;
    append(&mut report, found);
    Ok(report)
}
