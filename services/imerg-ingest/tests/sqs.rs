//! Notifications on a real SQS queue (moto on loopback): a bucket configured to notify the queue,
//! granules uploaded to it, `serve`'s listener receiving the S3 events (and the s3:TestEvent),
//! the granules landing in the store, processed messages deleted, an object of another product
//! ignored, and a poison message moved to the dead-letter queue by the redrive policy while the
//! listener keeps going.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::{Server, bin, http, http_body, moto, python, synth};

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An SQS query-protocol request; the credential scope tells moto which service it is for.
fn sqs_query(addr: &str, form: &str) -> (u16, String) {
    http_body(
        addr,
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

/// An approximate message count of a queue (`ApproximateNumberOfMessages`, ...).
fn queue_count(addr: &str, queue: &str, attribute: &str) -> u64 {
    let (_, xml) = sqs_query(
        addr,
        &format!(
            "Action=GetQueueAttributes&QueueUrl={}&AttributeName.1=All",
            enc(queue)
        ),
    );
    xml.split("<Attribute>")
        .find(|a| a.contains(&format!("<Name>{attribute}</Name>")))
        .and_then(|a| tag(a, "Value"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {attribute} in {xml}"))
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

#[test]
fn granules_announced_on_sqs_are_ingested_and_their_messages_deleted() {
    let py = python();
    let (_moto, addr) = moto(&py);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    synth(&local, "2024-02-01T00:00", "2024-02-01T01:30");
    assert_eq!(http(&addr, "PUT", "/imerg-src", b""), 200);
    // The queue, its dead-letter queue (after 2 receives), and the bucket's notifications to it.
    let queue_url = |xml: &str| tag(xml, "QueueUrl").unwrap().to_string();
    let dlq = queue_url(&sqs_query(&addr, "Action=CreateQueue&QueueName=granules-dlq").1);
    let (code, xml) = sqs_query(&addr, "Action=CreateQueue&QueueName=granules");
    assert_eq!(code, 200, "{xml}");
    let queue = queue_url(&xml);
    let redrive = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:granules-dlq","maxReceiveCount":"2"}"#;
    let (code, xml) = sqs_query(
        &addr,
        &format!(
            "Action=SetQueueAttributes&QueueUrl={}&Attribute.1.Name=RedrivePolicy&Attribute.1.Value={}",
            enc(&queue),
            enc(redrive)
        ),
    );
    assert_eq!(code, 200, "{xml}");
    let notification = r#"<?xml version="1.0" encoding="UTF-8"?><NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><QueueConfiguration><Id>granules</Id><Queue>arn:aws:sqs:us-east-1:123456789012:granules</Queue><Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>"#;
    assert_eq!(
        http(
            &addr,
            "PUT",
            "/imerg-src?notification",
            notification.as_bytes()
        ),
        200
    );
    let profile = imerg_catalog::ProductProfile::final_v07b();
    let range = imerg_catalog::TimeRange::new(
        imerg_catalog::parse_time("2024-02-01T00:00").unwrap(),
        imerg_catalog::parse_time("2024-02-01T01:30").unwrap(),
    )
    .unwrap();
    let keys: Vec<String> = profile.expected(range).map(|g| g.key).collect();
    // Uploads: the bucket notifies the queue (one S3 event per object), plus an object of
    // another product and a poison message that is not JSON.
    for k in &keys {
        let body = std::fs::read(local.join(k)).unwrap();
        assert_eq!(http(&addr, "PUT", &format!("/imerg-src/{k}"), &body), 200);
    }
    assert_eq!(
        http(
            &addr,
            "PUT",
            "/imerg-src/GPM_L3/GPM_3IMERGHHL.07/2024/032/other-product.RT-H5",
            b"x"
        ),
        200
    );
    let (code, xml) = sqs_query(
        &addr,
        &format!(
            "Action=SendMessage&QueueUrl={}&MessageBody={}",
            enc(&queue),
            enc("{this is not json")
        ),
    );
    assert_eq!(code, 200, "{xml}");

    let endpoint = format!("http://{addr}");
    let server = Server::spawn(
        dir.path(),
        &[
            "--watch",
            "false",
            "--source",
            "s3://imerg-src",
            "--source-endpoint",
            &endpoint,
            "--source-region",
            "us-east-1",
            "--sqs-queue-url",
            &queue,
            "--sqs-endpoint",
            &endpoint,
            "--sqs-region",
            "us-east-1",
            "--sqs-wait-seconds",
            "1",
            "--sqs-visibility-timeout",
            "2",
            "--batch-age",
            "300ms",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let repo = dir.path().join("repo");
    let t0 = Instant::now();
    loop {
        let out = bin()
            .args(["status", "--json", "--repo"])
            .arg(&repo)
            .output()
            .unwrap();
        if out.status.success() {
            let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if st["granules_present"] == 3 {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the granules did not arrive"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The processed messages are deleted; the poison one reaches the dead-letter queue.
    let t0 = Instant::now();
    loop {
        let left = queue_count(&addr, &queue, "ApproximateNumberOfMessages")
            + queue_count(&addr, &queue, "ApproximateNumberOfMessagesNotVisible");
        let dead = queue_count(&addr, &dlq, "ApproximateNumberOfMessages");
        if left == 0 && dead == 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "messages left: {left}, dead-lettered: {dead}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("imerg_granules_rejected_total{reason=\"malformed_json\"}"),
        "{metrics}"
    );
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // At least once: a message may be redelivered, never lost.
    assert!(
        value("imerg_granules_received_total{source=\"sqs\"}") >= 3.0,
        "{metrics}"
    );
    assert!(
        value("imerg_granules_received_total{source=\"sqs_ignored\"}") >= 1.0,
        "{metrics}"
    );
}
