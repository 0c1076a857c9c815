//! The status page at `/` on the HTTP port: what a person checks first, in one screen, without
//! Grafana: coverage of the product's record, gaps, ingest lag, running backfill jobs and recent
//! commits. Server-side HTML (no script), from the store's status as computed once per branch move
//! (`Dataset::status_shared`, which the gauges and GetStatus share). Every text from the store is escaped.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imerg_dataset::{Dataset, Status};
use imerg_ingest_api::{JobState, JobStatus};

/// Gaps listed on the page (the count covers them all).
const GAPS_SHOWN: usize = 10;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// "3d 4h", "2h 5m", "40s".
fn span(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:70em;color:#222}\
    h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.5em}\
    table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}\
    .big{font-size:1.3em}.muted{color:#666}";

/// The page for `status` (None: the store could not be read), the jobs of this process and the
/// product's title.
pub(crate) fn render(
    dataset: Option<&Dataset>,
    status: Option<&Status>,
    status_error: Option<&str>,
    jobs: &[JobStatus],
    now: DateTime<Utc>,
) -> String {
    let mut h = String::new();
    let title = dataset.map_or_else(
        || "imerg-ingest".to_string(),
        |d| d.config().profile.title.clone(),
    );
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>imerg-ingest status</title>\
         <style>{STYLE}</style></head><body><h1>imerg-ingest status</h1><p class=\"muted\">{} \
         &middot; page made {}</p>",
        esc(&title),
        when(now)
    );
    match (dataset, status) {
        (Some(ds), Some(st)) => store_section(&mut h, ds, st, now),
        (Some(_), None) => {
            let _ = write!(
                h,
                "<p class=\"big\">The store could not be read: {}</p>",
                esc(status_error.unwrap_or("no status yet"))
            );
        }
        (None, _) => {
            h.push_str("<p>This process has no repository (its roles do not use one).</p>")
        }
    }
    jobs_section(&mut h, jobs);
    if let Some(st) = status {
        commits_section(&mut h, st);
    }
    h.push_str(
        "<p class=\"muted\">Machine-readable: <a href=\"/metrics\">/metrics</a>, \
         <a href=\"/readyz\">/readyz</a>, and GetStatus over gRPC.</p></body></html>\n",
    );
    h
}

fn store_section(h: &mut String, ds: &Dataset, st: &Status, now: DateTime<Utc>) {
    let profile = &ds.config().profile;
    let record = profile.record(now);
    let expected = profile.expected_count(record);
    let pct = if expected == 0 {
        0.0
    } else {
        st.granules_present as f64 * 100.0 / expected as f64
    };
    let ended = |t: DateTime<Utc>| {
        profile
            .record_end
            .is_some_and(|end| t + profile.cadence() >= end)
    };
    let lag = match st.last_granule {
        None => "no granule yet".to_string(),
        Some(t) if ended(t) => "none: the record has ended and its last granule is in".into(),
        Some(t) => format!("{} behind now (newest granule {})", span(now - t), when(t)),
    };
    let missing_in_gaps: u64 = st.gaps.iter().map(|g| g.granules).sum();
    let _ = write!(
        h,
        "<h2>Coverage</h2><table>\
         <tr><th>coverage</th><td class=\"big\">{pct:.2}% of the record: {} of {expected} granules</td></tr>\
         <tr><th>record</th><td>{} to {}</td></tr>\
         <tr><th>granules present</th><td>{}, from {} to {}</td></tr>\
         <tr><th>gaps</th><td>{} gaps, {missing_in_gaps} granules missing between the first and the newest</td></tr>\
         <tr><th>ingest lag</th><td class=\"big\">{lag}</td></tr>\
         <tr><th>manifests</th><td>{} ({} references)</td></tr></table>",
        st.granules_present,
        when(record.start),
        when(record.end),
        st.granules_present,
        st.first_granule.map_or("-".into(), when),
        st.last_granule.map_or("-".into(), when),
        st.gaps.len(),
        st.manifests,
        st.references,
    );
    if !st.gaps.is_empty() {
        h.push_str("<table><tr><th>gap from</th><th>to</th><th>granules</th></tr>");
        for g in st.gaps.iter().take(GAPS_SHOWN) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(g.start),
                when(g.end),
                g.granules
            );
        }
        h.push_str("</table>");
        if st.gaps.len() > GAPS_SHOWN {
            let _ = write!(
                h,
                "<p class=\"muted\">and {} more gaps</p>",
                st.gaps.len() - GAPS_SHOWN
            );
        }
    }
}

fn jobs_section(h: &mut String, jobs: &[JobStatus]) {
    let running: Vec<&JobStatus> = jobs
        .iter()
        .filter(|j| j.state == JobState::Running)
        .collect();
    let _ = write!(h, "<h2>Running jobs: {}</h2>", running.len());
    // `jobs` come newest first (JobManager::list).
    if jobs.is_empty() {
        h.push_str("<p class=\"muted\">No backfill jobs in this process.</p>");
        return;
    }
    h.push_str(
        "<table><tr><th>job</th><th>range</th><th>state</th><th>done</th><th>failed</th></tr>",
    );
    for j in jobs.iter().take(10) {
        let done = j
            .present_already
            .saturating_add(j.committed)
            .saturating_add(j.missing_at_source)
            .saturating_add(j.failed);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} to {}</td><td>{}</td><td>{done} of {}</td><td>{}</td></tr>",
            esc(&j.id),
            when(j.range.start),
            when(j.range.end),
            j.state.label(),
            j.expected,
            j.failed
        );
    }
    h.push_str("</table>");
}

fn commits_section(h: &mut String, st: &Status) {
    let _ = write!(h, "<h2>Recent commits ({} in all)</h2><table>", st.commits);
    h.push_str("<tr><th>time</th><th>snapshot</th><th>message</th></tr>");
    for c in &st.recent_commits {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            when(c.time),
            esc(&c.id),
            esc(&c.message)
        );
    }
    h.push_str("</table>");
}

/// `what`, or why it failed, given at most 5 s.
async fn within<T>(
    what: impl std::future::Future<Output = Result<T, imerg_dataset::DatasetError>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(5), what).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the repository did not answer within 5 s".to_string()),
    }
}

/// The status to show: the store's shared one (computed once per branch move, see
/// `Dataset::status_shared`), given at most 5 s.
pub(crate) async fn current(dataset: &Dataset) -> Result<Arc<Status>, String> {
    within(dataset.status_shared()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_store_is_escaped_and_spans_read_well() {
        assert_eq!(esc("<b>&\"x'"), "&lt;b&gt;&amp;&quot;x&#39;");
        assert_eq!(span(chrono::Duration::seconds(40)), "40s");
        assert_eq!(span(chrono::Duration::seconds(3 * 3600 + 120)), "3h 2m");
        assert_eq!(span(chrono::Duration::seconds(2 * 86_400 + 3600)), "2d 1h");
        assert_eq!(span(chrono::Duration::seconds(-5)), "0s");
    }
}
