//! Helpers shared by the binary's integration tests: the binary itself, the Python reader venv,
//! the service in-process ([`InProcess`], `imerg_service` on loopback ports) or as a child
//! process ([`Server`], for SIGKILL and signal tests), synthetic granules, metrics read from the
//! exposition (a missing series fails the test), and the Python store check.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod aws;
pub mod otlp;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imerg-ingest"))
}

/// Runs tests/python/NAME with the test venv's Python (with `envs` added to its environment)
/// and asserts it succeeded; its output, for the caller to read.
pub fn python_script<S: AsRef<std::ffi::OsStr>>(
    name: &str,
    args: &[S],
    envs: &[(&str, &str)],
) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python")
        .join(name);
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Python venv (3.12 or newer) scripts/test.sh builds; without it a test fails, it is never skipped.
pub fn python() -> PathBuf {
    let p = std::env::var_os("IMERG_PYTHON").map(PathBuf::from).expect(
        "IMERG_PYTHON is not set: run ./scripts/test.sh, which builds the Python reader venv (3.12 or newer)",
    );
    assert!(p.exists(), "IMERG_PYTHON={} does not exist", p.display());
    p
}

/// The service in-process: `imerg_service::Service` with the same flags as `serve`, on ports the
/// OS picked, on a runtime of its own; stopped (gracefully) by [`InProcess::stop`] or on drop.
pub struct InProcess {
    /// `http://127.0.0.1:PORT` of the gRPC server.
    pub grpc: String,
    /// `127.0.0.1:PORT` of the HTTP endpoints.
    pub http: String,
    stop: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

#[derive(Debug, clap::Parser)]
struct ServeArgs {
    #[command(flatten)]
    cfg: imerg_service::ServiceConfig,
}

/// The configuration `serve --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --data-dir DATA ARGS`
/// would run.
pub fn service_config(data: &Path, args: &[&str]) -> imerg_service::ServiceConfig {
    use clap::Parser as _;
    let data = data.to_string_lossy().to_string();
    let mut all = vec![
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--data-dir",
        &data,
    ];
    all.extend_from_slice(args);
    ServeArgs::try_parse_from(all).unwrap().cfg
}

impl InProcess {
    /// Starts the service like `serve ARGS` would (see [`service_config`]).
    pub fn start(data: &Path, args: &[&str]) -> Self {
        Self::start_with(service_config(data, args), None)
    }

    /// Starts the service from a configuration, listening to `queue` if given.
    pub fn start_with(
        cfg: imerg_service::ServiceConfig,
        queue: Option<std::sync::Arc<dyn imerg_listener::Queue>>,
    ) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let token = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let r = rt.block_on(async move {
                let mut svc = match imerg_service::Service::bind(cfg).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return Err(e.to_string());
                    }
                };
                if let Some(q) = queue {
                    svc = svc.with_queue(q);
                }
                let _ = tx.send(Ok((svc.grpc_addr().unwrap(), svc.http_addr().unwrap())));
                svc.run(token.cancelled_owned())
                    .await
                    .map_err(|e| e.to_string())
            });
            rt.shutdown_timeout(Duration::from_secs(1));
            r
        });
        let (grpc, http) = rx
            .recv()
            .expect("the service thread ended")
            .unwrap_or_else(|e| panic!("the service did not start: {e}"));
        Self {
            grpc: format!("http://{grpc}"),
            http: http.to_string(),
            stop,
            thread: Some(thread),
        }
    }

    /// GET on the HTTP endpoints: status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_body(&self.http, "GET", path, &[], b"")
    }

    /// Graceful shutdown (as on SIGTERM); the service's own result.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop.cancel();
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value of one series in a Prometheus exposition; fails the test if the series is absent.
pub fn metric(text: &str, series: &str) -> f64 {
    metric_opt(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// The value of one series, `None` if absent.
pub fn metric_opt(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sets the AWS variables moto accepts, once per test process, before any service reads them
/// (every test that uses AWS calls this first).
pub fn aws_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (k, v) in aws::ENVS {
            // SAFETY: called first thing in each test that talks to AWS, under `Once`: no
            // thread of this process reads these variables before they are set.
            unsafe { std::env::set_var(k, v) };
        }
    });
}

