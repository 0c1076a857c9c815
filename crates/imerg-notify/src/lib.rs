//! New-granule notifications as they arrive on the queue, turned into what the listener acts on.
//!
//! Accepted message bodies (all JSON):
//! - **S3 event notifications**: `{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket":
//!   {"name"}, "object": {"key", "eTag"?}}}, ...]}`, several records per message, keys URL-encoded
//!   (`%2F`, `+` for a space). `ObjectCreated:*` is a creation, `ObjectRemoved:*` a removal.
//! - The **`s3:TestEvent`** S3 sends when notifications are configured (`{"Event": "s3:TestEvent"}`).
//! - The same **wrapped in an SNS envelope** (raw delivery off): `{"Type": "Notification",
//!   "Message": "<the JSON above, as a string>"}`.
//! - **EventBridge** S3 events: `{"detail-type": "Object Created" | "Object Deleted", "detail":
//!   {"bucket": {"name"}, "object": {"key"}}}` (keys not URL-encoded).
//! - **CMR ingest-subscription** granule messages, as CMR sends them (metadata-db-app
//!   `subscriptions.clj`, `create-notification-message-body`): the body is
//!   `{"concept-id": "G…", "granule-ur": "…", "producer-granule-id"?: "…", "location":
//!   "https://cmr.earthdata.nasa.gov/search/concepts/<concept-id>/<revision-id>"}`, published to
//!   SNS with the message attributes `mode` (`New`, `Update`, `Delete`) and
//!   `collection-concept-id`, and the subject `"<mode> Notification"`. CMR does not set raw
//!   delivery, so SQS normally receives it **inside the SNS envelope**, the attributes under
//!   `MessageAttributes` (`{"mode": {"Type": "String", "Value": "Update"}, …}`). With raw
//!   delivery the body is the bare object and the attributes are SQS message attributes: pass
//!   them to [`parse_message_detailed`].
//!   - The granule is named by `granule-ur` after its last `:` (GES DISC URs are
//!     `<ShortName>.<Version>:<file name>`, e.g.
//!     `GPM_3IMERGHHL.07:3B-HHR-L.MS.MRG.3IMERG.20260304-S000000-E002959.0000.V07C.HDF5`), or by
//!     `producer-granule-id` when only that one ends in a file extension. The `location` URL is
//!     CMR's metadata, not the granule: it gives the revision (its last path segment).
//!   - The action is the `mode` attribute (given by the caller or in the envelope); else an
//!     `action`-like body field; else the SNS subject; else the revision (1 is `New`, more is
//!     `Update`: a `Delete` cannot be told from the body alone); else `New`.
//! - **Other CMR-like granule messages** (the form accepted before the real one was known): any
//!   JSON object that names the granule in one of `location` (unless it is a CMR concept URL),
//!   `granule-ur`, `granule_ur`, `GranuleUR`, `producer-granule-id`, `native-id`, `name` (a URL, a
//!   key or a file name), optionally nested under `granule`; the action comes from `action`,
//!   `event-type`, `eventType` or `operation` (`New`, `Update`, `Delete`; default `New`).
//!
//! SNS subscription confirmations (`"Type": "SubscriptionConfirmation"`) are an
//! [`NotifyError::SnsSubscription`] carrying the `SubscribeURL` for the operator. Anything else
//! is an [`NotifyError::UnknownShape`] naming the top-level fields, for the log line. No input
//! makes the parser panic.
//!
//! [`parse_message`] returns what the listener acts on ([`Notification`]);
//! [`parse_message_detailed`] also returns CMR's identity of the granule ([`CmrGranule`]: concept
//! id, revision, collection), the idempotency key of a CMR message.

use serde_json::Value;

/// What a notification asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new object (or a new granule).
    Created,
    /// An existing granule was reprocessed or its object replaced.
    Updated,
    /// The object (granule) was removed.
    Removed,
}

/// One thing a message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// An object in a bucket, key decoded.
    Object {
        bucket: Option<String>,
        key: String,
        action: Action,
    },
    /// A granule named by CMR: a URL, a key or a bare file name.
    Granule { reference: String, action: Action },
    /// A test message (S3 sends one when notifications are configured): nothing to do.
    Test,
}

