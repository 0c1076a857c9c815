//! Version-1 B-trees (group nodes and chunk nodes) and version-2 B-trees, walked level by level:
//! every node of one level is fetched concurrently (one dependent round trip per level), each
//! node is visited at most once (cycles are errors) and the node count is bounded.

use std::collections::HashSet;

use bytes::Bytes;

use crate::cursor::{Cur, Sizes, bounded, limit_enc_size, verify_checksum};
use crate::error::{Hdf5Error, Result};
use crate::reader::{AHEAD_HEADER, AHEAD_NODE, Fetcher};

/// A leaf-level entry of a v1 B-tree: the key to its left and the child address.
#[derive(Debug, Clone)]
pub(crate) struct V1Entry {
    pub key: Bytes,
    pub child: u64,
}

struct V1Node {
    level: u8,
    entries: Vec<V1Entry>,
}

async fn read_v1_node(
    f: &Fetcher,
    s: Sizes,
    addr: u64,
    node_type: u8,
    key_size: usize,
    depth: &mut u32,
) -> Result<V1Node> {
    let o = usize::from(s.offset);
    let head_len = 8 + 2 * o;
    let head = f
        .read_ahead(depth, "v1 B-tree node", addr, head_len as u64, AHEAD_NODE)
        .await?;
    let mut c = Cur::new(&head, addr, "v1 B-tree node");
    c.signature("TREE", "v1 B-tree node")?;
    let t = c.u8()?;
    if t != node_type {
        return Err(Hdf5Error::malformed(
            "v1 B-tree node",
            format!("node at {addr} has type {t}, expected {node_type}"),
        ));
    }
    let level = c.u8()?;
    let n = usize::from(c.u16()?);
    let body_len = n
        .checked_mul(key_size + o)
        .and_then(|x| x.checked_add(key_size))
        .ok_or_else(|| Hdf5Error::malformed("v1 B-tree node", "size overflows"))?;
    let body = f
        .read(
            depth,
            "v1 B-tree node",
            addr + head_len as u64,
            body_len as u64,
        )
        .await?;
    let mut c = Cur::new(&body, addr + head_len as u64, "v1 B-tree node");
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let start = c.pos();
        c.skip(key_size)?;
        let key = body.slice(start..start + key_size);
        let child = c
            .addr(s)?
            .ok_or_else(|| Hdf5Error::malformed("v1 B-tree node", "undefined child address"))?;
        entries.push(V1Entry { key, child });
    }
    Ok(V1Node { level, entries })
}

/// Every leaf-level entry of the v1 B-tree rooted at `root`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn v1_leaf_entries(
    f: &Fetcher,
    s: Sizes,
    root: u64,
    node_type: u8,
    key_size: usize,
    depth: &mut u32,
    max_nodes: u64,
    max_entries: u64,
) -> Result<Vec<V1Entry>> {
    let mut seen = HashSet::new();
    // (node address, level the parent says it has, depth at which its address is known)
    let mut frontier: Vec<(u64, Option<u8>, u32)> = vec![(root, None, *depth)];
    let mut out = Vec::new();
    let mut nodes = 0u64;
    while !frontier.is_empty() {
        for (a, _, _) in &frontier {
            if !seen.insert(*a) {
                return Err(Hdf5Error::Cycle {
                    what: "v1 B-tree",
                    address: *a,
                });
            }
        }
        nodes += frontier.len() as u64;
        if nodes > max_nodes {
            return Err(Hdf5Error::LimitExceeded {
                what: "v1 B-tree nodes",
                value: nodes,
                limit: max_nodes,
            });
        }
        let reads = frontier.iter().map(|(a, lvl, d0)| async move {
            let mut d = *d0;
            let node = read_v1_node(f, s, *a, node_type, key_size, &mut d).await?;
            if let Some(l) = lvl
                && node.level != *l
            {
                return Err(Hdf5Error::malformed(
                    "v1 B-tree",
                    format!("node at {a} has level {}, expected {l}", node.level),
                ));
            }
            Ok::<_, Hdf5Error>((node, d))
        });
        let level_nodes = futures::future::try_join_all(reads).await?;
        let mut next = Vec::new();
        for (node, d) in level_nodes {
            *depth = (*depth).max(d);
            if node.level == 0 {
                out.extend(node.entries);
                if out.len() as u64 > max_entries {
                    return Err(Hdf5Error::LimitExceeded {
                        what: "v1 B-tree entries",
                        value: out.len() as u64,
                        limit: max_entries,
                    });
                }
            } else {
                for e in node.entries {
                    next.push((e.child, Some(node.level - 1), d));
                }
            }
        }
        frontier = next;
    }
    Ok(out)
}

/// The records of a version-2 B-tree, with its record type.
#[derive(Debug)]
pub(crate) struct V2Records {
    pub kind: u8,
    pub records: Vec<Bytes>,
}

struct NodeInfo {
    max_nrec: u64,
    cum_max_nrec: u64,
    cum_max_nrec_size: usize,
}

const V2_PREFIX: u64 = 10; // signature, version, type, checksum

