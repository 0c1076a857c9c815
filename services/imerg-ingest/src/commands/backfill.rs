//! `imerg-ingest backfill`: a client of the IngestService. Starts a backfill of a range and
//! (with `--watch`) shows its progress until it finishes (a bar with rate and ETA on a terminal,
//! a line every `--progress-every` otherwise); also lists, shows and cancels jobs.

use std::process::ExitCode;

use anyhow::Context as _;
use futures::StreamExt as _;
use imerg_catalog::parse_time;
use imerg_proto::{to_timestamp, v1};
use tonic::metadata::MetadataValue;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// IngestService address.
    #[arg(long, env = "IMERG_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Operator bearer token (needed for starting and cancelling jobs when the server has one).
    #[arg(long, env = "IMERG_OPERATOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA certificate (PEM) that signed an `https://` server's certificate.
    #[arg(long, env = "IMERG_TLS_CA_FILE")]
    tls_ca_file: Option<std::path::PathBuf>,
    /// Range start (inclusive): YYYY-MM-DD, YYYY-MM-DDTHH:MM or RFC 3339, UTC.
    #[arg(long, required_unless_present_any = ["job", "list", "cancel"])]
    start: Option<String>,
    /// Range end (exclusive).
    #[arg(long, required_unless_present_any = ["job", "list", "cancel"])]
    end: Option<String>,
    /// Product id (default: the server's product).
    #[arg(long, default_value = "")]
    product_id: String,
    /// Follow the job's progress until it finishes.
    #[arg(long)]
    watch: bool,
    /// Show (with --watch: follow) an existing job instead of starting one.
    #[arg(long)]
    job: Option<String>,
    /// Cancel a job.
    #[arg(long)]
    cancel: Option<String>,
    /// List jobs, newest first (every page).
    #[arg(long)]
    list: bool,
    /// With --list: only jobs in this state.
    #[arg(long, value_parser = ["running", "succeeded", "failed", "cancelled"])]
    state: Option<String>,
    /// An idempotency key: starting the same request again (a retried script) returns the job
    /// the first start made instead of another one.
    #[arg(long)]
    request_id: Option<String>,
    /// Print jobs as JSON lines.
    #[arg(long)]
    json: bool,
    /// With --watch and no terminal (or --json): the shortest time between two progress lines
    /// (the final state is always printed). On a terminal, a progress bar shows instead.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    progress_every: std::time::Duration,
}

/// Granules of a job accounted for: in the store (already or now), missing at the source, or
/// failed.
fn done(j: &v1::Job) -> u64 {
    j.present_already
        .saturating_add(j.committed)
        .saturating_add(j.missing_at_source)
        .saturating_add(j.failed)
}

/// How `--watch` shows progress: a bar with rate and ETA on a terminal, else throttled lines.
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines {
        json: bool,
        every: std::time::Duration,
        last: Option<std::time::Instant>,
    },
}

impl Progress {
    fn new(args: &Args, first: &v1::Job) -> Self {
        use std::io::IsTerminal as _;
        if args.json || !std::io::stdout().is_terminal() {
            return Self::Lines {
                json: args.json,
                every: args.progress_every,
                last: Some(std::time::Instant::now()),
            };
        }
        let bar = indicatif::ProgressBar::new(first.expected);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} granules, \
                 {per_sec}, ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Self::Bar(bar)
    }

    fn update(&mut self, j: &v1::Job) {
        let finished = state_name(j) != "running";
        match self {
            Self::Bar(bar) => {
                bar.set_length(j.expected);
                bar.set_position(done(j));
                bar.set_message(format!(
                    "(committed {}, missing {}, failed {})",
                    j.committed, j.missing_at_source, j.failed
                ));
                if finished {
                    bar.finish_and_clear();
                    show(j, false);
                }
            }
            Self::Lines { json, every, last } => {
                let due = last.is_none_or(|t| t.elapsed() >= *every);
                if due || finished {
                    show(j, *json);
                    *last = Some(std::time::Instant::now());
                }
            }
        }
    }
}