/// What a CMR ingest-subscription message says about the granule besides its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmrGranule {
    /// Granule concept id, `G…-<provider>`.
    pub concept_id: String,
    /// The granule UR as CMR sent it (GES DISC: `<ShortName>.<Version>:<file name>`).
    pub granule_ur: Option<String>,
    pub producer_granule_id: Option<String>,
    /// CMR's metadata URL of this revision, `…/search/concepts/<concept-id>/<revision-id>`.
    pub location: Option<String>,
    /// The revision, from the last path segment of `location`; revision 1 is the first ingest.
    pub revision: Option<u64>,
    /// The `collection-concept-id` message attribute, when it was delivered.
    pub collection_concept_id: Option<String>,
    /// The `mode` message attribute (`New`, `Update`, `Delete`) as delivered, if it was.
    pub mode: Option<String>,
}

/// One notification and, for a CMR message, CMR's identity of the granule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub notification: Notification,
    pub cmr: Option<CmrGranule>,
}

/// A message that is not a notification this service understands.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NotifyError {
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("unknown message shape (top-level fields: {fields})")]
    UnknownShape { fields: String },
    #[error("{format} message without {missing}")]
    Incomplete {
        format: &'static str,
        missing: &'static str,
    },
    /// SNS asks for the subscription of this queue to be confirmed (or says it ended): an
    /// operator action, not a granule.
    #[error(
        "SNS {kind} for topic {topic:?}: confirm at {subscribe_url:?} if the subscription is wanted"
    )]
    SnsSubscription {
        kind: String,
        topic: String,
        subscribe_url: String,
    },
}

impl NotifyError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "malformed_json",
            Self::UnknownShape { .. } => "unknown_shape",
            Self::Incomplete { .. } => "incomplete",
            Self::SnsSubscription { .. } => "sns_subscription",
        }
    }
}

