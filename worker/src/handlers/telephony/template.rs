//! The 3CX CRM template XML we ship (`bitbylaw-worker threecx template --base-url …`), written
//! from FACTS §4 (3CX's "CRM template XML description"): the static API key travels with
//! `Authentication Type="No"` plus an `x-api-key` header per request (the parameter the admin
//! fills in when uploading), the lookup scenario asks `GET {base}/3cx/lookup?phone=[Number]` and
//! maps our answer (`contacts[0]`) to 3CX's outputs, the `ReportCall` scenario posts the call's
//! variables as JSON to `{base}/3cx/calls` (skipped when journaling is switched off).

/// The lookup outputs: 3CX output type = our answer's field.
pub const OUTPUTS: [&str; 10] = [
    "ContactID",
    "FirstName",
    "LastName",
    "CompanyName",
    "Email",
    "PhoneBusiness",
    "PhoneMobile",
    "ContactUrl",
    "EntityType",
    "EntityId",
];

/// The `ReportCall` variables posted (V20 adds the last three).
pub const REPORT_VARIABLES: [&str; 15] = [
    "CallType",
    "CallDirection",
    "Number",
    "Name",
    "EntityId",
    "Agent",
    "AgentEmail",
    "Duration",
    "DateTime",
    "CallStartTimeUTC",
    "CallEstablishedTimeUTC",
    "CallEndTimeUTC",
    "RecordingUrl",
    "Transcription",
    "Summary",
];

/// Why a template cannot be generated.
#[derive(Debug, thiserror::Error)]
#[error("--base-url: {0}")]
pub struct TemplateError(String);

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The template for the gateway at `base_url` (`https://api.bitbylaw.com`).
pub fn template(base_url: &str, country: &str) -> Result<String, TemplateError> {
    let u = url::Url::parse(base_url).map_err(|e| TemplateError(e.to_string()))?;
    if !matches!(u.scheme(), "https" | "http") || u.query().is_some() {
        return Err(TemplateError("an http(s) URL without query".into()));
    }
    let base = escape(base_url.trim_end_matches('/'));
    let country = escape(country);
    let header = r#"<Headers><Value Key="x-api-key" Type="String">[ApiKey]</Value></Headers>"#;
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    x.push_str(&format!(
        "<Crm Country=\"{country}\" Name=\"bitbylaw\" Version=\"1\" SupportsEmojis=\"true\">\n"
    ));
    x.push_str("  <Number Prefix=\"AsIs\" MaxLength=\"[MaxLength]\" />\n");
    x.push_str("  <Connection MaxConcurrentRequests=\"16\" />\n");
    x.push_str("  <Parameters>\n");
    x.push_str("    <Parameter Name=\"ApiKey\" Type=\"Password\" Editor=\"String\" Title=\"bitbylaw API key (THREECX_API_KEY):\" />\n");
    x.push_str("    <Parameter Name=\"ReportCallEnabled\" Type=\"Boolean\" Editor=\"String\" Title=\"Journal calls in EspoCRM\" Default=\"True\" />\n");
    x.push_str("  </Parameters>\n");
    x.push_str("  <Authentication Type=\"No\" />\n");
    x.push_str("  <Scenarios>\n");
    // Lookup.
    x.push_str("    <Scenario Id=\"\" Type=\"REST\">\n");
    x.push_str(&format!(
        "      <Request SkipIf=\"\" Url=\"{base}/3cx/lookup?phone=[Number]\" MessagePasses=\"0\" RequestType=\"Get\" ResponseType=\"Json\">\n        {header}\n      </Request>\n"
    ));
    x.push_str(
        "      <Rules>\n        <Rule Type=\"Any\">contacts.ContactID</Rule>\n      </Rules>\n",
    );
    x.push_str("      <Variables>\n");
    for o in OUTPUTS {
        x.push_str(&format!(
            "        <Variable Name=\"{o}\" Path=\"contacts.{o}\">\n          <Filter />\n        </Variable>\n"
        ));
    }
    x.push_str("      </Variables>\n      <Outputs AllowEmpty=\"false\">\n");
    for o in OUTPUTS {
        x.push_str(&format!(
            "        <Output Type=\"{o}\" Passes=\"0\" Value=\"[{o}]\" />\n"
        ));
    }
    x.push_str("      </Outputs>\n    </Scenario>\n");
    // Journaling.
    x.push_str("    <Scenario Id=\"ReportCall\" Type=\"REST\">\n");
    x.push_str(&format!(
        "      <Request SkipIf=\"[ReportCallEnabled]!=True\" Url=\"{base}/3cx/calls\" MessagePasses=\"0\" RequestEncoding=\"Json\" RequestType=\"Post\" ResponseType=\"Json\">\n        {header}\n        <PostValues>\n"
    ));
    for v in REPORT_VARIABLES {
        x.push_str(&format!(
            "          <Value Key=\"{v}\" Passes=\"1\" Type=\"String\">[{v}]</Value>\n"
        ));
    }
    x.push_str("        </PostValues>\n      </Request>\n      <Variables />\n      <Outputs AllowEmpty=\"true\" />\n    </Scenario>\n");
    x.push_str("  </Scenarios>\n</Crm>\n");
    Ok(x)
}