/// Every record of the version-2 B-tree whose header is at `addr`.
pub(crate) async fn v2_records(
    f: &Fetcher,
    s: Sizes,
    addr: u64,
    depth: &mut u32,
    max_nodes: u64,
    max_records: u64,
) -> Result<V2Records> {
    let o = usize::from(s.offset);
    let hlen = 4 + 1 + 1 + 4 + 2 + 2 + 1 + 1 + o + 2 + usize::from(s.length) + 4;
    let head = f
        .read_ahead(depth, "v2 B-tree header", addr, hlen as u64, AHEAD_HEADER)
        .await?;
    let mut c = Cur::new(&head, addr, "v2 B-tree header");
    c.signature("BTHD", "v2 B-tree header")?;
    verify_checksum(&head, hlen - 4, "v2 B-tree header", addr)?;
    let version = c.u8()?;
    if version != 0 {
        return Err(Hdf5Error::UnsupportedVersion {
            what: "v2 B-tree header",
            address: addr,
            version,
        });
    }
    let kind = c.u8()?;
    let node_size = u64::from(c.u32()?);
    let rec_size = u64::from(c.u16()?);
    let tree_depth = c.u16()?;
    c.skip(2)?;
    let root = c.addr(s)?;
    let root_nrec = u64::from(c.u16()?);
    let total = c.length(s)?;
    if total > max_records {
        return Err(Hdf5Error::LimitExceeded {
            what: "v2 B-tree records",
            value: total,
            limit: max_records,
        });
    }
    if rec_size == 0 || node_size <= V2_PREFIX || node_size > f.options().max_read {
        return Err(Hdf5Error::malformed(
            "v2 B-tree header",
            format!("node size {node_size}, record size {rec_size}"),
        ));
    }
    if tree_depth > 16 {
        return Err(Hdf5Error::LimitExceeded {
            what: "v2 B-tree depth",
            value: u64::from(tree_depth),
            limit: 16,
        });
    }
    let Some(root) = root else {
        return Ok(V2Records {
            kind,
            records: Vec::new(),
        });
    };
    // Per-depth node capacities (H5B2__hdr_init).
    let leaf_max = (node_size - V2_PREFIX) / rec_size;
    let max_nrec_size = limit_enc_size(leaf_max);
    let mut info = vec![NodeInfo {
        max_nrec: leaf_max,
        cum_max_nrec: leaf_max,
        cum_max_nrec_size: 0,
    }];
    for d in 1..=usize::from(tree_depth) {
        let prev = info
            .get(d - 1)
            .ok_or_else(|| Hdf5Error::malformed("v2 B-tree", "depth"))?;
        let ptr = o as u64
            + max_nrec_size as u64
            + if d > 1 {
                prev.cum_max_nrec_size as u64
            } else {
                0
            };
        let max_nrec = node_size.saturating_sub(V2_PREFIX + ptr) / (rec_size + ptr);
        let cum = max_nrec
            .saturating_add(1)
            .saturating_mul(prev.cum_max_nrec)
            .saturating_add(max_nrec);
        info.push(NodeInfo {
            max_nrec,
            cum_max_nrec: cum,
            cum_max_nrec_size: limit_enc_size(cum),
        });
    }
    let mut seen = HashSet::new();
    let mut records = Vec::new();
    let mut nodes = 0u64;
    // (address, records in node, node depth, round-trip depth)
    let mut frontier = vec![(root, root_nrec, tree_depth, *depth)];
    while !frontier.is_empty() {
        for (a, ..) in &frontier {
            if !seen.insert(*a) {
                return Err(Hdf5Error::Cycle {
                    what: "v2 B-tree",
                    address: *a,
                });
            }
        }
        nodes += frontier.len() as u64;
        if nodes > max_nodes {
            return Err(Hdf5Error::LimitExceeded {
                what: "v2 B-tree nodes",
                value: nodes,
                limit: max_nodes,
            });
        }
        let info = &info;
        let reads = frontier.iter().map(|(a, nrec, nd, d0)| async move {
            let mut d = *d0;
            let node_info = info
                .get(usize::from(*nd))
                .ok_or_else(|| Hdf5Error::malformed("v2 B-tree", "node depth"))?;
            if *nrec > node_info.max_nrec {
                return Err(Hdf5Error::malformed(
                    "v2 B-tree node",
                    format!("{nrec} records at {a}, at most {}", node_info.max_nrec),
                ));
            }
            let data = f.read(&mut d, "v2 B-tree node", *a, node_size).await?;
            let mut c = Cur::new(&data, *a, "v2 B-tree node");
            c.signature(if *nd == 0 { "BTLF" } else { "BTIN" }, "v2 B-tree node")?;
            let _version = c.u8()?;
            let t = c.u8()?;
            if t != kind {
                return Err(Hdf5Error::malformed(
                    "v2 B-tree node",
                    format!("type {t} in a tree of type {kind}"),
                ));
            }
            let rs = rec_size as usize;
            let mut recs = Vec::with_capacity(bounded("v2 B-tree records", *nrec, max_records)?);
            for _ in 0..*nrec {
                let p = c.pos();
                c.skip(rs)?;
                recs.push(data.slice(p..p + rs));
            }
            let mut children = Vec::new();
            if *nd > 0 {
                let child_info_size = if *nd > 1 {
                    info.get(usize::from(*nd) - 1)
                        .map(|i| i.cum_max_nrec_size)
                        .unwrap_or(0)
                } else {
                    0
                };
                for _ in 0..=*nrec {
                    let ca = c.addr(s)?.ok_or_else(|| {
                        Hdf5Error::malformed("v2 B-tree node", "undefined child address")
                    })?;
                    let cn = c.uvar(max_nrec_size)?;
                    c.skip(child_info_size)?;
                    children.push((ca, cn, nd - 1, d));
                }
            }
            verify_checksum(&data, c.pos(), "v2 B-tree node", *a)?;
            Ok::<_, Hdf5Error>((recs, children, d))
        });
        let mut next = Vec::new();
        for (recs, children, d) in futures::future::try_join_all(reads).await? {
            *depth = (*depth).max(d);
            records.extend(recs);
            next.extend(children);
            if records.len() as u64 > max_records {
                return Err(Hdf5Error::LimitExceeded {
                    what: "v2 B-tree records",
                    value: records.len() as u64,
                    limit: max_records,
                });
            }
        }
        frontier = next;
    }
    Ok(V2Records { kind, records })
}