/// S3 event keys are URL-encoded with `+` for spaces.
pub fn decode_s3_key(key: &str) -> String {
    let spaced = key.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

fn fields(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut k: Vec<&str> = m.keys().map(String::as_str).take(12).collect();
            k.sort_unstable();
            k.join(", ")
        }
        other => format!("<{}>", type_name(other)),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn action_of(s: &str) -> Option<Action> {
    let s = s.to_ascii_lowercase();
    if s.contains("delete") || s.contains("removed") || s.contains("remove") {
        Some(Action::Removed)
    } else if s.contains("update") {
        Some(Action::Updated)
    } else if s.contains("new")
        || s.contains("created")
        || s.contains("create")
        || s.contains("put")
    {
        Some(Action::Created)
    } else {
        None
    }
}

/// The action a CMR `mode` names: `New`, `Update` or `Delete` (any case).
pub fn action_from_mode(mode: &str) -> Option<Action> {
    match mode.trim().to_ascii_lowercase().as_str() {
        "new" => Some(Action::Created),
        "update" => Some(Action::Updated),
        "delete" => Some(Action::Removed),
        _ => None,
    }
}

/// The granule's name in a granule UR or producer granule id: what follows the last `:` of a
/// GES DISC UR (`GPM_3IMERGHHL.07:<file name>`); anything else (a file name, a key, a URL) as it
/// is, trimmed.
pub fn granule_name(reference: &str) -> &str {
    let r = reference.trim();
    if r.contains("://") {
        return r;
    }
    r.rsplit(':').next().unwrap_or(r)
}

/// Whether a name ends in a file extension (`.HDF5`, `.RT-H5`, `.nc`): the test that prefers a
/// granule UR or producer granule id that is a file name over one that is not.
fn has_extension(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty()
            && (1..=8).contains(&ext.len())
            && ext.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// The revision in a CMR `location` (`…/concepts/<concept-id>/<revision-id>`).
pub fn revision_from_location(location: &str) -> Option<u64> {
    let path = location.trim().split(['?', '#']).next()?;
    let (_, after) = path.rsplit_once("/concepts/")?;
    let mut parts = after.trim_end_matches('/').split('/');
    let (Some(_concept), Some(revision), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    revision.parse().ok()
}

/// Parses one message body into what it announces.
pub fn parse_message(body: &str) -> Result<Vec<Notification>, NotifyError> {
    Ok(parse_message_detailed(body, &[])?
        .into_iter()
        .map(|a| a.notification)
        .collect())
}

/// Parses one message body with the message attributes delivered beside it (SQS message
/// attributes as `(name, string value)`; with SNS raw delivery that is where CMR's `mode` and
/// `collection-concept-id` are). Attributes inside an SNS envelope are read from the body.
pub fn parse_message_detailed(
    body: &str,
    attributes: &[(&str, &str)],
) -> Result<Vec<Announcement>, NotifyError> {
    let v: Value = serde_json::from_str(body).map_err(|e| NotifyError::NotJson(e.to_string()))?;
    let ctx = Context {
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        subject: None,
    };
    parse_value(&v, &ctx, 0)
}

/// What came with the message besides the body: attributes and the SNS subject.
#[derive(Debug, Clone, Default)]
struct Context {
    attributes: Vec<(String, String)>,
    subject: Option<String>,
}

impl Context {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Adds an SNS envelope's `MessageAttributes` (`{"name": {"Type", "Value"}}`) and subject.
    fn with_sns(&self, envelope: &Value) -> Self {
        let mut out = self.clone();
        if let Some(attrs) = envelope["MessageAttributes"].as_object() {
            for (k, a) in attrs {
                if let Some(value) = a["Value"].as_str() {
                    out.attributes.push((k.clone(), value.to_string()));
                }
            }
        }
        out.subject = envelope["Subject"].as_str().map(String::from);
        out
    }
}

fn plain(notifications: Vec<Notification>) -> Vec<Announcement> {
    notifications
        .into_iter()
        .map(|notification| Announcement {
            notification,
            cmr: None,
        })
        .collect()
}

fn parse_value(v: &Value, ctx: &Context, depth: u8) -> Result<Vec<Announcement>, NotifyError> {
    // SNS envelope: the real message is a JSON string inside.
    if v["Type"] == "Notification" {
        if let (Some(inner), true) = (v["Message"].as_str(), depth < 2) {
            let inner: Value = serde_json::from_str(inner)
                .map_err(|e| NotifyError::NotJson(format!("SNS Message: {e}")))?;
            return parse_value(&inner, &ctx.with_sns(v), depth + 1);
        }
        return Err(NotifyError::Incomplete {
            format: "SNS",
            missing: "a Message string",
        });
    }
    if let Some(kind @ ("SubscriptionConfirmation" | "UnsubscribeConfirmation")) =
        v["Type"].as_str()
    {
        return Err(NotifyError::SnsSubscription {
            kind: kind.to_string(),
            topic: v["TopicArn"].as_str().unwrap_or("").to_string(),
            subscribe_url: v["SubscribeURL"].as_str().unwrap_or("").to_string(),
        });
    }
    if v["Event"] == "s3:TestEvent" {
        return Ok(plain(vec![Notification::Test]));
    }
    if let Some(records) = v["Records"].as_array() {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let key = r["s3"]["object"]["key"]
                .as_str()
                .ok_or(NotifyError::Incomplete {
                    format: "S3 event",
                    missing: "Records[].s3.object.key",
                })?;
            let action = r["eventName"]
                .as_str()
                .and_then(action_of)
                .unwrap_or(Action::Created);
            out.push(Notification::Object {
                bucket: r["s3"]["bucket"]["name"].as_str().map(String::from),
                key: decode_s3_key(key),
                action,
            });
        }
        return Ok(plain(out));
    }
    if let (Some(dt), Some(detail)) = (v["detail-type"].as_str(), v.get("detail")) {
        let key = detail["object"]["key"]
            .as_str()
            .ok_or(NotifyError::Incomplete {
                format: "EventBridge",
                missing: "detail.object.key",
            })?;
        return Ok(plain(vec![Notification::Object {
            bucket: detail["bucket"]["name"].as_str().map(String::from),
            key: key.to_string(),
            action: action_of(dt).unwrap_or(Action::Created),
        }]));
    }
    match cmr(v, ctx) {
        Some(found) => found,
        None => Err(NotifyError::UnknownShape { fields: fields(v) }),
    }
}

/// A non-empty trimmed string field.
fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v[field].as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// CMR granule messages (see the module doc): None if `v` does not look like one at all.
fn cmr(v: &Value, ctx: &Context) -> Option<Result<Vec<Announcement>, NotifyError>> {
    const NAME_FIELDS: &[&str] = &[
        "location",
        "granule-ur",
        "granule_ur",
        "GranuleUR",
        "producer-granule-id",
        "native-id",
        "name",
    ];
    const ACTION_FIELDS: &[&str] = &["action", "event-type", "eventType", "operation"];
    v.as_object()?;
    let scopes: Vec<&Value> = [Some(v), v.get("granule")].into_iter().flatten().collect();
    let location = text(v, "location");
    let revision = location.and_then(revision_from_location);
    // A CMR concept URL is CMR's metadata of the granule, not the granule.
    let is_concept_url =
        revision.is_some() || location.is_some_and(|l| l.contains("/search/concepts/"));
    let candidates: Vec<&str> = scopes
        .iter()
        .flat_map(|s| NAME_FIELDS.iter().map(move |f| (*f, text(s, f))))
        .filter_map(|(f, x)| match (f, x) {
            ("location", Some(_)) if is_concept_url => None,
            ("location", x) => x,
            (_, x) => x.map(granule_name),
        })
        .filter(|x| !x.is_empty())
        .collect();
    let concept_id = text(v, "concept-id");
    let Some(reference) = candidates
        .iter()
        .find(|c| has_extension(c))
        .or(candidates.first())
    else {
        // CMR's own shape without a granule name (older CMR sent only the concept id).
        return concept_id.map(|_| {
            Err(NotifyError::Incomplete {
                format: "CMR",
                missing: "granule-ur",
            })
        });
    };
    let mode = ctx.attribute("mode");
    let action = mode
        .and_then(action_from_mode)
        .or_else(|| {
            scopes
                .iter()
                .find_map(|s| ACTION_FIELDS.iter().find_map(|f| s[*f].as_str()))
                .and_then(action_of)
        })
        .or_else(|| {
            ctx.subject
                .as_deref()
                .and_then(|s| s.split_whitespace().next())
                .and_then(action_from_mode)
        })
        .or(match revision {
            Some(1) => Some(Action::Created),
            Some(_) => Some(Action::Updated),
            None => None,
        })
        .unwrap_or(Action::Created);
    let details = concept_id.map(|id| CmrGranule {
        concept_id: id.to_string(),
        granule_ur: text(v, "granule-ur").map(String::from),
        producer_granule_id: text(v, "producer-granule-id").map(String::from),
        location: location.map(String::from),
        revision,
        collection_concept_id: ctx.attribute("collection-concept-id").map(String::from),
        mode: mode.map(String::from),
    });
    Some(Ok(vec![Announcement {
        notification: Notification::Granule {
            reference: reference.to_string(),
            action,
        },
        cmr: details,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "GPM_L3/GPM_3IMERGHH.07/2024/183/3B-HHR.MS.MRG.3IMERG.20240701-S000000-E002959.0000.V07B.HDF5";

    fn obj(key: &str, action: Action) -> Notification {
        Notification::Object {
            bucket: Some("b".into()),
            key: key.into(),
            action,
        }
    }

    #[test]
    fn s3_event_with_several_records_and_encoded_keys() {
        let body = format!(
            r#"{{"Records": [
                {{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                  "s3": {{"bucket": {{"name": "b"}}, "object": {{"key": "{}", "eTag": "x"}}}}}},
                {{"eventName": "ObjectCreated:CompleteMultipartUpload",
                  "s3": {{"bucket": {{"name": "b"}}, "object": {{"key": "dir+with+space%2Fa%2Bb.HDF5"}}}}}},
                {{"eventName": "ObjectRemoved:Delete", "s3": {{"bucket": {{"name": "b"}}, "object": {{"key": "{KEY}"}}}}}}
            ]}}"#,
            KEY.replace('/', "%2F")
        );
        assert_eq!(
            parse_message(&body).unwrap(),
            vec![
                obj(KEY, Action::Created),
                obj("dir with space/a+b.HDF5", Action::Created),
                obj(KEY, Action::Removed)
            ]
        );
    }

    #[test]
    fn test_event_sns_envelope_and_eventbridge() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-07-01T00:00:00Z","Bucket":"b"}"#;
        assert_eq!(parse_message(test).unwrap(), vec![Notification::Test]);
        let inner = format!(
            r#"{{"Records":[{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"{KEY}"}}}}}}]}}"#
        );
        let sns = serde_json::json!({"Type": "Notification", "MessageId": "m", "TopicArn": "t", "Message": inner}).to_string();
        assert_eq!(
            parse_message(&sns).unwrap(),
            vec![obj(KEY, Action::Created)]
        );
        let sns_test = serde_json::json!({"Type": "Notification", "Message": test}).to_string();
        assert_eq!(parse_message(&sns_test).unwrap(), vec![Notification::Test]);
        let eb = format!(
            r#"{{"version":"0","detail-type":"Object Created","source":"aws.s3","detail":{{"bucket":{{"name":"b"}},"object":{{"key":"{KEY}","etag":"e"}}}}}}"#
        );
        assert_eq!(parse_message(&eb).unwrap(), vec![obj(KEY, Action::Created)]);
        let eb_del = eb.replace("Object Created", "Object Deleted");
        assert_eq!(
            parse_message(&eb_del).unwrap(),
            vec![obj(KEY, Action::Removed)]
        );
    }

    #[test]
    fn cmr_messages_are_parsed_defensively() {
        let url = format!("s3://gesdisc-cumulus-prod-protected/{KEY}");
        let cases = [
            (
                serde_json::json!({"concept-id": "G1", "location": url, "action": "New"}),
                Action::Created,
            ),
            (
                serde_json::json!({"granule-ur": "3B-HHR.MS.MRG.3IMERG.20240701-S000000-E002959.0000.V07B.HDF5", "event-type": "UPDATE"}),
                Action::Updated,
            ),
            (
                serde_json::json!({"granule": {"GranuleUR": "x.HDF5"}, "operation": "Delete"}),
                Action::Removed,
            ),
            (
                serde_json::json!({"producer-granule-id": "y.HDF5"}),
                Action::Created,
            ),
        ];
        for (v, action) in cases {
            let got = parse_message(&v.to_string()).unwrap();
            assert!(
                matches!(&got[..], [Notification::Granule { action: a, .. }] if *a == action),
                "{v}: {got:?}"
            );
        }
        let Notification::Granule { reference, .. } =
            &parse_message(&serde_json::json!({"location": url}).to_string()).unwrap()[0]
        else {
            panic!()
        };
        assert_eq!(reference, &url);
    }

    #[test]
    fn bad_messages_say_what_is_wrong() {
        let e = parse_message("{not json").unwrap_err();
        assert_eq!(e.reason(), "malformed_json");
        let e = parse_message(r#"{"hello": 1, "world": [2]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown message shape (top-level fields: hello, world)"
        );
        assert_eq!(e.reason(), "unknown_shape");
        assert_eq!(
            parse_message("[1,2]").unwrap_err().reason(),
            "unknown_shape"
        );
        let e = parse_message(r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{}}]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("Records[].s3.object.key"), "{e}");
        let e = parse_message(r#"{"Type":"Notification","Message":"{oops"}"#).unwrap_err();
        assert!(e.to_string().contains("SNS Message"), "{e}");
    }
    // ---- CMR ingest-subscription messages as CMR sends them. ----
    //
    // Source of these bodies: shared/notes/anchors-ranged-reads-rechunk-ops.md, section C3, which
    // quotes nasa/Common-Metadata-Repository: the body from metadata-db-app
    // `src/cmr/metadata_db/services/subscriptions.clj` (`create-notification-message-body`:
    // concept-id, granule-ur, producer-granule-id only when the granule has one, location =
    // search root + `concepts/<concept-id>/<revision-id>`), the message attributes (`mode`,
    // `collection-concept-id`) and subject (`"<Mode> Notification"`), and the SNS envelope of
    // the CMR subscription-worker fixture. CMR's real-AWS test in `subscriptions_test.clj` reads
    // the SQS body as that envelope and decodes its `Message` (keys: concept-id, granule-ur,
    // producer-granule-id, location). Values the notes elide ("…") are filled in here.

    /// The body exactly as the notes quote it.
    const NOTES_BODY: &str = r#"{"concept-id": "G1200484356-PROV",
   "granule-ur": "SWOT_L2_HR_PIXC_..._01",
   "producer-granule-id": "SWOT_..._01.nc",
   "location": "https://cmr.earthdata.nasa.gov/search/concepts/G1200484356-PROV/39"}"#;

    /// The subscription-worker fixture's envelope around `body`, with `mode`.
    fn sns_envelope(body: &str, mode: &str) -> String {
        serde_json::json!({
            "Type": "Notification",
            "MessageId": "5b7a1f3c-2d7e-5c1a-9a0e-0c4c3f1e2b6d",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:cmr-subscriptions-prod",
            "Subject": format!("{mode} Notification"),
            "Message": body,
            "Timestamp": "2026-03-04T04:31:07.123Z",
            "SignatureVersion": "1",
            "Signature": "bm90IGEgcmVhbCBzaWduYXR1cmU=",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:123456789012:cmr-subscriptions-prod:1",
            "MessageAttributes": {
                "mode": {"Type": "String", "Value": mode},
                "collection-concept-id": {"Type": "String", "Value": "C1234567890-GES_DISC"},
                "subscriber": {"Type": "String", "Value": "imerg-ingest"}
            }
        })
        .to_string()
    }

    /// A Late-run granule at GES DISC as CMR would announce it (UR = `<ShortName>.<Version>:`
    /// + file name), revision `rev`, with or without a producer granule id.
    fn imerg_body(name: &str, rev: u32, with_pgi: bool) -> String {
        let concept = "G3456789012-GES_DISC";
        let pgi = if with_pgi {
            format!(r#""producer-granule-id": "{name}", "#)
        } else {
            String::new()
        };
        // Field order and spacing as CMR's string concatenation writes them.
        format!(
            r#"{{"concept-id": "{concept}", "granule-ur": "GPM_3IMERGHHL.07:{name}", {pgi}"location": "https://cmr.earthdata.nasa.gov/search/concepts/{concept}/{rev}"}}"#
        )
    }

    const LATE_C: &str = "3B-HHR-L.MS.MRG.3IMERG.20260304-S000000-E002959.0000.V07C.HDF5";

    fn one(body: &str, attrs: &[(&str, &str)]) -> Announcement {
        let mut got = parse_message_detailed(body, attrs).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        got.remove(0)
    }

    #[test]
    fn cmr_message_from_the_notes_in_its_sns_envelope() {
        let a = one(&sns_envelope(NOTES_BODY, "Update"), &[]);
        assert_eq!(
            a.notification,
            Notification::Granule {
                // The granule UR here is not a file name; the producer granule id is.
                reference: "SWOT_..._01.nc".into(),
                action: Action::Updated
            }
        );
        assert_eq!(
            a.cmr,
            Some(CmrGranule {
                concept_id: "G1200484356-PROV".into(),
                granule_ur: Some("SWOT_L2_HR_PIXC_..._01".into()),
                producer_granule_id: Some("SWOT_..._01.nc".into()),
                location: Some(
                    "https://cmr.earthdata.nasa.gov/search/concepts/G1200484356-PROV/39".into()
                ),
                revision: Some(39),
                collection_concept_id: Some("C1234567890-GES_DISC".into()),
                mode: Some("Update".into()),
            })
        );
        // parse_message gives the same notification.
        assert_eq!(
            parse_message(&sns_envelope(NOTES_BODY, "Update")).unwrap(),
            vec![a.notification]
        );
    }

    #[test]
    fn cmr_modes_come_from_the_sns_message_attributes() {
        for (mode, rev, action) in [
            ("New", 1, Action::Created),
            ("Update", 2, Action::Updated),
            ("Delete", 3, Action::Removed),
        ] {
            for with_pgi in [true, false] {
                let body = imerg_body(LATE_C, rev, with_pgi);
                let a = one(&sns_envelope(&body, mode), &[]);
                let Notification::Granule {
                    reference,
                    action: got,
                } = &a.notification
                else {
                    panic!("{a:?}")
                };
                assert_eq!(reference, LATE_C);
                assert_eq!(*got, action, "{mode}");
                let cmr = a.cmr.unwrap();
                assert_eq!(cmr.revision, Some(u64::from(rev)));
                assert_eq!(cmr.mode.as_deref(), Some(mode));
                assert_eq!(
                    cmr.granule_ur.as_deref(),
                    Some(format!("GPM_3IMERGHHL.07:{LATE_C}").as_str())
                );
                assert_eq!(cmr.producer_granule_id.is_some(), with_pgi);
            }
        }
        // The attribute wins over the subject; the subject alone is enough.
        let body = imerg_body(LATE_C, 5, true);
        let mut env: Value = serde_json::from_str(&sns_envelope(&body, "Delete")).unwrap();
        env["Subject"] = "Update Notification".into();
        assert_eq!(
            one(&env.to_string(), &[]).notification,
            Notification::Granule {
                reference: LATE_C.into(),
                action: Action::Removed
            }
        );
        env["Subject"] = "Delete Notification".into();
        env.as_object_mut().unwrap().remove("MessageAttributes");
        let a = one(&env.to_string(), &[]);
        assert!(matches!(
            a.notification,
            Notification::Granule {
                action: Action::Removed,
                ..
            }
        ));
        assert_eq!(a.cmr.unwrap().collection_concept_id, None);
    }

    #[test]
    fn cmr_granule_urs_in_either_extension_and_label() {
        // The form the issue quotes (PPS's extension) and a V07B name on the other side of the
        // Late switch: the name is passed on as it is; the catalog decides.
        for name in [
            "3B-HHR-L.MS.MRG.3IMERG.20260304-S000000-E002959.0000.V07C.RT-H5",
            "3B-HHR-L.MS.MRG.3IMERG.20260303-S133000-E135959.0810.V07B.HDF5",
        ] {
            let a = one(&sns_envelope(&imerg_body(name, 1, false), "New"), &[]);
            assert_eq!(
                a.notification,
                Notification::Granule {
                    reference: name.into(),
                    action: Action::Created
                }
            );
        }
    }

    #[test]
    fn cmr_raw_delivery_takes_the_mode_from_the_sqs_attributes() {
        let body = imerg_body(LATE_C, 4, true);
        let a = one(
            &body,
            &[("mode", "Delete"), ("collection-concept-id", "C1-GES_DISC")],
        );
        assert!(matches!(
            a.notification,
            Notification::Granule {
                action: Action::Removed,
                ..
            }
        ));
        let cmr = a.cmr.unwrap();
        assert_eq!(cmr.collection_concept_id.as_deref(), Some("C1-GES_DISC"));
        assert_eq!(cmr.revision, Some(4));
        // Without attributes the revision decides: 1 is new, more is an update.
        let action = |rev| match one(&imerg_body(LATE_C, rev, true), &[]).notification {
            Notification::Granule { action, .. } => action,
            other => panic!("{other:?}"),
        };
        assert_eq!(action(1), Action::Created);
        assert_eq!(action(2), Action::Updated);
        // The notes' body, raw.
        let a = one(NOTES_BODY, &[("MODE", "new")]);
        assert!(matches!(
            a.notification,
            Notification::Granule {
                action: Action::Created,
                ..
            }
        ));
    }

    #[test]
    fn cmr_messages_that_cannot_name_a_granule_or_ask_for_confirmation() {
        // Older CMR sent only the concept id.
        let e = parse_message(r#"{"concept-id": "G12345-PROV1"}"#).unwrap_err();
        assert_eq!(e.reason(), "incomplete");
        assert!(e.to_string().contains("granule-ur"), "{e}");
        // A concept URL alone is CMR's metadata, not a granule.
        let e = parse_message(
            r#"{"location": "https://cmr.earthdata.nasa.gov/search/concepts/G1-PROV/2"}"#,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "unknown_shape");
        let confirm = serde_json::json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": "m",
            "Token": "t",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:cmr-subscriptions-prod",
            "Message": "You have chosen to subscribe to the topic ...",
            "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=t"
        });
        let e = parse_message(&confirm.to_string()).unwrap_err();
        assert_eq!(e.reason(), "sns_subscription");
        assert!(e.to_string().contains("ConfirmSubscription"), "{e}");
    }

    #[test]
    fn revisions_and_names() {
        let r = revision_from_location;
        assert_eq!(
            r("https://cmr.earthdata.nasa.gov/search/concepts/G1200484356-PROV/39"),
            Some(39)
        );
        assert_eq!(r("http://localhost:3003/concepts/G12345-PROV1/1"), Some(1));
        assert_eq!(
            r("https://cmr.earthdata.nasa.gov/search/concepts/G1-PROV/7/"),
            Some(7)
        );
        assert_eq!(
            r("https://cmr.earthdata.nasa.gov/search/concepts/G1-PROV"),
            None
        );
        assert_eq!(
            r("https://cmr.earthdata.nasa.gov/search/concepts/G1-PROV/x"),
            None
        );
        assert_eq!(
            r("https://cmr.earthdata.nasa.gov/search/concepts/G1-PROV/1/2"),
            None
        );
        assert_eq!(r("s3://b/GPM_L3/x.HDF5"), None);
        assert_eq!(granule_name(&format!("GPM_3IMERGHHL.07:{LATE_C}")), LATE_C);
        assert_eq!(granule_name(&format!(" {LATE_C}\n")), LATE_C);
        assert_eq!(granule_name("s3://b/k.HDF5"), "s3://b/k.HDF5");
        assert_eq!(action_from_mode("Delete"), Some(Action::Removed));
        assert_eq!(action_from_mode("Renew"), None);
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        let env = sns_envelope(&imerg_body(LATE_C, 2, true), "Update");
        let seeds = [
            env.as_str(),
            NOTES_BODY,
            r#"{"Type":"Notification","Message":"{\"concept-id\":5,\"granule-ur\":[1]}","MessageAttributes":{"mode":{"Value":7},"x":null}}"#,
            r#"{"Type":"Notification","Message":"{\"Type\":\"Notification\",\"Message\":\"{\\\"Type\\\":\\\"Notification\\\",\\\"Message\\\":\\\"{}\\\"}\"}"}"#,
            r#"{"concept-id":"G1","granule-ur":"","location":"https://x/search/concepts/G1/99999999999999999999999"}"#,
            r#"{"location":5,"granule":7,"Records":null,"detail-type":1}"#,
            r#"{"Records":[null,1,"x"]}"#,
            r#"{"granule-ur":":::","producer-granule-id":"."}"#,
            "\"just a string\"",
            "null",
        ];
        for seed in seeds {
            let _ = parse_message(seed);
            let _ = parse_message_detailed(seed, &[("mode", "Delete")]);
            // Every truncation and a few byte substitutions at every position.
            let chars: Vec<char> = seed.chars().collect();
            for i in 0..chars.len() {
                let cut: String = chars[..i].iter().collect();
                let _ = parse_message(&cut);
                for c in ['"', '{', '}', ':', '\\', '\u{0}', 'é'] {
                    let mut m = chars.clone();
                    m[i] = c;
                    let _ = parse_message(&m.iter().collect::<String>());
                }
            }
        }
    }
}
