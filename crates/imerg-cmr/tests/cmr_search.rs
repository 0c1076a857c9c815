//! End-to-end tests against a real HTTP/1.1 server on 127.0.0.1 (a std `TcpListener` in a
//! thread) that answers like CMR's `granules.umm_json`: pages linked by `CMR-Search-After`,
//! `CMR-Hits`, and scripted misbehaviour (5xx, 4xx, endless cursors, huge and malformed bodies,
//! stalls). Every request is recorded so the tests can check what the client sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use imerg_cmr::{CmrClient, CmrConfig, CmrError, CmrGranule};
use reqwest::Url;

const TOKEN: &str = "edl-token-SUPERSECRET-0123456789";

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Request {
    path: String,
    query: HashMap<String, String>,
    /// Header names lower-cased.
    headers: HashMap<String, String>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What the server answers.
enum Reply {
    /// Status, extra headers, body (with Content-Length).
    Full(u16, Vec<(&'static str, String)>, String),
    /// HTTP 200 without Content-Length: `len` bytes of JSON-ish filler, then close.
    Stream(usize),
    /// Sleep, then answer like `Full`.
    Stall(Duration, Box<Reply>),
}

type Handler = dyn Fn(usize, &Request) -> Reply + Send + Sync;

struct Server {
    root: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    serve(stream, &requests, handler.as_ref());
                }
            })
        };
        Self {
            root: format!("http://{addr}"),
            requests,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn config(&self) -> CmrConfig {
        CmrConfig::new("GPM_3IMERGHH", "07")
            .with_url(&self.root)
            .with_page_size(2)
            .with_token(TOKEN)
            .with_timeout(Duration::from_secs(5))
            .with_max_attempts(3)
            .with_retry_delays(Duration::from_millis(10), Duration::from_millis(50))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag. No join: the test's runtime may be the one
        // that would close a client connection the server is still writing to (it times out).
        let _ = TcpStream::connect(self.addr);
        drop(self.thread.take());
    }
}

