//! Client-side load balancing over worker processes: a channel over every address a list of
//! `http://host:port` (or `https://`, with TLS verified against the host name) URLs resolves
//! to, re-resolved periodically. A Kubernetes headless Service
//! name resolves to every ready worker pod, so calls spread over all of them (a plain Service
//! would pin one HTTP/2 connection to one pod) and follow scaling.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

/// How often names are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(15);

/// Why a worker address list is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("worker address {0:?}: expected http://host:port or https://host:port")]
    Invalid(String),
    #[error("empty worker address list")]
    Empty,
    #[error("worker address {0:?} is https:// but no CA is configured (--tls-ca-file)")]
    NoCa(String),
}

/// One `http(s)://host:port` of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    tls: bool,
}

fn parse_list(list: &str) -> Result<Vec<Target>, AddrError> {
    let mut out = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (tls, rest) = match (raw.strip_prefix("http://"), raw.strip_prefix("https://")) {
            (Some(r), _) => (false, r),
            (None, Some(r)) => (true, r),
            (None, None) => return Err(AddrError::Invalid(raw.into())),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| AddrError::Invalid(raw.into()))?;
        let port = port.parse().map_err(|_| AddrError::Invalid(raw.into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(AddrError::Invalid(raw.into()));
        }
        out.push(Target {
            host: host.into(),
            port,
            tls,
        });
    }
    if out.is_empty() {
        return Err(AddrError::Empty);
    }
    Ok(out)
}

/// Every address the targets resolve to, with the target it came from (TLS verifies its name).
async fn resolve(targets: &[Target]) -> BTreeMap<SocketAddr, Target> {
    let mut found = BTreeMap::new();
    for t in targets {
        match tokio::net::lookup_host((t.host.as_str(), t.port)).await {
            Ok(addrs) => found.extend(addrs.map(|a| (a, t.clone()))),
            Err(e) => {
                tracing::warn!(host = %t.host, error = %e, "resolving a worker address failed")
            }
        }
    }
    found
}

fn endpoint(addr: SocketAddr, target: &Target, tls: Option<&crate::ClientTls>) -> Option<Endpoint> {
    let scheme = if target.tls { "https" } else { "http" };
    let e = crate::tune(Endpoint::from_shared(format!("{scheme}://{addr}")).ok()?);
    match (target.tls, tls) {
        (true, Some(t)) => t.apply(e, &target.host).ok(),
        (true, None) => None,
        (false, _) => Some(e),
    }
}

/// A channel balancing over every address of `list` (comma-separated `http://host:port`). Must
/// be called inside a Tokio runtime: a task keeps the address set current until the channel is
/// dropped.
pub fn balanced_channel(list: &str, tls: Option<crate::ClientTls>) -> Result<Channel, AddrError> {
    let targets = parse_list(list)?;
    if let (Some(t), None) = (targets.iter().find(|t| t.tls), &tls) {
        return Err(AddrError::NoCa(format!("https://{}:{}", t.host, t.port)));
    }
    let (channel, tx) = Channel::balance_channel::<SocketAddr>(64);
    tokio::spawn(async move {
        let mut current: BTreeSet<SocketAddr> = BTreeSet::new();
        loop {
            let resolved = resolve(&targets).await;
            let found: BTreeSet<SocketAddr> = resolved.keys().copied().collect();
            // A failed or empty resolution keeps the workers we know: DNS hiccups must not
            // empty the pool.
            if !found.is_empty() {
                for gone in current.difference(&found) {
                    tracing::info!(worker = %gone, "worker left");
                    if tx.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for new in found.difference(&current) {
                    let Some(ep) = resolved
                        .get(new)
                        .and_then(|t| endpoint(*new, t, tls.as_ref()))
                    else {
                        continue;
                    };
                    tracing::info!(worker = %new, "worker joined");
                    if tx.send(Change::Insert(*new, ep)).await.is_err() {
                        return;
                    }
                }
                current = found;
            }
            let wait = if current.is_empty() {
                Duration::from_secs(1)
            } else {
                RESOLVE_EVERY
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_of_urls() {
        let t =
            parse_list("http://imerg-worker:50051, http://10.0.0.7:50051/,http://[::1]:9").unwrap();
        assert_eq!(
            t,
            vec![
                Target {
                    host: "imerg-worker".into(),
                    port: 50051,
                    tls: false
                },
                Target {
                    host: "10.0.0.7".into(),
                    port: 50051,
                    tls: false
                },
                Target {
                    host: "::1".into(),
                    port: 9,
                    tls: false
                },
            ]
        );
        assert!(matches!(parse_list(""), Err(AddrError::Empty)));
        assert!(matches!(
            parse_list("imerg-worker:50051"),
            Err(AddrError::Invalid(_))
        ));
        assert!(matches!(
            parse_list("http://imerg-worker"),
            Err(AddrError::Invalid(_))
        ));
        assert!(matches!(
            parse_list("http://w:port"),
            Err(AddrError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn resolves_names_and_literals() {
        let found = resolve(&parse_list("http://localhost:7,http://127.0.0.2:8").unwrap()).await;
        assert!(
            found.contains_key(&"127.0.0.1:7".parse().unwrap()),
            "{found:?}"
        );
        assert!(
            found.contains_key(&"127.0.0.2:8".parse().unwrap()),
            "{found:?}"
        );
    }
}
