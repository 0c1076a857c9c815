//! Appends into a real Icechunk repository on the local filesystem, from real synthetic granules:
//! position by time, gaps, duplicates, replaced sources, rejected layouts and coordinates, commit
//! properties, the ambiguous-commit check, resuming after a failed commit, and the committer's
//! batching.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use imerg_catalog::{GranuleId, ProductProfile, parse_time};
use imerg_dataset::{
    CommitterConfig, Dataset, DatasetConfig, GranuleOutcome, RepoLocation, SourceContainer,
    spawn_committer,
};
use imerg_refs::{GranuleRefs, SourceObject};
use imerg_synth::{SynthOptions, write_granule};

fn granule(root: &Path, start: &str, opts: &SynthOptions) -> GranuleRefs {
    let p = ProductProfile::final_v07b();
    let id: GranuleId = p.granule_at(parse_time(start).unwrap()).unwrap();
    let path = root.join(&id.key);
    write_granule(&path, &p, id.start, opts).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let src = SourceObject {
        url: SourceContainer::local(root).unwrap().url_of(&id.key),
        etag: None,
        last_modified: Some(meta.modified().unwrap().into()),
        size: meta.len(),
    };
    imerg_virtualize::virtualize_path(&path, &id, &src, &p).unwrap()
}

async fn open(repo: &Path, src: &Path) -> Dataset {
    let cfg = DatasetConfig::new(
        ProductProfile::final_v07b(),
        SourceContainer::local(src).unwrap(),
    );
    Dataset::open_or_create(&RepoLocation::Local(repo.to_path_buf()), cfg)
        .await
        .unwrap()
}

