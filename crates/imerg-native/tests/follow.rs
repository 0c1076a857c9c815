//! The native writer against real repositories: synthetic granules virtualized into a virtual
//! store, the follower's updates (across a block boundary, with a gap, a late granule and a
//! replaced one), a crashed update's leftovers, and values read back element by element against
//! the virtual store's decoded chunks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use imerg_catalog::{ProductProfile, parse_time};
use imerg_dataset::{Dataset, DatasetConfig, RepoLocation, SourceContainer};
use imerg_native::layout::DataArray;
use imerg_native::writer::{read_element, sync_metadata};
use imerg_native::{Follower, FollowerConfig, NativeLayout, NativeRepo};
use imerg_refs::GranuleRefs;
use imerg_synth::{SynthOptions, write_granule};

fn granule(src: &Path, t: u64, opts: &SynthOptions) -> GranuleRefs {
    let p = ProductProfile::final_v07b();
    let start = p.start_of(t);
    let id = p.granule_at(start).unwrap();
    let path = src.join(&id.key);
    write_granule(&path, &p, id.start, opts).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let object = imerg_refs::SourceObject {
        url: SourceContainer::local(src).unwrap().url_of(&id.key),
        etag: None,
        last_modified: Some(meta.modified().unwrap().into()),
        size: meta.len(),
    };
    imerg_virtualize::virtualize_path(&path, &id, &object, &p).unwrap()
}

/// The element of `var` at `(t, lon, lat)` as the virtual store decodes it.
async fn virtual_element(ds: &Dataset, var: &str, t: u64, lon: u64, lat: u64) -> Vec<u8> {
    let tip = ds.branch_tip().await.unwrap();
    let store = ds.store_at(&tip).await.unwrap();
    let meta: serde_json::Value = serde_json::from_slice(
        &store
            .get(
                &format!("{var}/zarr.json"),
                &icechunk::format::ByteRange::ALL,
            )
            .await
            .unwrap(),
    )
    .unwrap();
    let a = DataArray::from_virtual(var, &meta).unwrap();
    let cl = a.virtual_chunk[1];
    let key = format!("{var}/c/{t}/{}/0", lon / cl);
    let Ok(stored) = store.get(&key, &icechunk::format::ByteRange::ALL).await else {
        return a.fill.clone();
    };
    let len = (cl * a.shape[2]) as usize * a.dtype_size;
    let raw = imerg_refs::decode_chunk(&a.virtual_codecs, &stored, a.dtype_size, len).unwrap();
    let at = (((lon % cl) * a.shape[2] + lat) as usize) * a.dtype_size;
    raw[at..at + a.dtype_size].to_vec()
}

async fn native_arrays(native: &NativeRepo, ds: &Dataset) -> Vec<Arc<DataArray>> {
    let tip = ds.branch_tip().await.unwrap();
    let v = ds.store_at(&tip).await.unwrap();
    let n = native.writable().await.unwrap();
    sync_metadata(&n, &v, &NativeLayout::default())
        .await
        .unwrap()
}

/// A virtual dataset with sources under `dir/src` and an empty native repository beside it.
async fn stores(dir: &Path) -> (std::path::PathBuf, Arc<Dataset>, NativeRepo) {
    let src = dir.join("src");
    let cfg = DatasetConfig::new(
        ProductProfile::final_v07b(),
        SourceContainer::local(&src).unwrap(),
    );
    let ds = Dataset::open_or_create(&RepoLocation::Local(dir.join("v")), cfg)
        .await
        .unwrap();
    let native = NativeRepo::open_or_create(&RepoLocation::Local(dir.join("n")))
        .await
        .unwrap();
    (src, Arc::new(ds), native)
}

/// A read-only store at the native branch tip.
async fn native_tip(native: &NativeRepo) -> icechunk::Store {
    let tip = native.repository().lookup_branch("main").await.unwrap();
    let session = native
        .repository()
        .readonly_session(&icechunk::repository::VersionInfo::SnapshotId(tip))
        .await
        .unwrap();
    icechunk::Store::from_session(Arc::new(tokio::sync::RwLock::new(session))).await
}

/// Cells with rain, fill and edges, checked in every data variable at each step.
const CELLS: &[(u64, u64)] = &[(0, 0), (1799, 900), (145, 17), (3599, 1799), (1234, 567)];

