//! End-to-end tests against a real HTTP/1.1 server on 127.0.0.1 that imitates the Earthdata
//! `s3credentials` endpoint: bearer-token check, short-lived credentials numbered by request,
//! and scripted failures (401, 5xx, timeouts, malformed JSON, missing fields).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use imerg_credentials::{CredentialsError, EarthdataConfig, EarthdataCredentialProvider};
use object_store::CredentialProvider;
use object_store::aws::{AmazonS3Builder, AwsCredential, AwsCredentialProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "edl-token-SUPERSECRET-0123456789";

/// What the server answers to one (authorized) request.
#[derive(Clone, Debug)]
enum Reply {
    /// Valid credentials expiring `ttl` from now; `nasa` selects `2024-01-01 00:00:00+00:00`
    /// over RFC 3339 with milliseconds.
    Creds { ttl: Duration, nasa: bool },
    /// This status with this body.
    Status(u16, String),
    /// HTTP 200 with this body.
    Body(String),
    /// Wait this long, then answer like `Creds` (to provoke client timeouts).
    Hang(Duration, Duration),
}

#[derive(Debug)]
struct State {
    /// Requests received (any authorization).
    requests: AtomicUsize,
    /// Replies to use first, in order.
    script: Mutex<VecDeque<Reply>>,
    /// Reply once the script is used up.
    default: Mutex<Reply>,
    /// Delay before every answer, in milliseconds.
    delay_ms: AtomicU64,
    /// The expiration of the last credentials issued.
    last_expiration: Mutex<Option<DateTime<Utc>>>,
    /// The bearer token the endpoint accepts (TOKEN unless changed: a rotation).
    accepted: Mutex<String>,
    /// Tokens minted by the login endpoint.
    minted: AtomicUsize,
}

struct Server {
    url: String,
    state: Arc<State>,
}

impl Server {
    async fn start(default: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/s3credentials", listener.local_addr().unwrap());
        let state = Arc::new(State {
            requests: AtomicUsize::new(0),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            delay_ms: AtomicU64::new(0),
            last_expiration: Mutex::new(None),
            accepted: Mutex::new(TOKEN.to_owned()),
            minted: AtomicUsize::new(0),
        });
        let accept_state = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&accept_state)));
            }
        });
        Self { url, state }
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = reply;
    }

    fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(u64::try_from(delay.as_millis()).unwrap(), Ordering::SeqCst);
    }

    fn last_expiration(&self) -> DateTime<Utc> {
        self.state.last_expiration.lock().unwrap().unwrap()
    }

    fn config(&self) -> EarthdataConfig {
        EarthdataConfig::new(TOKEN)
            .unwrap()
            .with_url(&self.url)
            .with_refresh_margin(Duration::from_secs(1))
            .with_request_timeout(Duration::from_secs(5))
            .with_retry_delays(Duration::from_millis(20), Duration::from_millis(200))
    }

    fn provider(&self, config: &EarthdataConfig) -> EarthdataCredentialProvider {
        EarthdataCredentialProvider::new(config).unwrap()
    }
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    // Read the request head (a GET has no body).
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let accepted = state.accepted.lock().unwrap().clone();
    let authorization = |want: &str| {
        head.lines().skip(1).any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("authorization") && value.trim() == want
            })
        })
    };
    let authorized = authorization(&format!("Bearer {accepted}"));
    // Earthdata Login: alice / pass-word:1 (basic) gets the accepted token.
    if request_line.starts_with("POST /api/users/find_or_create_token ") {
        state.requests.fetch_sub(1, Ordering::SeqCst);
        let (status, body) = if authorization("Basic YWxpY2U6cGFzcy13b3JkOjE=") {
            state.minted.fetch_add(1, Ordering::SeqCst);
            (
                200,
                serde_json::json!({"access_token": accepted, "token_type": "Bearer"}).to_string(),
            )
        } else {
            (401, "{\"error\": \"invalid_credentials\"}".to_owned())
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let reply = {
        let scripted = state.script.lock().unwrap().pop_front();
        scripted.unwrap_or_else(|| state.default.lock().unwrap().clone())
    };
    let delay = Duration::from_millis(state.delay_ms.load(Ordering::SeqCst));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, body) = if !request_line.starts_with("GET /s3credentials ") {
        (404, "not found".to_owned())
    } else if !authorized {
        (401, "missing or wrong bearer token".to_owned())
    } else {
        match reply {
            Reply::Creds { ttl, nasa } => (200, issue(&state, n, ttl, nasa)),
            Reply::Status(code, body) => (code, body),
            Reply::Body(body) => (200, body),
            Reply::Hang(wait, ttl) => {
                tokio::time::sleep(wait).await;
                (200, issue(&state, n, ttl, false))
            }
        }
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Credentials number `n`, recorded as the last issued.
fn issue(state: &State, n: usize, ttl: Duration, nasa: bool) -> String {
    let expiration = (Utc::now() + ttl).trunc_subsecs(if nasa { 0 } else { 3 });
    *state.last_expiration.lock().unwrap() = Some(expiration);
    let text = if nasa {
        expiration.format("%Y-%m-%d %H:%M:%S%:z").to_string()
    } else {
        expiration.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    };
    serde_json::json!({
        "accessKeyId": format!("ASIATEST{n}"),
        "secretAccessKey": format!("SECRET-{n}-xyz"),
        "sessionToken": format!("SESSION-{n}-xyz"),
        "expiration": text,
    })
    .to_string()
}

fn creds(ttl_secs: u64) -> Reply {
    Reply::Creds {
        ttl: Duration::from_secs(ttl_secs),
        nasa: false,
    }
}

#[tokio::test]
async fn first_fetch_sends_the_token_and_parses_the_nasa_expiration() {
    let server = Server::start(Reply::Creds {
        ttl: Duration::from_secs(3600),
        nasa: true,
    })
    .await;
    let provider = server.provider(&server.config());
    assert_eq!(provider.expires_at(), None);

    let c = provider.current().await.unwrap();
    assert_eq!(server.requests(), 1);
    assert_eq!(c.access_key_id, "ASIATEST1");
    assert_eq!(c.secret_access_key, "SECRET-1-xyz");
    assert_eq!(c.session_token, "SESSION-1-xyz");
    assert_eq!(c.expiration, server.last_expiration());
    assert_eq!(provider.expires_at(), Some(c.expiration));
    let left = provider.seconds_until_expiry().unwrap();
    assert!((3590.0..=3600.0).contains(&left), "{left}");
}

#[tokio::test]
async fn cached_until_the_margin_then_refreshed() {
    let server = Server::start(creds(3)).await;
    // Refresh due at expiration - 1 s, i.e. about 2 s after the fetch.
    let provider = server.provider(&server.config());

    let first = provider.current().await.unwrap();
    let again = provider.current().await.unwrap();
    assert_eq!(server.requests(), 1, "second call must come from the cache");
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(again.access_key_id, "ASIATEST1");

    let due = first.expiration - chrono::TimeDelta::seconds(1);
    let wait = (due - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;

    let second = provider.current().await.unwrap();
    assert_eq!(server.requests(), 2);
    assert_eq!(second.access_key_id, "ASIATEST2");
    assert_eq!(second.secret_access_key, "SECRET-2-xyz");
    assert!(second.expiration > first.expiration);
    assert_eq!(provider.expires_at(), Some(second.expiration));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_request() {
    let server = Server::start(creds(3)).await;
    server.set_delay(Duration::from_millis(300));
    let provider = Arc::new(server.provider(&server.config()));

    let burst = |provider: &Arc<EarthdataCredentialProvider>| {
        (0..8)
            .map(|_| {
                let p = Arc::clone(provider);
                tokio::spawn(async move { p.current().await.unwrap().access_key_id.clone() })
            })
            .collect::<Vec<_>>()
    };

    // Cold cache: 8 callers, one request.
    for task in burst(&provider) {
        assert_eq!(task.await.unwrap(), "ASIATEST1");
    }
    assert_eq!(server.requests(), 1);

    // Refresh due: 8 callers while the (slow, 300 ms) refresh is in flight, one more request.
    // Review L8: the others do not wait for it; they keep the still-valid credentials.
    let due = provider.expires_at().unwrap() - chrono::TimeDelta::seconds(1);
    let wait = (due - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
    let t0 = std::time::Instant::now();
    let mut keys = Vec::new();
    for task in burst(&provider) {
        keys.push(task.await.unwrap());
    }
    assert_eq!(server.requests(), 2);
    assert_eq!(
        keys.iter().filter(|k| *k == "ASIATEST2").count(),
        1,
        "{keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| *k == "ASIATEST1").count(),
        7,
        "{keys:?}"
    );
    let fast = tokio::time::timeout(Duration::from_millis(50), provider.current()).await;
    assert_eq!(fast.unwrap().unwrap().access_key_id, "ASIATEST2");
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "the refresher waited for its fetch"
    );
}

/// Review L8: a refresh that takes long (here 2 s) must not hold up callers while the cached
/// credentials are still valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refresh_does_not_hold_up_callers_with_valid_credentials() {
    let server = Server::start(creds(4)).await;
    let provider = Arc::new(server.provider(&server.config()));
    provider.current().await.unwrap();
    let due = provider.expires_at().unwrap() - chrono::TimeDelta::seconds(1);
    let wait = (due - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(50);
    tokio::time::sleep(wait).await;
    server.set_delay(Duration::from_secs(2));
    let refresher = {
        let p = Arc::clone(&provider);
        tokio::spawn(async move { p.current().await.unwrap().access_key_id.clone() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let got = tokio::time::timeout(Duration::from_millis(100), provider.current())
            .await
            .expect("served from the cache while the refresh runs")
            .unwrap();
        assert_eq!(got.access_key_id, "ASIATEST1");
    }
    assert_eq!(refresher.await.unwrap(), "ASIATEST2");
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_hides_the_token() {
    let server = Server::start(creds(3600)).await;
    // A server that echoes the token back must not get it into our error message.
    server.script([Reply::Status(
        401,
        format!("<html>Token {TOKEN} is expired</html>"),
    )]);
    let provider = server.provider(&server.config().with_max_attempts(5));

    let err = provider.current().await.unwrap_err();
    assert_eq!(server.requests(), 1, "401 must not be retried");
    assert!(
        matches!(err, CredentialsError::Status { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.is_unauthorized());
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(msg.contains("401"), "{msg}");
    assert!(msg.contains("is expired"), "{msg}");
    assert!(!msg.contains(TOKEN), "{msg}");
    assert!(!format!("{err:?}").contains(TOKEN));
    assert_eq!(provider.expires_at(), None);

    // A wrong token is rejected by the server the same way.
    let wrong = EarthdataConfig::new("not-the-token")
        .unwrap()
        .with_url(&server.url);
    let err = server.provider(&wrong).current().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let server = Server::start(creds(3600)).await;
    server.script([Reply::Status(500, "oops".into())]);
    let provider = server.provider(&server.config());

    let c = provider.current().await.unwrap();
    assert_eq!(server.requests(), 2);
    assert_eq!(c.access_key_id, "ASIATEST2");
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_max_attempts() {
    let server = Server::start(Reply::Status(503, "maintenance".into())).await;
    let provider = server.provider(&server.config().with_max_attempts(3));

    let err = provider.current().await.unwrap_err();
    assert_eq!(server.requests(), 3);
    assert!(
        matches!(err, CredentialsError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(err.status(), Some(503));
    let msg = err.to_string();
    assert!(
        msg.contains("3 attempts") && msg.contains("503") && msg.contains("maintenance"),
        "{msg}"
    );
}

#[tokio::test]
async fn timeouts_are_retried() {
    let server = Server::start(creds(3600)).await;
    server.script([Reply::Hang(
        Duration::from_secs(2),
        Duration::from_secs(3600),
    )]);
    let config = server
        .config()
        .with_request_timeout(Duration::from_millis(300));
    let provider = server.provider(&config);

    let c = provider.current().await.unwrap();
    assert_eq!(server.requests(), 2);
    assert_eq!(c.access_key_id, "ASIATEST2");
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let config = EarthdataConfig::new(TOKEN)
        .unwrap()
        .with_url(format!("http://127.0.0.1:{port}/s3credentials"))
        .with_max_attempts(2)
        .with_retry_delays(Duration::from_millis(10), Duration::from_millis(50));
    let err = EarthdataCredentialProvider::new(&config)
        .unwrap()
        .current()
        .await
        .unwrap_err();
    let CredentialsError::RetriesExhausted { attempts: 2, last } = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(
            **last,
            CredentialsError::Transport {
                kind: "connect error",
                ..
            }
        ),
        "{last:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("2 attempts") && msg.contains("connect"),
        "{msg}"
    );
    assert!(!msg.contains(TOKEN));
}

#[tokio::test]
async fn malformed_json_is_reported_and_not_retried() {
    let server = Server::start(Reply::Body(
        r#"{"accessKeyId": "A", "secretAccessKey": "leaky-secret""#.into(),
    ))
    .await;
    let provider = server.provider(&server.config());

    let err = provider.current().await.unwrap_err();
    assert_eq!(server.requests(), 1);
    assert!(
        matches!(err, CredentialsError::MalformedJson { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("malformed JSON"), "{msg}");
    assert!(!msg.contains("leaky-secret"), "{msg}");
}

#[tokio::test]
async fn missing_field_is_named() {
    let server = Server::start(Reply::Body(
        r#"{"accessKeyId": "A", "secretAccessKey": "S", "expiration": "2099-01-01 00:00:00+00:00"}"#
            .into(),
    ))
    .await;
    let provider = server.provider(&server.config());

    let err = provider.current().await.unwrap_err();
    assert_eq!(server.requests(), 1);
    assert!(
        matches!(
            err,
            CredentialsError::MissingField {
                field: "sessionToken",
                problem: "missing",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`sessionToken` is missing"),
        "{err}"
    );
}

#[tokio::test]
async fn unparsable_expiration_is_shown() {
    let server = Server::start(Reply::Body(
        r#"{"accessKeyId": "A", "secretAccessKey": "S", "sessionToken": "T", "expiration": "in an hour"}"#
            .into(),
    ))
    .await;
    let err = server
        .provider(&server.config())
        .current()
        .await
        .unwrap_err();
    assert!(
        matches!(err, CredentialsError::Expiration { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"in an hour\""), "{err}");
}

#[tokio::test]
async fn failed_refresh_falls_back_to_valid_credentials_until_they_expire() {
    let server = Server::start(creds(3)).await;
    // Margin 2 s of a 3 s lifetime: refresh due at half-life (~1.5 s); cooldown 500 ms.
    let config = server
        .config()
        .with_refresh_margin(Duration::from_secs(2))
        .with_max_attempts(1);
    let provider = server.provider(&config);
    let first = provider.current().await.unwrap();

    server.set_default(Reply::Status(500, "down".into()));
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let fallback = provider.current().await.unwrap();
    assert_eq!(server.requests(), 2, "the refresh was attempted");
    assert!(Arc::ptr_eq(&first, &fallback));
    let cooled = provider.current().await.unwrap();
    assert_eq!(server.requests(), 2, "no new attempt during the cooldown");
    assert!(Arc::ptr_eq(&first, &cooled));
    assert_eq!(provider.expires_at(), Some(first.expiration));

    // Once they have expired, the error comes through.
    let wait = (first.expiration - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    let err = provider.current().await.unwrap_err();
    assert_eq!(err.status(), Some(500));
}

#[tokio::test]
async fn debug_output_hides_token_and_secrets() {
    let server = Server::start(creds(3600)).await;
    let config = server.config();
    let provider = server.provider(&config);
    let c = provider.current().await.unwrap();
    let aws = provider.get_credential().await.unwrap();

    let all = format!("{config:?}\n{config:#?}\n{provider:?}\n{c:?}\n{c:#?}\n{aws:?}");
    for secret in [TOKEN, "SECRET-1-xyz", "SESSION-1-xyz"] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
    assert!(all.contains("ASIATEST1"), "{all}");
}

#[tokio::test]
async fn works_as_object_store_credential_provider() {
    let server = Server::start(creds(3600)).await;
    let provider = Arc::new(server.provider(&server.config()));

    let s3 = AmazonS3Builder::new()
        .with_region("us-west-2")
        .with_bucket_name("gesdisc-cumulus-prod-protected")
        .with_credentials(Arc::clone(&provider) as AwsCredentialProvider)
        .build()
        .unwrap();
    let via_store: Arc<AwsCredential> = s3.credentials().get_credential().await.unwrap();
    assert_eq!(via_store.key_id, "ASIATEST1");
    assert_eq!(via_store.secret_key, "SECRET-1-xyz");
    assert_eq!(via_store.token.as_deref(), Some("SESSION-1-xyz"));

    let as_dyn: Arc<dyn CredentialProvider<Credential = AwsCredential>> = provider.clone();
    let again = as_dyn.get_credential().await.unwrap();
    assert!(
        Arc::ptr_eq(&via_store, &again),
        "cached credential is shared"
    );
    assert_eq!(server.requests(), 1);
    assert_eq!(
        provider.current().await.unwrap().expiration,
        server.last_expiration()
    );

    // Errors surface as object_store errors carrying the cause.
    let failing = Server::start(Reply::Status(403, "forbidden".into())).await;
    let as_dyn = failing.provider(&failing.config()).into_aws_provider();
    let err = as_dyn.get_credential().await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("403") && !msg.contains(TOKEN), "{msg}");
}

/// A `MakeWriter` that collects everything logged.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn refresh_and_retry_are_logged_without_secrets() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded: the guard covers the client and the server.
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = Server::start(creds(3600)).await;
    server.script([Reply::Status(500, "oops".into())]);
    let c = server.provider(&server.config()).current().await.unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("WARN") && logs.contains("retrying"), "{logs}");
    let refreshed = logs
        .lines()
        .find(|l| l.contains("refreshed Earthdata S3 credentials"))
        .unwrap_or_else(|| panic!("no refresh line in:\n{logs}"));
    assert!(refreshed.contains("INFO"), "{refreshed}");
    assert!(refreshed.contains(&c.expiration.to_string()), "{refreshed}");
    for secret in [TOKEN, "SECRET-2-xyz", "SESSION-2-xyz"] {
        assert!(!logs.contains(secret), "{secret} leaked:\n{logs}");
    }
}

impl Server {
    fn accept_only(&self, token: &str) {
        *self.state.accepted.lock().unwrap() = token.to_owned();
    }

    fn login_url(&self) -> String {
        self.url.trim_end_matches("/s3credentials").to_owned()
    }
}

/// A token file rotated while the service runs: the next fetch reads the new token, without a
/// restart.
#[tokio::test]
async fn a_rotated_token_file_is_used_without_a_restart() {
    let server = Server::start(creds(2)).await;
    let dir = std::env::temp_dir().join(format!("imerg-token-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let config = EarthdataConfig::from_token_file(&file)
        .unwrap()
        .with_url(&server.url)
        .with_refresh_margin(Duration::from_secs(1))
        .with_retry_delays(Duration::from_millis(20), Duration::from_millis(200));
    let provider = server.provider(&config);
    assert_eq!(provider.current().await.unwrap().access_key_id, "ASIATEST1");

    // The secret rotates: the endpoint now takes only the new token, the file holds it.
    server.accept_only("rotated-token-2");
    std::fs::write(&file, "rotated-token-2\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let c = provider.current().await.unwrap();
    assert_eq!(c.access_key_id, "ASIATEST2", "refreshed with the new token");

    // Rotated once more: the same, with no token cached anywhere but the file.
    server.accept_only("rotated-token-3");
    std::fs::write(&file, "rotated-token-3").unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(provider.current().await.unwrap().access_key_id, "ASIATEST3");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Username and password (as from a .netrc): a token is minted before the first fetch and
/// minted again when the endpoint refuses it; a wrong password is an error that shows no secret.
#[tokio::test]
async fn a_login_mints_tokens_and_renews_a_refused_one() {
    let server = Server::start(creds(2)).await;
    let config = EarthdataConfig::from_login("alice", "pass-word:1")
        .unwrap()
        .with_login_url(server.login_url())
        .with_url(&server.url)
        .with_refresh_margin(Duration::from_secs(1));
    let provider = server.provider(&config);
    assert_eq!(provider.current().await.unwrap().access_key_id, "ASIATEST1");
    assert_eq!(server.state.minted.load(Ordering::SeqCst), 1);
    // Cached token while it is accepted.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    provider.current().await.unwrap();
    assert_eq!(server.state.minted.load(Ordering::SeqCst), 1);
    // Earthdata Login issues another token; the old one is refused, a new one is minted.
    server.accept_only("minted-later");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    provider.current().await.unwrap();
    assert_eq!(server.state.minted.load(Ordering::SeqCst), 2);

    let wrong = EarthdataConfig::from_login("alice", "wrong-password-xyz")
        .unwrap()
        .with_login_url(server.login_url())
        .with_url(&server.url);
    let err = server.provider(&wrong).current().await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("401") && msg.contains("find_or_create_token"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-password"), "{msg}");
    assert!(!format!("{config:?}").contains("pass-word"));
}