fn labels(o: &imerg_dataset::BatchOutcome) -> Vec<&'static str> {
    o.outcomes.iter().map(|(_, o)| o.label()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_by_position_duplicates_replacements_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
    let d = SynthOptions::default();
    let g0 = granule(&src, "2020-01-01T00:00:00Z", &d);
    let g1 = granule(&src, "2020-01-01T00:30:00Z", &d);
    let g2 = granule(&src, "2020-01-01T01:00:00Z", &d);
    let g3 = granule(&src, "2020-01-01T01:30:00Z", &d);
    let ds = open(&repo, &src).await;

    // Out of order, with a gap at g2.
    let out = ds
        .commit_batch(&[g3.clone(), g0.clone(), g1.clone()], "b1")
        .await
        .unwrap();
    assert!(out.committed);
    assert_eq!(labels(&out), ["added", "added", "added"]);
    let st = ds.status().await.unwrap();
    assert_eq!(st.granules_present, 3);
    assert_eq!(st.time_len, g3.time_index + 1);
    assert_eq!(st.first_granule, Some(g0.start));
    assert_eq!(st.last_granule, Some(g3.start));
    assert_eq!(st.gaps.len(), 1);
    assert_eq!((st.gaps[0].start, st.gaps[0].granules), (g2.start, 1));
    assert_eq!(st.commits, 1);
    assert!(st.manifests >= 4 && st.largest_manifest_bytes > 0);

    // Commit properties name the batch and its granules.
    let tip = ds.repository().lookup_branch("main").await.unwrap();
    let info = ds.repository().lookup_snapshot(&tip).await.unwrap();
    assert_eq!(info.metadata["imerg_batch_id"], "b1");
    let keys: Vec<&str> = info.metadata["imerg_granules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [g0.key.as_str(), g1.key.as_str(), g3.key.as_str()]);
    assert_eq!(info.metadata["imerg_counts"]["added"], 3);

    // A batch that landed is not committed twice (the ambiguous-commit check): it is found in the
    // history, and applying it again changes nothing.
    assert_eq!(
        ds.find_batch("b1", 10).await.unwrap(),
        Some(tip.to_string())
    );
    assert_eq!(ds.find_batch("nope", 10).await.unwrap(), None);
    let again = ds
        .commit_batch(&[g3.clone(), g0.clone(), g1.clone()], "b1")
        .await
        .unwrap();
    assert!(!again.committed);
    assert_eq!(labels(&again), ["duplicate", "duplicate", "duplicate"]);
    assert_eq!(ds.status().await.unwrap().commits, 1);

    // The late granule lands in place and closes the gap.
    let out = ds
        .commit_batch(std::slice::from_ref(&g2), "b2")
        .await
        .unwrap();
    assert_eq!(labels(&out), ["added"]);
    let st = ds.status().await.unwrap();
    assert_eq!((st.granules_present, st.gaps.len(), st.commits), (4, 0, 2));
    assert_eq!(
        st.time_len,
        g3.time_index + 1,
        "an earlier granule does not grow the axis"
    );

    // A replaced source (rewritten with another deflate level: new bytes, new mtime) re-points.
    std::thread::sleep(Duration::from_millis(1100));
    let g1b = granule(
        &src,
        "2020-01-01T00:30:00Z",
        &SynthOptions {
            deflate_level: 2,
            ..Default::default()
        },
    );
    assert_eq!(
        g1b.fingerprint, g1.fingerprint,
        "deflate level is not part of the layout"
    );
    assert_ne!(
        g1b.variables["precipitation"].refs,
        g1.variables["precipitation"].refs
    );
    // As if the new version did not store chunk (t, 7, 0) (HDF5 skips never-written chunks):
    // the old reference there must go.
    let mut g1b = g1b;
    g1b.variables
        .get_mut("precipitation")
        .unwrap()
        .refs
        .retain(|r| r.chunk[1] != 7);
    let out = ds
        .commit_batch(std::slice::from_ref(&g1b), "b3")
        .await
        .unwrap();
    assert!(
        matches!(&out.outcomes[0].1, GranuleOutcome::Replaced { previous } if previous.contains("last-modified"))
    );
    let session = ds
        .repository()
        .readonly_session(&icechunk::repository::VersionInfo::BranchTipRef(
            "main".into(),
        ))
        .await
        .unwrap();
    let r = session
        .get_chunk_ref(
            &icechunk::format::Path::new("/precipitation").unwrap(),
            &icechunk::format::ChunkIndices(vec![g1.time_index as u32, 3, 0]),
        )
        .await
        .unwrap();
    let want = g1b.variables["precipitation"]
        .refs
        .iter()
        .find(|r| r.chunk[1] == 3)
        .unwrap();
    match r {
        Some(icechunk::format::manifest::ChunkPayload::Virtual(v)) => {
            assert_eq!((v.offset, v.length), (want.offset, want.length));
        }
        other => panic!("expected a virtual ref, got {other:?}"),
    }
    let dropped = session
        .get_chunk_ref(
            &icechunk::format::Path::new("/precipitation").unwrap(),
            &icechunk::format::ChunkIndices(vec![g1.time_index as u32, 7, 0]),
        )
        .await
        .unwrap();
    assert!(
        dropped.is_none(),
        "stale reference left behind: {dropped:?}"
    );

    // Another layout, other coordinates, another container: rejected with what differs; the
    // good granule in the same batch still lands.
    let shuffled = granule(
        &dir.path().join("other"),
        "2020-01-01T02:00:00Z",
        &SynthOptions {
            shuffle: true,
            ..Default::default()
        },
    );
    let mut shuffled_in_src = shuffled.clone();
    shuffled_in_src.url = SourceContainer::local(&src).unwrap().url_of(&shuffled.key);
    let shifted = granule(
        &src,
        "2020-01-01T02:30:00Z",
        &SynthOptions {
            lon_shift: 0.05,
            ..Default::default()
        },
    );
    let g4 = granule(&src, "2020-01-01T03:00:00Z", &d);
    let out = ds
        .commit_batch(
            &[shuffled_in_src, shifted, shuffled.clone(), g4.clone()],
            "b4",
        )
        .await
        .unwrap();
    assert_eq!(labels(&out), ["rejected", "rejected", "rejected", "added"]);
    let msg = |i: usize| match &out.outcomes[i].1 {
        GranuleOutcome::Rejected(e) => (e.label(), e.to_string()),
        _ => unreachable!(),
    };
    assert_eq!(msg(0).0, "layout");
    assert!(
        msg(0)
            .1
            .contains("codecs bytes(Little)+zlib(6) vs bytes(Little)+shuffle(4)+zlib(6)"),
        "{}",
        msg(0).1
    );
    assert_eq!(msg(1).0, "layout");
    assert!(msg(1).1.contains("coordinate values"), "{}", msg(1).1);
    assert_eq!(msg(2).0, "source_container");
    let st = ds.status().await.unwrap();
    assert_eq!(st.granules_present, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_a_failed_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
    let g0 = granule(&src, "2021-06-01T00:00:00Z", &SynthOptions::default());
    let g1 = granule(&src, "2021-06-01T00:30:00Z", &SynthOptions::default());
    let ds = open(&repo, &src).await;
    ds.commit_batch(std::slice::from_ref(&g0), "first")
        .await
        .unwrap();

    // Break the storage under the writer: manifests can no longer be written.
    let manifests = repo.join("manifests");
    std::fs::rename(&manifests, repo.join("manifests.moved")).unwrap();
    std::fs::write(&manifests, b"not a directory").unwrap();
    let err = ds
        .commit_batch(std::slice::from_ref(&g1), "second")
        .await
        .unwrap_err();
    assert_eq!(err.label(), "icechunk", "{err}");
    assert_eq!(ds.find_batch("second", 10).await.unwrap(), None);

    // Repair and resume: the granule lands exactly once.
    std::fs::remove_file(&manifests).unwrap();
    std::fs::rename(repo.join("manifests.moved"), &manifests).unwrap();
    let ds = open(&repo, &src).await;
    let out = ds
        .commit_batch(&[g0.clone(), g1.clone()], "second")
        .await
        .unwrap();
    assert_eq!(labels(&out), ["duplicate", "added"]);
    let st = ds.status().await.unwrap();
    assert_eq!((st.granules_present, st.commits), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committer_batches_and_acknowledges_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
    let starts = [
        "2022-02-02T03:30:00Z",
        "2022-02-02T00:00:00Z",
        "2022-02-02T02:00:00Z",
        "2022-02-02T00:30:00Z",
        "2022-02-02T01:00:00Z",
        "2022-02-02T03:00:00Z",
    ];
    let granules: Vec<_> = starts
        .iter()
        .map(|s| granule(&src, s, &SynthOptions::default()))
        .collect();
    let ds = Arc::new(open(&repo, &src).await);
    let (handle, committer) = spawn_committer(
        Arc::clone(&ds),
        CommitterConfig {
            max_batch: 4,
            max_age: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let mut tasks = Vec::new();
    for g in granules
        .iter()
        .cloned()
        .chain(std::iter::once(granules[0].clone()))
    {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move { h.append(g).await }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        let receipt = t.await.unwrap().unwrap();
        // Acknowledged only once durable: the snapshot is on the branch.
        assert!(
            ds.find_batch(&receipt.batch_id, 10)
                .await
                .unwrap()
                .is_some()
                || receipt.outcome.label() == "duplicate"
        );
        outcomes.push(receipt.outcome.label());
    }
    assert_eq!(outcomes.iter().filter(|o| **o == "added").count(), 6);
    assert_eq!(outcomes.iter().filter(|o| **o == "duplicate").count(), 1);
    let st = ds.status().await.unwrap();
    assert_eq!(st.granules_present, 6);
    assert!(
        st.commits >= 2 && st.commits <= 3,
        "batched: {} commits for 7 appends",
        st.commits
    );
    assert_eq!(st.gaps.len(), 2, "01:30 and 02:30 are missing");
    drop(handle);
    committer.join.await.unwrap();
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_gc_free_superseded_metadata_and_keep_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
    let gs: Vec<_> = [
        "2023-05-05T10:00:00Z",
        "2023-05-05T10:30:00Z",
        "2023-05-05T11:00:00Z",
        "2023-05-05T11:30:00Z",
    ]
    .iter()
    .map(|s| granule(&src, s, &SynthOptions::default()))
    .collect();
    let ds = open(&repo, &src).await;
    for (n, g) in gs.iter().enumerate() {
        ds.commit_batch(std::slice::from_ref(g), &format!("b{n}"))
            .await
            .unwrap();
    }
    let before = dir_bytes(&repo);
    std::thread::sleep(Duration::from_millis(1100));
    let report = imerg_dataset::maintenance::run(
        &ds,
        &imerg_dataset::MaintenanceConfig {
            retention: Duration::ZERO,
            every: Duration::from_secs(3600),
        },
    )
    .await
    .unwrap();
    assert!(report.snapshots_released >= 3, "{report:?}");
    assert!(report.manifests_deleted >= 3, "{report:?}");
    let after = dir_bytes(&repo);
    assert!(after < before, "{after} < {before}");
    let ds = open(&repo, &src).await;
    let st = ds.status().await.unwrap();
    assert_eq!(st.granules_present, 4);
    assert!(st.commits < 4, "history trimmed: {}", st.commits);
    // The data is still all there and the next append works.
    let again = ds.commit_batch(&gs, "again").await.unwrap();
    assert_eq!(labels(&again), ["duplicate"; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_detected_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
    let g0 = granule(&src, "2024-02-02T00:00:00Z", &SynthOptions::default());
    let g1 = granule(&src, "2024-02-02T00:30:00Z", &SynthOptions::default());
    let a = open(&repo, &src).await;
    a.commit_batch(std::slice::from_ref(&g0), "setup")
        .await
        .unwrap();
    let b = open(&repo, &src).await;
    // A prepares a batch; meanwhile B commits; then A's commit must fail, not overwrite.
    let prepared = a
        .prepare_batch(std::slice::from_ref(&g1), "from-a")
        .await
        .unwrap();
    b.commit_batch(std::slice::from_ref(&g1), "from-b")
        .await
        .unwrap();
    let err = a.commit_prepared(prepared).await.unwrap_err();
    assert_eq!(err.label(), "second_writer", "{err}");
    assert!(err.to_string().contains("second writer detected"), "{err}");
    assert!(a.find_batch("from-b", 5).await.unwrap().is_some());
    assert_eq!(a.find_batch("from-a", 5).await.unwrap(), None);
}

/// Review M5b: another writer that commits between two of the committer's batches was never
/// seen (each batch starts on whatever the tip is). Now the committer compares the tip with the
/// one it left: the next batch fails as a second writer, loudly, and the one after goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_between_two_batches_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
    let g: Vec<_> = ["00:00", "00:30", "01:00", "01:30"]
        .iter()
        .map(|t| {
            granule(
                &src,
                &format!("2024-02-03T{t}:00Z"),
                &SynthOptions::default(),
            )
        })
        .collect();
    let ds = Arc::new(open(&repo, &src).await);
    let (handle, committer) = spawn_committer(
        Arc::clone(&ds),
        CommitterConfig {
            max_batch: 1,
            ..Default::default()
        },
    );
    assert_eq!(
        handle.append(g[0].clone()).await.unwrap().outcome.label(),
        "added"
    );
    // Another writer commits behind the committer's back.
    let other = open(&repo, &src).await;
    other
        .commit_batch(std::slice::from_ref(&g[1]), "stray")
        .await
        .unwrap();
    let err = handle.append(g[2].clone()).await.unwrap_err();
    assert_eq!(err.label(), "second_writer", "{err}");
    assert_eq!(
        handle
            .stats()
            .second_writer
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Reported once: the committer takes the new tip and goes on.
    assert_eq!(
        handle.append(g[2].clone()).await.unwrap().outcome.label(),
        "added"
    );
    assert_eq!(
        handle.append(g[3].clone()).await.unwrap().outcome.label(),
        "added"
    );
    assert_eq!(
        handle
            .stats()
            .second_writer
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(handle);
    committer.join.await.unwrap();
}

/// Review L9: every GetStatus read the store afresh; 200 at once read it 200 times. Now they
/// share one computation until the branch moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_status_readers_share_one_computation_per_branch_move() {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
    let g0 = granule(&src, "2024-02-04T00:00:00Z", &SynthOptions::default());
    let ds = Arc::new(open(&repo, &src).await);
    ds.commit_batch(std::slice::from_ref(&g0), "one")
        .await
        .unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let ds = Arc::clone(&ds);
            tokio::spawn(async move { ds.status_shared().await.unwrap() })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }
    assert!(all.iter().all(|s| Arc::ptr_eq(s, &all[0])), "computed once");
    assert_eq!(all[0].granules_present, 1);
    // Unchanged branch, a second later: the same status, after one look at the tip.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(Arc::ptr_eq(&ds.status_shared().await.unwrap(), &all[0]));
    // The branch moves: a new status.
    ds.commit_batch(&[shifted(&g0, 1, &src)], "two")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ds.status_shared().await.unwrap().granules_present, 2);
}

/// A copy of `g` moved by `steps` half hours (references to objects that need not exist: the
/// writer never reads the source).
fn shifted(g: &GranuleRefs, steps: u64, src: &Path) -> GranuleRefs {
    let p = ProductProfile::final_v07b();
    let mut s = g.clone();
    s.time_index = g.time_index + steps;
    s.start = p.start_of(s.time_index);
    s.key = p.key(s.start);
    s.url = SourceContainer::local(src).unwrap().url_of(&s.key);
    for v in s.variables.values_mut() {
        for r in &mut v.refs {
            r.chunk[0] = s.time_index;
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_roll_over_at_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
    let g = granule(&src, "2019-09-09T00:00:00Z", &SynthOptions::default());
    let mut cfg = DatasetConfig::new(
        ProductProfile::final_v07b(),
        SourceContainer::local(&src).unwrap(),
    );
    cfg.manifest_max_bytes = 5_000; // 10 steps of precipitation (25 refs), 19 of the int16 variable
    assert_eq!(cfg.split_steps(25), 10);
    let ds = Dataset::open_or_create(&RepoLocation::Local(repo.clone()), cfg)
        .await
        .unwrap();
    for day in 0..3u64 {
        let batch: Vec<_> = (0..20).map(|s| shifted(&g, day * 20 + s, &src)).collect();
        ds.commit_batch(&batch, &format!("d{day}")).await.unwrap();
    }
    let st = ds.status().await.unwrap();
    assert_eq!(st.granules_present, 60);
    // 60 steps: 6 splits for each float variable, 4 for the int16 one, plus the native arrays.
    assert!(st.manifests >= 6 * 3 + 4, "{} manifests", st.manifests);
    assert!(
        st.largest_manifest_bytes <= 5_000,
        "largest manifest {} bytes over the 5,000-byte limit",
        st.largest_manifest_bytes
    );
    // A reopened writer keeps the persisted splitting.
    let ds = Dataset::open(&RepoLocation::Local(repo), ProductProfile::final_v07b())
        .await
        .unwrap();
    let batch: Vec<_> = (60..80).map(|s| shifted(&g, s, &src)).collect();
    ds.commit_batch(&batch, "d3").await.unwrap();
    let st2 = ds.status().await.unwrap();
    assert!(st2.manifests > st.manifests && st2.largest_manifest_bytes <= 5_000);

    // A backfill-sized batch records ranges and a digest, not every key, in the commit.
    let big: Vec<_> = (80..150).map(|s| shifted(&g, s, &src)).collect();
    assert!(big.len() > imerg_dataset::LIST_GRANULES_UP_TO);
    ds.commit_batch(&big, "big").await.unwrap();
    let tip = ds.repository().lookup_branch("main").await.unwrap();
    let meta = ds
        .repository()
        .lookup_snapshot(&tip)
        .await
        .unwrap()
        .metadata;
    let gp = &meta["imerg_granules"];
    assert_eq!(gp["count"], 70);
    assert_eq!(
        gp["time_index_ranges"],
        serde_json::json!([[g.time_index + 80, g.time_index + 150]])
    );
    assert_eq!(gp["first_key"], big[0].key);
    assert_eq!(gp["keys_etags_digest"].as_str().unwrap().len(), 64);
    assert!(serde_json::to_string(&meta).unwrap().len() < 2_000);
}

/// Status of an empty store and of a store holding a single granule (once a panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_empty_and_single_granule_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo) = (dir.path().join("src"), dir.path().join("repo"));
    let g = granule(&src, "2021-03-01T12:00:00Z", &SynthOptions::default());
    let ds = open(&repo, &src).await;
    let st = ds.status().await.unwrap();
    assert_eq!((st.granules_present, st.first_granule), (0, None));
    assert!(st.gaps.is_empty());
    ds.commit_batch(std::slice::from_ref(&g), "one")
        .await
        .unwrap();
    let st = ds.status().await.unwrap();
    assert_eq!(st.granules_present, 1);
    assert_eq!(st.first_granule, Some(g.start));
    assert_eq!(st.last_granule, Some(g.start));
    assert!(st.gaps.is_empty());
}