fn serve(stream: TcpStream, requests: &Mutex<Vec<Request>>, handler: &Handler) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
    let url = Url::parse(&format!("http://server{target}")).unwrap();
    let request = Request {
        path: url.path().to_owned(),
        query: url.query_pairs().into_owned().collect(),
        headers,
    };
    let n = {
        let mut all = requests.lock().unwrap();
        all.push(request.clone());
        all.len()
    };
    let mut stream = reader.into_inner();
    let mut reply = handler(n, &request);
    if let Reply::Stall(wait, inner) = reply {
        std::thread::sleep(wait);
        reply = *inner;
    }
    match reply {
        Reply::Full(status, extra, body) => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.nasa.cmr.umm_results+json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in extra {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
        Reply::Stream(len) => {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            );
            let _ = stream.write_all(b"{\"items\": [");
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent < len {
                if stream.write_all(&chunk).is_err() {
                    break; // the client hung up at its cap
                }
                sent += chunk.len();
            }
        }
        Reply::Stall(..) => unreachable!("stall inside stall"),
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

/// The file name of the half-hour granule `i` after `t0`.
fn name(i: usize) -> String {
    let start = t0() + TimeDelta::minutes(30 * i as i64);
    let end = start + TimeDelta::seconds(29 * 60 + 59);
    format!(
        "3B-HHR.MS.MRG.3IMERG.{}-S{}-E{}.{:04}.V07B.HDF5",
        start.format("%Y%m%d"),
        start.format("%H%M%S"),
        end.format("%H%M%S"),
        (start - start.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc()).num_minutes()
    )
}

/// A UMM-G item as GES DISC publishes it.
fn item(i: usize) -> serde_json::Value {
    let start = t0() + TimeDelta::minutes(30 * i as i64);
    let n = name(i);
    let dir = format!(
        "GPM_L3/GPM_3IMERGHH.07/{}/{}",
        start.format("%Y"),
        start.format("%j")
    );
    serde_json::json!({
        "meta": {"concept-type": "granule", "concept-id": format!("G{}-GES_DISC", 3_000_000 + i),
                 "revision-id": 1, "provider-id": "GES_DISC"},
        "umm": {
            "GranuleUR": format!("GPM_3IMERGHH.07:{n}"),
            "TemporalExtent": {"RangeDateTime": {
                "BeginningDateTime": start.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                "EndingDateTime": (start + TimeDelta::seconds(1799)).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()}},
            "DataGranule": {"Identifiers": [{"Identifier": n, "IdentifierType": "ProducerGranuleId"}]},
            "RelatedUrls": [
                {"URL": format!("https://data.gesdisc.earthdata.nasa.gov/data/{dir}/{n}"), "Type": "GET DATA"},
                {"URL": format!("s3://gesdisc-cumulus-prod-protected/{dir}/{n}"), "Type": "GET DATA VIA DIRECT ACCESS"},
                {"URL": format!("https://gpm1.gesdisc.eosdis.nasa.gov/opendap/{dir}/{n}"), "Type": "USE SERVICE API"}
            ]
        }
    })
}

/// A page of items `range`, with `CMR-Hits` (when `hits` is set) and a cursor when non-empty.
fn page(range: std::ops::Range<usize>, hits: Option<usize>) -> Reply {
    let items: Vec<_> = range.clone().map(item).collect();
    let mut headers = Vec::new();
    if let Some(h) = hits {
        headers.push(("CMR-Hits", h.to_string()));
    }
    if !range.is_empty() {
        // CMR's cursor: a JSON array of the last item's sort values.
        headers.push((
            "CMR-Search-After",
            format!("[\"{}\",{}]", name(range.end - 1), range.end - 1),
        ));
    }
    let body = serde_json::json!({"hits": hits, "took": 3, "items": items}).to_string();
    Reply::Full(200, headers, body)
}

/// A CMR that holds `total` granules and serves them by `CMR-Search-After`.
fn cmr(total: usize, page_size: usize, with_hits: bool) -> impl Fn(&Request) -> Reply {
    move |req: &Request| {
        let from = match req.header("cmr-search-after") {
            None => 0,
            Some(cursor) => {
                let v: serde_json::Value = serde_json::from_str(cursor).unwrap();
                usize::try_from(v[1].as_u64().unwrap()).unwrap() + 1
            }
        };
        let to = (from + page_size).min(total);
        page(from..to, with_hits.then_some(total))
    }
}

fn window() -> (DateTime<Utc>, DateTime<Utc>) {
    (t0(), t0() + TimeDelta::seconds(2 * 3600 + 29 * 60 + 59))
}

fn check_granule(g: &CmrGranule, i: usize) {
    let n = name(i);
    assert_eq!(g.granule_ur, format!("GPM_3IMERGHH.07:{n}"));
    assert_eq!(g.producer_granule_id.as_deref(), Some(n.as_str()));
    assert_eq!(
        g.temporal_start,
        Some(t0() + TimeDelta::minutes(30 * i as i64))
    );
    assert_eq!(g.concept_id, Some(format!("G{}-GES_DISC", 3_000_000 + i)));
    assert_eq!(g.revision_id, Some(1));
    assert_eq!(g.s3_urls.len(), 1);
    assert!(g.s3_urls[0].starts_with("s3://gesdisc-cumulus-prod-protected/GPM_L3/"));
    assert!(g.s3_urls[0].ends_with(&n));
    assert_eq!(
        g.https_urls.len(),
        1,
        "the OPeNDAP service link is not a data URL"
    );
    assert!(g.https_urls[0].starts_with("https://data.gesdisc.earthdata.nasa.gov/data/"));
}

#[tokio::test]
async fn pages_are_linked_by_search_after_and_stop_at_hits() {
    let serve = cmr(5, 2, true);
    let server = Server::start(move |_, req| serve(req));
    let client = CmrClient::new(server.config()).unwrap();
    let (start, end) = window();

    let granules = client.granules(start, end).await.unwrap();
    assert_eq!(granules.len(), 5);
    for (i, g) in granules.iter().enumerate() {
        check_granule(g, i);
    }

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        3,
        "2 + 2 + 1 and CMR-Hits 5: no fourth request"
    );
    for req in &requests {
        assert_eq!(req.path, "/search/granules.umm_json");
        assert_eq!(req.query["short_name"], "GPM_3IMERGHH");
        assert_eq!(req.query["version"], "07");
        assert_eq!(
            req.query["temporal"],
            "2024-01-01T00:00:00Z,2024-01-01T02:29:59Z"
        );
        assert_eq!(req.query["page_size"], "2");
        assert_eq!(req.query["sort_key"], "start_date");
        assert!(!req.query.contains_key("page_num"));
        assert!(!req.query.contains_key("offset"));
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    assert_eq!(requests[0].header("cmr-search-after"), None);
    assert_eq!(
        requests[1].header("cmr-search-after"),
        Some(format!("[\"{}\",1]", name(1)).as_str()),
        "the cursor goes back verbatim"
    );
    assert_eq!(
        requests[2].header("cmr-search-after"),
        Some(format!("[\"{}\",3]", name(3)).as_str())
    );
}

#[tokio::test]
async fn without_hits_the_search_ends_at_the_empty_page_and_sends_no_token_when_none() {
    let serve = cmr(4, 2, false);
    let server = Server::start(move |_, req| serve(req));
    let mut config = server.config();
    config.token = None;
    let granules = CmrClient::new(config)
        .unwrap()
        .granules(window().0, window().1)
        .await
        .unwrap();
    assert_eq!(granules.len(), 4);
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "two full pages, then the empty one");
    assert!(requests.iter().all(|r| r.header("authorization").is_none()));
}

