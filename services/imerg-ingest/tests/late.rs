//! The product that is alive, end to end: the service on the Late profile, its granules announced
//! only by CMR subscription messages as CMR sends them (an SNS envelope, `mode` in the message
//! attributes) across the V07B -> V07C file-name switch, one granule uploaded with no
//! notification at all and found by the reconciliation sweep, GetStatus reporting the sweep and
//! what is still missing, the Python reader checking the values, and `verify` naming a source
//! object replaced behind the store's back. S3 and SQS are moto on loopback; the bucket has no
//! notification configuration, so nothing else announces the uploads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::aws::Stack;
use common::{InProcess, aws_env, bin, check_store, python, series, service_config, synth_with};
use imerg_catalog::{ProductProfile, parse_time};
use imerg_proto::v1;

const BUCKET: &str = "imerg-late";

/// CMR's subscription message for a granule, inside the SNS envelope (see imerg-notify's tests
/// for where the shape comes from).
fn cmr_message(file_name: &str, mode: &str) -> String {
    let concept = "G3456789012-GES_DISC";
    let body = format!(
        r#"{{"concept-id": "{concept}", "granule-ur": "GPM_3IMERGHHL.07:{file_name}", "location": "https://cmr.earthdata.nasa.gov/search/concepts/{concept}/1"}}"#
    );
    serde_json::json!({
        "Type": "Notification",
        "MessageId": "5b7a1f3c-2d7e-5c1a-9a0e-0c4c3f1e2b6d",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:cmr-subscriptions",
        "Subject": format!("{mode} Notification"),
        "Message": body,
        "Timestamp": "2026-03-04T04:31:07.123Z",
        "MessageAttributes": {
            "mode": {"Type": "String", "Value": mode},
            "collection-concept-id": {"Type": "String", "Value": "C1234567890-GES_DISC"}
        }
    })
    .to_string()
}

/// A local server that answers like CMR's granule search (UMM JSON) with `items`, and hands over
/// each request line it receives.
fn cmr_server(items: serde_json::Value) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead as _, BufReader, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let body = serde_json::json!({"hits": items.as_array().map_or(0, Vec::len), "took": 1, "items": items}).to_string();
            let mut s = s;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncmr-hits: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                items.as_array().map_or(0, Vec::len),
                body.len()
            );
            let _ = tx.send(line);
        }
    });
    (format!("http://{addr}"), rx)
}

fn status(grpc: &str) -> v1::GetStatusResponse {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = v1::ingest_service_client::IngestServiceClient::connect(grpc.to_string())
            .await
            .unwrap();
        c.get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    })
}