async fn assert_equal_at(ds: &Dataset, native: &NativeRepo, steps: &[u64]) {
    let layout = NativeLayout::default();
    let store = native_tip(native).await;
    for a in native_arrays(native, ds).await {
        for &t in steps {
            for &(lon, lat) in CELLS {
                let want = virtual_element(ds, &a.name, t, lon, lat).await;
                let got = read_element(&store, &a, &layout, t, lon, lat)
                    .await
                    .unwrap();
                assert_eq!(got, want, "{} at t={t} lon={lon} lat={lat}", a.name);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_applies_new_late_and_replaced_granules_across_a_block_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (src, ds, native) = stores(dir.path()).await;
    let p = ProductProfile::final_v07b();
    let layout = NativeLayout::default();
    let base = p
        .granule_at(parse_time("2020-01-01T00:00:00Z").unwrap())
        .unwrap()
        .time_index;
    let b0 = base.div_ceil(layout.block) * layout.block;
    let opts = SynthOptions::default();

    // Two steps before the boundary, one after, and a gap at b0 - 1.
    let first: Vec<GranuleRefs> = [b0 - 3, b0 - 2, b0]
        .iter()
        .map(|t| granule(&src, *t, &opts))
        .collect();
    ds.commit_batch(&first, "b1").await.unwrap();
    let f = Follower::new(Arc::clone(&ds), native.clone(), FollowerConfig::default());
    let stats = f.update_now().await.unwrap().expect("an update");
    assert_eq!(
        stats.values_written,
        3 * 4 * 20,
        "3 steps x 4 variables x 20 columns"
    );
    assert!(
        f.update_now().await.unwrap().is_none(),
        "caught up: nothing to do"
    );
    assert_equal_at(&ds, &native, &[b0 - 3, b0 - 2, b0 - 1, b0, b0 + 1]).await;
    let applied = native.applied().await.unwrap().unwrap();
    assert_eq!(applied.virtual_snapshot, ds.branch_tip().await.unwrap());

    // A late granule in the gap, a new one, and a replaced one (other values, same key).
    let late = granule(&src, b0 - 1, &opts);
    let new = granule(&src, b0 + 1, &opts);
    let replaced = granule(
        &src,
        b0 - 3,
        &SynthOptions {
            realistic: true,
            ..SynthOptions::default()
        },
    );
    ds.commit_batch(&[late, new], "b2").await.unwrap();
    ds.commit_batch(&[replaced], "b3").await.unwrap();
    // An update that crashed before its commit leaves only uncommitted writes behind.
    {
        let tip = ds.branch_tip().await.unwrap();
        let v = ds.store_at(&tip).await.unwrap();
        let store = native.writable().await.unwrap();
        let arrays = sync_metadata(&store, &v, &layout).await.unwrap();
        let job = imerg_native::writer::BlockJob {
            block: b0 / layout.block,
            columns: Some(&[0]),
            steps: &[b0 + 1],
            compact_above: imerg_native::writer::MAX_FRAMES,
        };
        imerg_native::writer::write_block(&store, &v, &layout, &arrays, job)
            .await
            .unwrap();
        drop(store);
    }
    let stats = f.update_now().await.unwrap().expect("an update");
    assert_eq!(
        stats.values_written,
        3 * 4 * 20,
        "only the changed steps: late, new and replaced"
    );
    assert_equal_at(&ds, &native, &[b0 - 3, b0 - 2, b0 - 1, b0, b0 + 1, b0 + 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lossy_mode_rounds_float_values_and_keeps_fill_and_integers_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (src, ds, native) = stores(dir.path()).await;
    let p = ProductProfile::final_v07b();
    let t = p
        .granule_at(parse_time("2020-01-01T00:00:00Z").unwrap())
        .unwrap()
        .time_index;
    ds.commit_batch(&[granule(&src, t, &SynthOptions::default())], "b1")
        .await
        .unwrap();
    let layout = NativeLayout {
        keep_mantissa_bits: Some(7),
        ..Default::default()
    };
    let opts = imerg_native::RechunkOptions {
        layout,
        ..Default::default()
    };
    let mut progress = |_: u64, _: u64, _: &imerg_native::WriteStats| {};
    let report = imerg_native::rechunk::rechunk(&ds, &native, &opts, &mut progress)
        .await
        .unwrap();
    assert!(report.completed);
    let store = native_tip(&native).await;
    let mut rounded = 0;
    for a in native_arrays(&native, &ds).await {
        for lon in (0..3600).step_by(97) {
            for lat in (0..1800).step_by(89) {
                let want = virtual_element(&ds, &a.name, t, lon, lat).await;
                let got = read_element(&store, &a, &layout, t, lon, lat)
                    .await
                    .unwrap();
                if !a.is_float || want == a.fill {
                    assert_eq!(got, want, "{} exact at {lon},{lat}", a.name);
                    continue;
                }
                let (w, g) = (
                    f32::from_le_bytes(want.clone().try_into().unwrap()),
                    f32::from_le_bytes(got.clone().try_into().unwrap()),
                );
                assert!(
                    (g - w).abs() <= w.abs() * 2f32.powi(-8),
                    "{} at {lon},{lat}: {w} -> {g}",
                    a.name
                );
                assert_eq!(g.to_bits() & 0xffff, 0, "low mantissa bits cleared");
                rounded += usize::from(g != w);
            }
        }
    }
    assert!(rounded > 100, "values were rounded: {rounded}");
}
