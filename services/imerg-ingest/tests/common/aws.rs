//! A real S3 + SQS stack on loopback for the tests: moto's server, a source bucket whose
//! notification configuration sends S3 events to a queue, that queue with a dead-letter queue and
//! a redrive policy, and a bucket for the Icechunk repository. Plain HTTP requests (the SQS query
//! protocol, S3 REST), so the tests share no code with the service's AWS clients.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Killed, http_body, moto};

/// Credentials and region moto accepts; the service reads them from the environment.
pub const ENVS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

/// The source bucket (granules), the repository bucket and the queues.
pub const SOURCE_BUCKET: &str = "imerg-src";
pub const REPO_BUCKET: &str = "imerg-repo";
pub const REPO: &str = "s3://imerg-repo/store";

/// URL-encodes a form or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of the first `<name>` element.
pub fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// moto with the buckets, queues and notifications created.
pub struct Stack {
    pub moto: Killed,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub queue: String,
    pub dlq: String,
}

impl Stack {
    /// Starts moto and creates everything; messages move to the dead-letter queue after
    /// `max_receive` receives.
    pub fn start(py: &Path, max_receive: u32) -> Self {
        let (moto, addr) = moto(py);
        let mut s = Self {
            moto,
            addr,
            queue: String::new(),
            dlq: String::new(),
        };
        assert_eq!(s.s3("PUT", &format!("/{SOURCE_BUCKET}"), b""), 200);
        assert_eq!(s.s3("PUT", &format!("/{REPO_BUCKET}"), b""), 200);
        s.dlq = s.create_queue("granules-dlq");
        s.queue = s.create_queue("granules");
        let redrive = format!(
            r#"{{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:granules-dlq","maxReceiveCount":"{max_receive}"}}"#
        );
        s.sqs_ok(&format!(
            "Action=SetQueueAttributes&QueueUrl={}&Attribute.1.Name=RedrivePolicy&Attribute.1.Value={}",
            enc(&s.queue),
            enc(&redrive)
        ));
        let notification = r#"<?xml version="1.0" encoding="UTF-8"?><NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><QueueConfiguration><Id>granules</Id><Queue>arn:aws:sqs:us-east-1:123456789012:granules</Queue><Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>"#;
        assert_eq!(
            s.s3(
                "PUT",
                &format!("/{SOURCE_BUCKET}?notification"),
                notification.as_bytes()
            ),
            200
        );
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An S3 REST request. moto takes unsigned requests as anonymous ones, and refuses some of
    /// them (403) once the bucket has been read with credentials: send a (fake) SigV4 header.
    fn s3_body(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        http_body(
            &self.addr,
            method,
            path,
            &[(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            )],
            body,
        )
    }

    fn s3(&self, method: &str, path: &str, body: &[u8]) -> u16 {
        self.s3_body(method, path, body).0
    }

    /// An SQS query-protocol request; the credential scope tells moto which service it is for.
    pub fn sqs(&self, form: &str) -> (u16, String) {
        http_body(
            &self.addr,
            "POST",
            "/",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
                ),
            ],
            form.as_bytes(),
        )
    }

    fn sqs_ok(&self, form: &str) -> String {
        let (code, xml) = self.sqs(form);
        assert_eq!(code, 200, "{form}: {xml}");
        xml
    }

    fn create_queue(&self, name: &str) -> String {
        let xml = self.sqs_ok(&format!("Action=CreateQueue&QueueName={name}"));
        tag(&xml, "QueueUrl").unwrap().to_string()
    }

    /// Uploads an object to the source bucket (its notification reaches the queue).
    pub fn put(&self, key: &str, body: &[u8]) {
        let (code, text) = self.s3_body("PUT", &format!("/{SOURCE_BUCKET}/{key}"), body);
        assert_eq!(code, 200, "PUT {key}: {text}");
    }

    /// Creates a bucket with no notification configuration (uploads to it announce nothing).
    pub fn create_bucket(&self, bucket: &str) {
        let (code, text) = self.s3_body("PUT", &format!("/{bucket}"), b"");
        assert_eq!(code, 200, "PUT /{bucket}: {text}");
    }

    /// Uploads an object to `bucket`.
    pub fn put_in(&self, bucket: &str, key: &str, body: &[u8]) {
        let (code, text) = self.s3_body("PUT", &format!("/{bucket}/{key}"), body);
        assert_eq!(code, 200, "PUT {bucket}/{key}: {text}");
    }

    pub fn delete(&self, key: &str) {
        let code = self.s3("DELETE", &format!("/{SOURCE_BUCKET}/{key}"), b"");
        assert!(code == 204 || code == 200, "DELETE {key}: {code}");
    }

    /// Sends a message body to the granule queue directly.
    pub fn send(&self, body: &str) {
        self.sqs_ok(&format!(
            "Action=SendMessage&QueueUrl={}&MessageBody={}",
            enc(&self.queue),
            enc(body)
        ));
    }

    /// Sends a message body with string message attributes (such as a W3C `traceparent`).
    pub fn send_with_attributes(&self, body: &str, attributes: &[(&str, &str)]) {
        let mut q = format!(
            "Action=SendMessage&QueueUrl={}&MessageBody={}",
            enc(&self.queue),
            enc(body)
        );
        for (i, (k, v)) in attributes.iter().enumerate() {
            let n = i + 1;
            q.push_str(&format!(
                "&MessageAttribute.{n}.Name={}&MessageAttribute.{n}.Value.DataType=String&MessageAttribute.{n}.Value.StringValue={}",
                enc(k),
                enc(v)
            ));
        }
        self.sqs_ok(&q);
    }

    /// An approximate message count of a queue (`ApproximateNumberOfMessages`, ...).
    pub fn count(&self, queue: &str, attribute: &str) -> u64 {
        let xml = self.sqs_ok(&format!(
            "Action=GetQueueAttributes&QueueUrl={}&AttributeName.1=All",
            enc(queue)
        ));
        xml.split("<Attribute>")
            .find(|a| a.contains(&format!("<Name>{attribute}</Name>")))
            .and_then(|a| tag(a, "Value"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {attribute} in {xml}"))
    }

    /// Messages on the granule queue, visible or in flight.
    pub fn pending(&self) -> u64 {
        self.count(&self.queue, "ApproximateNumberOfMessages")
            + self.count(&self.queue, "ApproximateNumberOfMessagesNotVisible")
    }

    /// Messages on the dead-letter queue.
    pub fn dead(&self) -> u64 {
        self.count(&self.dlq, "ApproximateNumberOfMessages")
    }

    /// The bodies on the dead-letter queue (received with a short visibility timeout).
    pub fn dead_bodies(&self) -> Vec<String> {
        let xml = self.sqs_ok(&format!(
            "Action=ReceiveMessage&QueueUrl={}&MaxNumberOfMessages=10&VisibilityTimeout=1",
            enc(&self.dlq)
        ));
        xml.split("<Message>")
            .skip(1)
            .filter_map(|m| tag(m, "Body"))
            .map(|b| {
                b.replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&")
            })
            .collect()
    }

    /// `serve` arguments: source bucket, queue (short polls and visibility for tests) and, when
    /// `s3_repo`, the repository on the stack's S3.
    pub fn serve_args(&self, s3_repo: bool) -> Vec<String> {
        let e = self.endpoint();
        let mut a: Vec<String> = [
            "--watch",
            "false",
            "--source",
            "s3://imerg-src",
            "--source-endpoint",
            &e,
            "--source-region",
            "us-east-1",
            "--sqs-queue-url",
            &self.queue,
            "--sqs-endpoint",
            &e,
            "--sqs-region",
            "us-east-1",
            "--sqs-wait-seconds",
            "1",
            "--sqs-visibility-timeout",
            "2",
            "--batch-age",
            "300ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if s3_repo {
            a.extend(
                [
                    "--repo",
                    REPO,
                    "--repo-endpoint",
                    &e,
                    "--repo-region",
                    "us-east-1",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
        }
        a
    }

    /// `imerg-ingest status --json` of the repository on the stack's S3 (None until it exists).
    pub fn status(&self) -> Option<serde_json::Value> {
        let out = super::bin()
            .args(["status", "--json", "--repo", REPO, "--repo-endpoint"])
            .arg(self.endpoint())
            .args(["--repo-region", "us-east-1"])
            .envs(ENVS.iter().copied())
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "status: {:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits until `done(status)` holds for the S3 repository, the granule queue is drained and
    /// the dead-letter queue holds `dead` messages.
    pub fn wait_until(
        &self,
        timeout: Duration,
        dead: u64,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let st = self.status();
            if let Some(st) = st.as_ref().filter(|s| done(s))
                && self.pending() == 0
                && self.dead() == dead
            {
                return st.clone();
            }
            assert!(
                t0.elapsed() < timeout,
                "not done after {timeout:?}: status {st:?}, pending {}, dead-lettered {}",
                self.pending(),
                self.dead()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Stack {
    /// check_store.py's expectations for the repository on this stack's S3 (status `st`), every
    /// granule of `ranges` present with its source file under `local`, no gaps.
    pub fn expect(
        &self,
        local: &Path,
        ranges: &[(&str, &str)],
        st: &serde_json::Value,
    ) -> serde_json::Value {
        serde_json::json!({
            "repo_s3": {
                "bucket": REPO_BUCKET,
                "prefix": "store",
                "endpoint_url": self.endpoint(),
                "region": "us-east-1",
            },
            "container": "s3://imerg-src/",
            "s3_credentials": {"access_key_id": "test", "secret_access_key": "test"},
            "time_len": st["time_len"],
            "present": super::present(local, ranges),
            "gaps": [],
        })
    }
}

impl Stack {
    /// Per granule key, how many commits of the branch wrote it (each commit's granule list in
    /// its properties), read by Icechunk's Python reader straight from moto; fails if a batch
    /// id appears twice.
    pub fn writes_per_granule(&self) -> std::collections::BTreeMap<String, usize> {
        let out = super::python_script(
            "commit_history.py",
            &[REPO_BUCKET, "store", &self.endpoint()],
            ENVS,
        );
        let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut writes = std::collections::BTreeMap::new();
        let mut batches = Vec::new();
        for c in history["commits"].as_array().unwrap() {
            assert!(
                c["summary"].is_null(),
                "small batches list their granules: {c}"
            );
            if let Some(b) = c["batch_id"].as_str() {
                assert!(
                    !batches.contains(&b.to_string()),
                    "batch {b} committed twice"
                );
                batches.push(b.to_string());
            }
            for g in c["granules"].as_array().unwrap() {
                *writes
                    .entry(g["key"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        writes
    }
}