#[test]
fn late_run_from_cmr_messages_across_the_label_switch_and_a_sweep() {
    aws_env();
    let py = python();
    let stack = Stack::start(&py, 3);
    stack.create_bucket(BUCKET);
    let profile = ProductProfile::late_v07();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("copy");
    // Two granules before the Late run's switch (2026-03-03T14:00Z, V07B) and two after (V07C),
    // written by `synth --product late`, which names them as the product does.
    synth_with(
        &local,
        "2026-03-03T13:00",
        "2026-03-03T15:00",
        &["--product", "late"],
    );
    let switch: Vec<_> = [
        "2026-03-03T13:00",
        "2026-03-03T13:30",
        "2026-03-03T14:00",
        "2026-03-03T14:30",
    ]
    .iter()
    .map(|t| profile.granule_at(parse_time(t).unwrap()).unwrap())
    .collect();
    assert!(switch[1].key.contains(".V07B."), "{}", switch[1].key);
    assert!(switch[2].key.contains(".V07C."), "{}", switch[2].key);
    for g in &switch {
        stack.put_in(BUCKET, &g.key, &std::fs::read(local.join(&g.key)).unwrap());
        let name = g.key.rsplit('/').next().unwrap();
        stack.send(&cmr_message(name, "New"));
    }
    // Yesterday's granule, uploaded with no notification: only the sweep can find it.
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    let y = profile
        .granule_at(profile.start_of(profile.first_index_at_or_after(yesterday)))
        .unwrap();
    let y_start = y.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let y_end = (y.start + chrono::Duration::minutes(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    synth_with(&local, &y_start, &y_end, &["--product", "late"]);
    stack.put_in(BUCKET, &y.key, &std::fs::read(local.join(&y.key)).unwrap());

    // CMR knows yesterday's granule too (its sweep inventory).
    let name = y.key.rsplit('/').next().unwrap().to_string();
    let (cmr, cmr_requests) = cmr_server(serde_json::json!([{
        "meta": {"concept-type": "granule", "concept-id": "G3000000001-GES_DISC", "revision-id": 1},
        "umm": {
            "GranuleUR": format!("GPM_3IMERGHHL.07:{name}"),
            "TemporalExtent": {"RangeDateTime": {"BeginningDateTime": y_start}},
            "RelatedUrls": [{"URL": format!("s3://{BUCKET}/{}", y.key), "Type": "GET DATA VIA DIRECT ACCESS"}]
        }
    }]));
    let mut args = stack.serve_args(false);
    let src = args.iter().position(|a| a == "--source").unwrap();
    args[src + 1] = format!("s3://{BUCKET}");
    args.extend(["--reconcile-every", "1s", "--reconcile-window", "2d"].map(String::from));
    args.extend(["--cmr-url".to_string(), cmr]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cfg = service_config(dir.path(), &args);
    cfg.profile = profile.clone();
    let server = InProcess::start_with(cfg, None);

    let t0 = Instant::now();
    let st = loop {
        let st = status(&server.grpc);
        if st.granules_present == 5 && stack.pending() == 0 && st.last_sweep.is_some() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "not done: {st:?}, pending {}",
            stack.pending()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(st.product, "late");
    assert_eq!(stack.dead(), 0);
    // The sweep saw the unannounced granule; everything else of its two days is still missing,
    // and the granules older than the Late run's latency are overdue.
    let sweep = st.last_sweep.unwrap();
    assert!(sweep.found >= 1 || sweep.present >= 1, "{sweep:?}");
    assert!(
        sweep.still_missing > 50 && sweep.still_missing < sweep.expected,
        "{sweep:?}"
    );
    assert!(
        sweep.overdue > 0 && sweep.overdue <= sweep.still_missing,
        "{sweep:?}"
    );
    assert!(!sweep.missing.is_empty());
    assert_eq!(sweep.inventory_error, "", "{sweep:?}");
    let asked = cmr_requests.recv_timeout(Duration::from_secs(5)).unwrap();
    for want in [
        "/search/granules.umm_json?",
        "short_name=GPM_3IMERGHHL",
        "version=07",
        "temporal=",
    ] {
        assert!(asked.contains(want), "{want} not in {asked}");
    }
    let (_, m) = server.get("/metrics");
    assert!(
        series(
            &m,
            "imerg_granules_ingested_total",
            &[("source", "sqs"), ("result", "added")]
        )
        .is_some_and(|v| v >= 4.0),
        "{m}"
    );
    assert!(
        series(
            &m,
            "imerg_granules_ingested_total",
            &[("source", "reconcile"), ("result", "added")]
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert!(
        series(&m, "imerg_reconcile_overdue_granules", &[]).is_some_and(|v| v > 0.0),
        "{m}"
    );
    assert_eq!(
        series(&m, "imerg_product_expected_latency_seconds", &[]),
        Some(882.0 * 60.0),
        "{m}"
    );
    // `status --server` shows the same sweep next to what the repository holds.
    let out = bin()
        .args([
            "--product",
            "late",
            "status",
            "--json",
            "--server",
            &server.grpc,
            "--repo",
        ])
        .arg(dir.path().join("repo"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(js["granules_present"], 5, "{js}");
    assert!(
        js["last_sweep"]["still_missing"]
            .as_u64()
            .is_some_and(|n| n > 50),
        "{js}"
    );
    assert!(
        js["last_sweep"]["missing"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "{js}"
    );
    server.stop().unwrap();

    // The reader sees the source values, each granule at its position whatever its label.
    let mut all = switch.clone();
    all.push(y.clone());
    let present: Vec<serde_json::Value> = all
        .iter()
        .map(|g| {
            serde_json::json!({
                "time_index": g.time_index,
                "start": g.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "path": local.join(&g.key),
            })
        })
        .collect();
    check_store(
        dir.path(),
        &serde_json::json!({
            "repo": dir.path().join("repo"),
            "container": format!("s3://{BUCKET}/"),
            "s3_credentials": {"access_key_id": "test", "secret_access_key": "test"},
            "time_len": y.time_index + 1,
            "present": present,
            "gaps": [switch[3].time_index + 1],
        }),
    );

    // A source object replaced behind the store's back: `verify` names it.
    stack.put_in(
        BUCKET,
        &switch[2].key,
        &std::fs::read(local.join(&switch[0].key)).unwrap(),
    );
    let out = bin()
        .args([
            "--product",
            "late",
            "verify",
            "--start",
            "2026-03-03T13:00",
            "--end",
            "2026-03-03T15:00",
            "--sample",
            "2",
            "--repo",
        ])
        .arg(dir.path().join("repo"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(failed[0].contains(&switch[2].key), "{text}");
}

/// The README's run command on the Late profile: `serve --demo --product late` writes yesterday's
/// Late-run granules (named as the product names them) and ingests them.
#[test]
fn the_embedded_demo_runs_on_the_late_profile() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::Server::spawn(dir.path(), &["--demo", "--product", "late"], &[]);
    server.wait_added(48);
    let names: Vec<String> = walk(&dir.path().join("granules"));
    assert_eq!(names.len(), 48);
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("3B-HHR-L.MS.MRG.3IMERG.") && n.contains(".V07C.")),
        "{names:?}"
    );
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    out
}