/// `imerg-ingest serve` as a child process on ports the OS picked (read back from its stdout).
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT` of the gRPC server.
    pub grpc: String,
    /// `127.0.0.1:PORT` of the HTTP endpoints.
    pub http: String,
    /// Its stderr (the log).
    pub log: PathBuf,
}

impl Server {
    /// Waits (at most 120 s) until the process has committed `n` granules as added, as its
    /// `imerg_granules_committed_total{outcome="added"}` says.
    #[allow(dead_code)]
    pub fn wait_added(&self, n: u64) {
        let t0 = std::time::Instant::now();
        loop {
            let (_, m) = self.get("/metrics");
            if series(
                &m,
                "imerg_granules_committed_total",
                &[("outcome", "added")],
            ) == Some(n as f64)
            {
                return;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(120),
                "{n} granules not added: {m}"
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// Starts `serve --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --data-dir DATA ARGS...`.
    pub fn spawn(data: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::spawn_at(data, "127.0.0.1:0", args, envs)
    }

    /// [`Server::spawn`] with gRPC on `grpc_addr` (a process that must come back on the same
    /// address).
    pub fn spawn_at(data: &Path, grpc_addr: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = data.join(format!("serve-{n}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = bin()
            .args([
                "serve",
                "--grpc-addr",
                grpc_addr,
                "--http-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = loop {
            let Some(l) = lines.next() else {
                panic!(
                    "serve exited before serving: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            };
            let l = l.unwrap();
            if l.starts_with("imerg-ingest serving") {
                break l;
            }
        };
        // "imerg-ingest serving final: gRPC on A, metrics on http://B/metrics"
        let grpc = line
            .split("gRPC on ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let http = line
            .split("http://")
            .nth(1)
            .unwrap()
            .trim_end_matches("/metrics")
            .to_string();
        Self {
            child,
            grpc: format!("http://{grpc}"),
            http,
            log: log_path,
        }
    }

    /// GET on the HTTP endpoints: status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(&self.http).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    pub fn signal(&mut self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Synthetic granules of `[start, end)` under `root` in the bucket layout.
pub fn synth(root: &Path, start: &str, end: &str) {
    synth_with(root, start, end, &[]);
}

/// [`synth`] with more `synth` options (`--deflate-level 1`, `--shuffle`, ...).
pub fn synth_with(root: &Path, start: &str, end: &str, extra: &[&str]) {
    let out = bin()
        .args(["synth", "--start", start, "--end", end])
        .args(extra)
        .arg("--out")
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The keys of the Final product's granules in `[start, end)`.
pub fn keys(start: &str, end: &str) -> Vec<String> {
    let profile = imerg_catalog::ProductProfile::final_v07b();
    let range = imerg_catalog::TimeRange::new(
        imerg_catalog::parse_time(start).unwrap(),
        imerg_catalog::parse_time(end).unwrap(),
    )
    .unwrap();
    profile.expected(range).map(|g| g.key).collect()
}

/// Entries for check_store.py's "present" list: every granule of `[start, end)` under `root`.
pub fn present(root: &Path, ranges: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let profile = imerg_catalog::ProductProfile::final_v07b();
    let mut out = Vec::new();
    for (start, end) in ranges {
        let range = imerg_catalog::TimeRange::new(
            imerg_catalog::parse_time(start).unwrap(),
            imerg_catalog::parse_time(end).unwrap(),
        )
        .unwrap();
        for g in profile.expected(range) {
            out.push(serde_json::json!({
                "time_index": g.time_index,
                "start": g.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "path": root.join(&g.key),
            }));
        }
    }
    out
}

/// Runs tests/python/check_store.py on `expect` (written into `dir`) and asserts it passed.
pub fn check_store(dir: &Path, expect: &serde_json::Value) {
    let expect_path = dir.join("expect.json");
    std::fs::write(&expect_path, expect.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/check_store.py");
    let out = Command::new(python())
        .arg(script)
        .arg(&expect_path)
        .output()
        .unwrap();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .trim_end()
                .ends_with("OK"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> u16 {
    http_body(addr, method, path, &[], body).0
}

/// A plain HTTP/1.1 request with extra headers: status code and body.
pub fn http_body(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// moto's S3 server on a free loopback port; fails loudly if it does not come up.
pub fn moto(py: &Path) -> (Killed, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(py)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server");
    let addr = format!("127.0.0.1:{port}");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "moto_server did not start on {addr}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (Killed(child), addr)
}

/// The value of `name` with exactly these labels (in any order) in a Prometheus exposition;
/// `None` if there is no such series.
pub fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        let (n, got) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        if n != name {
            return None;
        }
        let mut got: Vec<String> = if got.is_empty() {
            Vec::new()
        } else {
            got.split(',').map(String::from).collect()
        };
        got.sort();
        (got == want).then(|| value.parse().ok()).flatten()
    })
}
