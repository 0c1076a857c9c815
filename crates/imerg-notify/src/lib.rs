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
//! - **CMR ingest-subscription** granule messages. Their exact body is not documented publicly, so
//!   any JSON object is accepted that names the granule in one of `location`, `granule-ur`,
//!   `granule_ur`, `GranuleUR`, `producer-granule-id`, `native-id`, `name` (a URL, a key or a file
//!   name), optionally nested under `granule`; the action comes from `action`, `event-type`,
//!   `eventType` or `operation` (`New`, `Update`, `Delete`; default `New`).
//!
//! Anything else is an [`NotifyError::UnknownShape`] naming the top-level fields, for the log line.

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
}

impl NotifyError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "malformed_json",
            Self::UnknownShape { .. } => "unknown_shape",
            Self::Incomplete { .. } => "incomplete",
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

/// Parses one message body into what it announces.
pub fn parse_message(body: &str) -> Result<Vec<Notification>, NotifyError> {
    let v: Value = serde_json::from_str(body).map_err(|e| NotifyError::NotJson(e.to_string()))?;
    parse_value(&v, 0)
}

fn parse_value(v: &Value, depth: u8) -> Result<Vec<Notification>, NotifyError> {
    // SNS envelope: the real message is a JSON string inside.
    if v["Type"] == "Notification" {
        if let (Some(inner), true) = (v["Message"].as_str(), depth < 2) {
            let inner: Value = serde_json::from_str(inner)
                .map_err(|e| NotifyError::NotJson(format!("SNS Message: {e}")))?;
            return parse_value(&inner, depth + 1);
        }
        return Err(NotifyError::Incomplete {
            format: "SNS",
            missing: "a Message string",
        });
    }
    if v["Event"] == "s3:TestEvent" {
        return Ok(vec![Notification::Test]);
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
        return Ok(out);
    }
    if let (Some(dt), Some(detail)) = (v["detail-type"].as_str(), v.get("detail")) {
        let key = detail["object"]["key"]
            .as_str()
            .ok_or(NotifyError::Incomplete {
                format: "EventBridge",
                missing: "detail.object.key",
            })?;
        return Ok(vec![Notification::Object {
            bucket: detail["bucket"]["name"].as_str().map(String::from),
            key: key.to_string(),
            action: action_of(dt).unwrap_or(Action::Created),
        }]);
    }
    cmr(v).ok_or_else(|| NotifyError::UnknownShape { fields: fields(v) })
}

/// CMR granule messages, parsed defensively (see the module doc).
fn cmr(v: &Value) -> Option<Vec<Notification>> {
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
    let obj = v.as_object()?;
    let scopes = [Some(v), obj.get("granule")];
    let reference = scopes.iter().flatten().find_map(|s| {
        NAME_FIELDS
            .iter()
            .find_map(|f| s[*f].as_str().filter(|x| !x.is_empty()))
    })?;
    let action = scopes
        .iter()
        .flatten()
        .find_map(|s| ACTION_FIELDS.iter().find_map(|f| s[*f].as_str()))
        .and_then(action_of)
        .unwrap_or(Action::Created);
    Some(vec![Notification::Granule {
        reference: reference.to_string(),
        action,
    }])
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
}