#[tokio::test]
async fn a_page_without_cursor_is_the_last() {
    let server = Server::start(|_, _| {
        let Reply::Full(status, mut headers, body) = page(0..2, None) else {
            unreachable!()
        };
        headers.retain(|(name, _)| *name != "CMR-Search-After");
        Reply::Full(status, headers, body)
    });
    let client = CmrClient::new(server.config()).unwrap();
    assert_eq!(
        client.granules(window().0, window().1).await.unwrap().len(),
        2
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_cursor() {
    let serve = cmr(3, 2, true);
    // The second request (page 2) fails once.
    let server = Server::start(move |n, req| {
        if n == 2 {
            Reply::Full(
                503,
                vec![("Retry-After", "0".to_owned())],
                "<html>maintenance</html>".to_owned(),
            )
        } else {
            serve(req)
        }
    });
    let client = CmrClient::new(server.config()).unwrap();
    let granules = client.granules(window().0, window().1).await.unwrap();
    assert_eq!(granules.len(), 3);
    check_granule(&granules[2], 2);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[1].header("cmr-search-after"),
        requests[2].header("cmr-search-after")
    );
    assert!(requests[2].header("cmr-search-after").is_some());
}

#[tokio::test]
async fn persistent_5xx_gives_up_after_max_attempts() {
    let server = Server::start(|_, _| Reply::Full(502, vec![], "bad gateway".to_owned()));
    let client = CmrClient::new(server.config()).unwrap();
    let err = client.granules(window().0, window().1).await.unwrap_err();
    assert_eq!(server.requests().len(), 3);
    assert!(
        matches!(err, CmrError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(err.is_transient(), "a later sweep may succeed");
    assert_eq!(err.status(), Some(502));
    let msg = err.to_string();
    assert!(msg.contains("502") && msg.contains("bad gateway"), "{msg}");
}

#[tokio::test]
async fn a_400_is_not_retried_and_hides_the_token() {
    // A server that echoes the token must not get it into the error.
    let server = Server::start(|_, _| {
        Reply::Full(
            400,
            vec![],
            format!(
                "{{\"errors\":[\"Parameter [short_nam] was not recognized. Authorization: Bearer {TOKEN}\"]}}"
            ),
        )
    });
    let client = CmrClient::new(server.config()).unwrap();
    let err = client.granules(window().0, window().1).await.unwrap_err();
    assert_eq!(server.requests().len(), 1, "4xx must not be retried");
    assert!(
        matches!(
            err,
            CmrError::Status {
                status: 400,
                page: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(msg.contains("400"), "{msg}");
    assert!(msg.contains("was not recognized"), "{msg}");
    assert!(!msg.contains(TOKEN), "{msg}");
    assert!(!format!("{err:?}").contains(TOKEN));
    assert!(!format!("{client:?}").contains(TOKEN));
}

#[tokio::test]
async fn an_endless_cursor_stops_at_the_page_cap_with_an_error() {
    // One granule per page and always a new cursor: never reaches the granule cap.
    let server = Server::start(|n, _| page(n - 1..n, None));
    let client = CmrClient::new(server.config().with_max_pages(4)).unwrap();
    let err = client.granules(window().0, window().1).await.unwrap_err();
    assert!(
        matches!(
            err,
            CmrError::TooManyPages {
                limit: 4,
                fetched: 4
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(err.to_string().contains("CMR-Search-After"), "{err}");
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn an_endless_cursor_with_full_pages_stops_at_the_granule_cap() {
    // The same cursor and the same full page forever.
    let server = Server::start(|_, _| page(0..2, None));
    let client = CmrClient::new(server.config().with_max_granules(5)).unwrap();
    let err = client.granules(window().0, window().1).await.unwrap_err();
    assert!(
        matches!(
            err,
            CmrError::TooManyGranules {
                limit: 5,
                fetched: 6,
                hits: None
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn hits_above_the_cap_fail_before_paging() {
    let serve = cmr(1000, 2, true);
    let server = Server::start(move |_, req| serve(req));
    let client = CmrClient::new(server.config().with_max_granules(10)).unwrap();
    let err = client.granules(window().0, window().1).await.unwrap_err();
    assert!(
        matches!(
            err,
            CmrError::TooManyGranules {
                limit: 10,
                hits: Some(1000),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("narrow the temporal window"),
        "{err}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_huge_announced_body_is_refused() {
    let server = Server::start(|_, _| Reply::Full(200, vec![], " ".repeat(1 << 20)));
    let client = CmrClient::new(server.config().with_max_body_bytes(64 * 1024)).unwrap();
    let err = client.granules(window().0, window().1).await.unwrap_err();
    assert!(
        matches!(
            err,
            CmrError::BodyTooLarge {
                limit: 65536,
                page: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(server.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn a_huge_streamed_body_is_cut_at_the_cap() {
    let server = Server::start(|_, _| Reply::Stream(64 << 20));
    let client = CmrClient::new(server.config().with_max_body_bytes(256 * 1024)).unwrap();
    let err = client.granules(window().0, window().1).await.unwrap_err();
    assert!(
        matches!(err, CmrError::BodyTooLarge { limit: 262_144, .. }),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn malformed_json_is_a_typed_error() {
    for body in [
        "<html><body>Earthdata Login</body></html>",
        "{\"hits\": 3, \"items\": [{\"umm\": {\"GranuleUR\": ",
        "{\"errors\": [\"oops\"]}",
        "{\"items\": [{\"umm\": {\"RelatedUrls\": []}}]}",
    ] {
        let server = Server::start(move |_, _| Reply::Full(200, vec![], body.to_owned()));
        let client = CmrClient::new(server.config()).unwrap();
        let err = client.granules(window().0, window().1).await.unwrap_err();
        assert!(
            matches!(err, CmrError::MalformedResponse { page: 1, .. }),
            "{body}: {err:?}"
        );
        assert!(!err.is_transient());
        assert!(!err.to_string().contains("Earthdata Login"), "{err}");
        assert_eq!(server.requests().len(), 1, "not retried: {body}");
    }
    // A non-numeric CMR-Hits header is malformed too.
    let server = Server::start(|_, _| {
        Reply::Full(
            200,
            vec![("CMR-Hits", "lots".to_owned())],
            "{\"items\": []}".to_owned(),
        )
    });
    let err = CmrClient::new(server.config())
        .unwrap()
        .granules(window().0, window().1)
        .await
        .unwrap_err();
    assert!(matches!(err, CmrError::MalformedResponse { .. }), "{err:?}");
}

#[tokio::test]
async fn a_stalled_server_times_out_and_is_retried() {
    let server =
        Server::start(|_, _| Reply::Stall(Duration::from_millis(600), Box::new(page(0..1, None))));
    let config = server
        .config()
        .with_timeout(Duration::from_millis(200))
        .with_max_attempts(2);
    let err = CmrClient::new(config)
        .unwrap()
        .granules(window().0, window().1)
        .await
        .unwrap_err();
    let CmrError::RetriesExhausted { attempts: 2, last } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(
            **last,
            CmrError::Transport {
                kind: "timeout",
                ..
            }
        ),
        "{last:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let config = CmrConfig::new("GPM_3IMERGHH", "07")
        .with_url(format!("http://{addr}"))
        .with_max_attempts(2)
        .with_retry_delays(Duration::from_millis(5), Duration::from_millis(10));
    let err = CmrClient::new(config)
        .unwrap()
        .granules(window().0, window().1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CmrError::RetriesExhausted { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(err.to_string().contains("connect error"), "{err}");
}

#[tokio::test]
async fn a_reversed_window_is_refused_without_a_request() {
    let server = Server::start(|_, _| page(0..0, None));
    let client = CmrClient::new(server.config()).unwrap();
    let (start, end) = window();
    let err = client.granules(end, start).await.unwrap_err();
    assert!(matches!(err, CmrError::InvalidRange { .. }), "{err:?}");
    assert!(server.requests().is_empty());
}
