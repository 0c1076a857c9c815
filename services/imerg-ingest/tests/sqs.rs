//! Notifications on a real SQS queue (moto on loopback): S3 event messages for granules in a real
//! S3 bucket are received by `serve`'s listener, the granules land in the store, the messages
//! that were fully processed are deleted, and a malformed message stays on the queue (for the
//! redrive policy) while the listener keeps going.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::{Server, bin, http, moto, python, synth};

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
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

fn s3_event(keys: &[&str]) -> String {
    let records: Vec<_> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "imerg-src"}, "object": {"key": k.replace('/', "%2F")}}
            })
        })
        .collect();
    serde_json::json!({"Records": records}).to_string()
}

#[test]
fn granules_announced_on_sqs_are_ingested_and_their_messages_deleted() {
    let py = python();
    let (_moto, addr) = moto(&py);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    synth(&local, "2024-02-01T00:00", "2024-02-01T01:30");
    assert_eq!(http(&addr, "PUT", "/imerg-src", b""), 200);
    let profile = imerg_catalog::ProductProfile::final_v07b();
    let range = imerg_catalog::TimeRange::new(
        imerg_catalog::parse_time("2024-02-01T00:00").unwrap(),
        imerg_catalog::parse_time("2024-02-01T01:30").unwrap(),
    )
    .unwrap();
    let keys: Vec<String> = profile.expected(range).map(|g| g.key).collect();
    for k in &keys {
        let body = std::fs::read(local.join(k)).unwrap();
        assert_eq!(http(&addr, "PUT", &format!("/imerg-src/{k}"), &body), 200);
    }
    let (code, xml) = sqs_query(&addr, "Action=CreateQueue&QueueName=granules");
    assert_eq!(code, 200, "{xml}");
    let queue = tag(&xml, "QueueUrl").unwrap().to_string();
    let send = |body: &str| {
        let (code, xml) = sqs_query(
            &addr,
            &format!(
                "Action=SendMessage&QueueUrl={}&MessageBody={}",
                enc(&queue),
                enc(body)
            ),
        );
        assert_eq!(code, 200, "{xml}");
    };
    send(&s3_event(&[&keys[0], &keys[1]]));
    send(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"imerg-src"}"#);
    send("{this is not json");
    send(&s3_event(&[
        &keys[2],
        "GPM_L3/GPM_3IMERGHHL.07/2024/032/other-product.RT-H5",
    ]));

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
    // The processed messages are deleted; only the malformed one keeps coming back.
    let t0 = Instant::now();
    loop {
        let (_, xml) = sqs_query(
            &addr,
            &format!(
                "Action=GetQueueAttributes&QueueUrl={}&AttributeName.1=All",
                enc(&queue)
            ),
        );
        let count = |name: &str| -> u64 {
            xml.split("<Attribute>")
                .find(|a| a.contains(&format!("<Name>{name}</Name>")))
                .and_then(|a| tag(a, "Value"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(99)
        };
        let left =
            count("ApproximateNumberOfMessages") + count("ApproximateNumberOfMessagesNotVisible");
        if left == 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "messages left: {left}\n{xml}"
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