fn state_name(j: &v1::Job) -> &'static str {
    match v1::JobState::try_from(j.state).unwrap_or(v1::JobState::Unspecified) {
        v1::JobState::Running => "running",
        v1::JobState::Succeeded => "succeeded",
        v1::JobState::Failed => "failed",
        v1::JobState::Cancelled => "cancelled",
        v1::JobState::Unspecified => "unspecified",
    }
}

fn show(j: &v1::Job, json: bool) {
    if json {
        let failures: Vec<_> = j
            .failures
            .iter()
            .map(|f| serde_json::json!({"key": f.key, "reason": f.reason, "message": f.message}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "id": j.id, "product": j.product, "state": state_name(j),
                "expected": j.expected, "present_already": j.present_already, "fetched": j.fetched,
                "committed": j.committed, "missing_at_source": j.missing_at_source,
                "failed": j.failed, "failures": failures,
            })
        );
    } else {
        println!(
            "job {} {}: expected {}, present already {}, fetched {}, committed {}, missing at source {}, failed {}",
            j.id,
            state_name(j),
            j.expected,
            j.present_already,
            j.fetched,
            j.committed,
            j.missing_at_source,
            j.failed
        );
        for f in &j.failures {
            println!("  failed {} ({}): {}", f.key, f.reason, f.message);
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(run_async(args))?
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let tls = match &args.tls_ca_file {
        Some(ca) => Some(imerg_remote::ClientTls::new(
            std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?,
        )),
        None => None,
    };
    let endpoint = imerg_remote::ClientTls::endpoint(&args.server, tls.as_ref())?;
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.server))?;
    let token: Option<MetadataValue<_>> = match &args.token {
        Some(t) => Some(
            format!("Bearer {}", t.trim())
                .parse()
                .context("invalid token")?,
        ),
        None => None,
    };
    let mut client = v1::ingest_service_client::IngestServiceClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            if let Some(t) = &token {
                req.metadata_mut().insert("authorization", t.clone());
            }
            Ok(req)
        },
    );
    let job_of =
        |j: Option<v1::Job>| j.ok_or_else(|| anyhow::anyhow!("the server answered without a job"));
    if args.list {
        let state = match args.state.as_deref() {
            Some("running") => v1::JobState::Running,
            Some("succeeded") => v1::JobState::Succeeded,
            Some("failed") => v1::JobState::Failed,
            Some("cancelled") => v1::JobState::Cancelled,
            _ => v1::JobState::Unspecified,
        };
        let mut page_token = String::new();
        loop {
            let page = client
                .list_jobs(v1::ListJobsRequest {
                    page_size: 0,
                    page_token,
                    state: state as i32,
                })
                .await?
                .into_inner();
            for j in &page.jobs {
                show(j, args.json);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = &args.cancel {
        let j = client
            .cancel_job(v1::CancelJobRequest { id: id.clone() })
            .await?
            .into_inner()
            .job;
        show(&job_of(j)?, args.json);
        return Ok(ExitCode::SUCCESS);
    }
    let job = match &args.job {
        Some(id) => job_of(
            client
                .get_job(v1::GetJobRequest { id: id.clone() })
                .await?
                .into_inner()
                .job,
        )?,
        None => {
            let (start, end) = match (&args.start, &args.end) {
                (Some(s), Some(e)) => (parse_time(s)?, parse_time(e)?),
                _ => anyhow::bail!("--start and --end are required"),
            };
            job_of(
                client
                    .backfill(v1::BackfillRequest {
                        product: args.product_id.clone(),
                        start_time: Some(to_timestamp(start)),
                        end_time: Some(to_timestamp(end)),
                        request_id: args.request_id.clone().unwrap_or_default(),
                    })
                    .await?
                    .into_inner()
                    .job,
            )?
        }
    };
    show(&job, args.json);
    let mut last = job;
    if args.watch {
        let mut progress = Progress::new(&args, &last);
        let mut stream = client
            .watch_job(v1::WatchJobRequest {
                id: last.id.clone(),
            })
            .await?
            .into_inner();
        while let Some(m) = stream.next().await {
            let j = job_of(m?.job)?;
            progress.update(&j);
            last = j;
        }
    }
    Ok(match state_name(&last) {
        "running" | "succeeded" => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}
