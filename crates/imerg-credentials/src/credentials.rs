//! The temporary credentials and the parsing of the endpoint's JSON answer, including the
//! several `expiration` formats seen in the wild.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use object_store::aws::AwsCredential;
use serde_json::Value;

use crate::CredentialsError;

/// One set of temporary S3 credentials. `Debug` shows the access key id and the expiration but
/// redacts the secret key and the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct TemporaryCredentials {
    /// `accessKeyId` (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// `secretAccessKey` (`AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: String,
    /// `sessionToken` (`AWS_SESSION_TOKEN`).
    pub session_token: String,
    /// When they stop working.
    pub expiration: DateTime<Utc>,
}

impl TemporaryCredentials {
    /// The same credentials in object_store's form, for signing S3 requests.
    pub fn to_aws(&self) -> AwsCredential {
        AwsCredential {
            key_id: self.access_key_id.clone(),
            secret_key: self.secret_access_key.clone(),
            token: Some(self.session_token.clone()),
        }
    }
}

impl fmt::Debug for TemporaryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemporaryCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &crate::REDACTED)
            .field("session_token", &crate::REDACTED)
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Parses the endpoint's answer
/// `{"accessKeyId", "secretAccessKey", "sessionToken", "expiration"}` (other fields ignored).
/// `url` and `content_type` only serve error messages; the body is never quoted in them.
pub fn parse_credentials(
    body: &[u8],
    url: &str,
    content_type: Option<&str>,
) -> Result<TemporaryCredentials, CredentialsError> {
    let malformed = |reason: String| CredentialsError::MalformedJson {
        url: url.to_owned(),
        reason,
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let ct = content_type.unwrap_or("none");
        malformed(format!(
            "{e} (content type {ct}, {} bytes; an HTML page usually means the token was not accepted)",
            body.len()
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(malformed(format!(
            "expected a JSON object, got {}",
            json_kind(&value)
        )));
    };
    let field = |name: &'static str| -> Result<&str, CredentialsError> {
        let missing = |problem| CredentialsError::MissingField {
            url: url.to_owned(),
            field: name,
            problem,
        };
        match map.get(name) {
            None => Err(missing("missing")),
            Some(Value::Null) => Err(missing("null")),
            Some(Value::String(s)) if s.trim().is_empty() => Err(missing("empty")),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(missing("not a string")),
        }
    };
    let access_key_id = field("accessKeyId")?.to_owned();
    let secret_access_key = field("secretAccessKey")?.to_owned();
    let session_token = field("sessionToken")?.to_owned();
    let raw_expiration = field("expiration")?;
    let expiration =
        parse_expiration(raw_expiration).ok_or_else(|| CredentialsError::Expiration {
            url: url.to_owned(),
            value: raw_expiration.to_owned(),
        })?;
    Ok(TemporaryCredentials {
        access_key_id,
        secret_access_key,
        session_token,
        expiration,
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses an expiration timestamp. Accepted: RFC 3339 (`2024-01-01T00:00:00Z`,
/// `2024-01-01T00:00:00.123+00:00`), NASA's `2024-01-01 00:00:00+00:00` (space separator,
/// optional fraction, offset with or without colon, or `Z`), and the same without any offset,
/// taken as UTC.
pub fn parse_expiration(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    const WITH_OFFSET: [&str; 4] = [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
        "%Y-%m-%dT%H:%M:%S%.f %#z",
    ];
    for fmt in WITH_OFFSET {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn expiration_formats() {
        let t = utc(2024, 1, 1, 0, 0, 0);
        for s in [
            "2024-01-01 00:00:00+00:00",
            "2024-01-01 00:00:00.000000+00:00",
            "2024-01-01 00:00:00+0000",
            "2024-01-01 00:00:00Z",
            "2024-01-01 00:00:00 +00:00",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00+00:00",
            "2024-01-01T00:00:00.000Z",
            "2024-01-01T00:00:00.000+00:00",
            "2024-01-01T00:00:00+0000",
            "2024-01-01T01:00:00+01:00",
            "2023-12-31 19:00:00-05:00",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00",
            " 2024-01-01 00:00:00+00:00 ",
        ] {
            assert_eq!(parse_expiration(s), Some(t), "{s}");
        }
        assert_eq!(
            parse_expiration("2024-01-01 00:00:00.5+00:00"),
            Some(t + chrono::Duration::milliseconds(500))
        );
        for s in ["", "tomorrow", "2024-13-01 00:00:00+00:00", "1704067200"] {
            assert_eq!(parse_expiration(s), None, "{s}");
        }
    }

    #[test]
    fn parses_a_nasa_answer_and_ignores_extra_fields() {
        let body = br#"{"accessKeyId": "ASIAXXX", "secretAccessKey": "sek", "sessionToken": "tok",
                        "expiration": "2024-07-01 12:30:00+00:00", "other": 1}"#;
        let c = parse_credentials(body, "u", Some("application/json")).unwrap();
        assert_eq!(c.access_key_id, "ASIAXXX");
        assert_eq!(c.secret_access_key, "sek");
        assert_eq!(c.session_token, "tok");
        assert_eq!(c.expiration, utc(2024, 7, 1, 12, 30, 0));
        let aws = c.to_aws();
        assert_eq!(aws.key_id, "ASIAXXX");
        assert_eq!(aws.secret_key, "sek");
        assert_eq!(aws.token.as_deref(), Some("tok"));
    }

    #[test]
    fn field_problems_are_named() {
        let cases: [(&[u8], &str); 6] = [
            (br#"{"secretAccessKey":"s","sessionToken":"t","expiration":"2024-01-01T00:00:00Z"}"#, "`accessKeyId` is missing"),
            (br#"{"accessKeyId":"a","secretAccessKey":null,"sessionToken":"t","expiration":"2024-01-01T00:00:00Z"}"#, "`secretAccessKey` is null"),
            (br#"{"accessKeyId":"a","secretAccessKey":"s","sessionToken":"","expiration":"2024-01-01T00:00:00Z"}"#, "`sessionToken` is empty"),
            (br#"{"accessKeyId":"a","secretAccessKey":"s","sessionToken":"t","expiration":17}"#, "`expiration` is not a string"),
            (br#"[1, 2]"#, "expected a JSON object, got an array"),
            (b"<html>login</html>", "content type text/html"),
        ];
        for (body, want) in cases {
            let err = parse_credentials(body, "u", Some("text/html")).unwrap_err();
            assert!(err.to_string().contains(want), "{err} / {want}");
        }
        let err = parse_credentials(
            br#"{"accessKeyId":"a","secretAccessKey":"s","sessionToken":"t","expiration":"soon"}"#,
            "u",
            None,
        )
        .unwrap_err();
        assert!(matches!(err, CredentialsError::Expiration { .. }));
        assert!(err.to_string().contains("\"soon\""), "{err}");
    }

    #[test]
    fn malformed_json_does_not_quote_the_body() {
        let body = br#"{"accessKeyId":"a","secretAccessKey":"topsecret","sessionToken":"t" "#;
        let err = parse_credentials(body, "u", Some("application/json")).unwrap_err();
        assert!(matches!(err, CredentialsError::MalformedJson { .. }));
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = TemporaryCredentials {
            access_key_id: "ASIAKEY".into(),
            secret_access_key: "the-secret-key".into(),
            session_token: "the-session-token".into(),
            expiration: utc(2024, 1, 1, 0, 0, 0),
        };
        let dbg = format!("{c:?} {c:#?}");
        assert!(dbg.contains("ASIAKEY"));
        assert!(!dbg.contains("the-secret-key"), "{dbg}");
        assert!(!dbg.contains("the-session-token"), "{dbg}");
    }
}
