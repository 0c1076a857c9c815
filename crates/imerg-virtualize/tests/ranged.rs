//! The ranged path against its oracle: for every synthetic format option (earliest / v110,
//! unlimited / fixed time, shuffle on / off, deflate 1 / 4 / 6 / 9), `virtualize_ranged` over
//! byte-range reads gives exactly the `GranuleRefs` that `virtualize_bytes` (libhdf5) gives on
//! the whole object; the bad-input files give the same error reason (and message) on both paths;
//! and a scattered granule read with small limits gives `TooScattered`, after which the
//! whole-object fallback succeeds. Each case prints its cost (GETs, bytes %, round trips).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use imerg_catalog::{GranuleId, ProductProfile, parse_time};
use imerg_hdf5::{FetchStats, MemReader, RangeReader, ReadOptions};
use imerg_refs::{GranuleRefs, SourceObject};
use imerg_synth::{ExtraFilter, H5Format, SynthOptions, write_granule};
use imerg_virtualize::{RangedOptions, VirtualizeError, virtualize_bytes, virtualize_ranged};

fn source(size: u64) -> SourceObject {
    SourceObject {
        url: "s3://bucket/granule.HDF5".into(),
        etag: Some("\"etag\"".into()),
        last_modified: None,
        size,
    }
}

/// Limits that never give up, so the comparison always runs.
fn generous() -> RangedOptions {
    RangedOptions {
        max_round_trips: u32::MAX,
        max_fetched_fraction: 1.0,
        ..RangedOptions::default()
    }
}

fn ranged_with(
    reader: Arc<dyn RangeReader>,
    id: &GranuleId,
    size: u64,
    profile: &ProductProfile,
    opts: &RangedOptions,
) -> Result<(GranuleRefs, FetchStats), VirtualizeError> {
    futures::executor::block_on(virtualize_ranged(
        reader,
        id.clone(),
        source(size),
        Arc::new(profile.clone()),
        opts,
    ))
}

fn ranged(
    bytes: &[u8],
    id: &GranuleId,
    profile: &ProductProfile,
    opts: &RangedOptions,
) -> Result<(GranuleRefs, FetchStats), VirtualizeError> {
    let reader: Arc<dyn RangeReader> = Arc::new(MemReader::new(bytes.to_vec()));
    ranged_with(reader, id, bytes.len() as u64, profile, opts)
}

fn synth(
    dir: &Path,
    profile: &ProductProfile,
    start: &str,
    opts: &SynthOptions,
) -> (Vec<u8>, GranuleId) {
    let id = profile.granule_at(parse_time(start).unwrap()).unwrap();
    let path = dir.join(&id.key);
    write_granule(&path, profile, id.start, opts).unwrap();
    (std::fs::read(&path).unwrap(), id)
}

fn pct(stats: &FetchStats, size: usize) -> f64 {
    100.0 * stats.bytes as f64 / size as f64
}

/// One granule: both paths, compared field by field, with the cost printed.
fn oracle_case(label: &str, opts: SynthOptions, start: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = ProductProfile::final_v07b();
    let (bytes, id) = synth(dir.path(), &p, start, &opts);
    let oracle = virtualize_bytes(&bytes, &id, &source(bytes.len() as u64), &p).unwrap();
    let (refs, stats) = ranged(&bytes, &id, &p, &generous()).unwrap();
    assert_eq!(refs.ref_count(), 88, "{label}");
    for (name, var) in &oracle.variables {
        let got = &refs.variables[name];
        assert_eq!(
            serde_json::to_string(&got.zarr).unwrap(),
            serde_json::to_string(&var.zarr).unwrap(),
            "{label}: {name} zarr.json"
        );
        assert_eq!(got.refs, var.refs, "{label}: {name} refs");
    }
    assert_eq!(refs.coords, oracle.coords, "{label}: coordinates");
    assert_eq!(refs.fingerprint, oracle.fingerprint, "{label}: fingerprint");
    assert_eq!(refs, oracle, "{label}: the whole GranuleRefs");
    // The default limits' verdict on this (small, synthetic) object.
    let default = match ranged(&bytes, &id, &p, &RangedOptions::default()) {
        Ok(_) => "accepted".to_string(),
        Err(e) => {
            assert!(e.falls_back(), "{e}");
            e.reason().to_string()
        }
    };
    println!(
        "| {label} | {} | {} | {:.1}% | {} | identical | {default} |",
        bytes.len(),
        stats.gets,
        pct(&stats, bytes.len()),
        stats.round_trips
    );
}

/// Every format option: earliest / v110 x unlimited / fixed time x shuffle off / on x deflate
/// 1, 4, 6, 9 (each level once per format and time, with and without shuffle in turn).
fn format_cases(format: H5Format, unlimited_time: bool) {
    let name = match format {
        H5Format::Earliest => "earliest",
        _ => "v110",
    };
    let time = if unlimited_time { "unlimited" } else { "fixed" };
    // Each (format, time) meets all four levels, two with shuffle and two without.
    let cases = if unlimited_time {
        [(false, [1u8, 6]), (true, [4u8, 9])]
    } else {
        [(false, [4u8, 9]), (true, [1u8, 6])]
    };
    for (shuffle, levels) in cases {
        for level in levels {
            let label = format!(
                "{name}, {time} time, {}, deflate {level}",
                if shuffle { "shuffle" } else { "no shuffle" }
            );
            oracle_case(
                &label,
                SynthOptions {
                    deflate_level: level,
                    shuffle,
                    format,
                    unlimited_time,
                    ..Default::default()
                },
                "2014-03-09T13:30:00Z",
            );
        }
    }
}

#[test]
fn same_refs_earliest_unlimited_time() {
    format_cases(H5Format::Earliest, true);
}

#[test]
fn same_refs_earliest_fixed_time() {
    format_cases(H5Format::Earliest, false);
}

#[test]
fn same_refs_v110_unlimited_time() {
    format_cases(H5Format::V110, true);
}

#[test]
fn same_refs_v110_fixed_time() {
    format_cases(H5Format::V110, false);
}

#[test]
fn same_refs_through_a_file_reader() {
    let dir = tempfile::tempdir().unwrap();
    let p = ProductProfile::final_v07b();
    let (bytes, id) = synth(
        dir.path(),
        &p,
        "1998-01-01T00:00:00Z",
        &SynthOptions::default(),
    );
    let path = dir.path().join(&id.key);
    let oracle = virtualize_bytes(&bytes, &id, &source(bytes.len() as u64), &p).unwrap();
    let reader: Arc<dyn RangeReader> = Arc::new(imerg_hdf5::FileReader::open(&path).unwrap());
    let (refs, _) = ranged_with(reader, &id, 0, &p, &generous()).unwrap();
    assert_eq!(refs, oracle);
}

const START: &str = "2019-03-10T04:00:00Z";

fn bad_id() -> GranuleId {
    ProductProfile::final_v07b()
        .granule_at(parse_time(START).unwrap())
        .unwrap()
}

/// Both paths on one bad input: the same reason, and the same message unless it quotes a
/// reader's own words (truncation details).
fn same_verdict(label: &str, bytes: &[u8], id: &GranuleId, profile: &ProductProfile) {
    let oracle = virtualize_bytes(bytes, id, &source(bytes.len() as u64), profile)
        .expect_err("the oracle rejects it");
    let got = ranged(bytes, id, profile, &generous()).expect_err("the ranged path rejects it");
    assert_eq!(got.reason(), oracle.reason(), "{label}: {got} / {oracle}");
    if oracle.reason() != "truncated" {
        assert_eq!(got.to_string(), oracle.to_string(), "{label}");
    }
    println!("| {label} | {} | {} |", oracle.reason(), got.reason());
}

fn synth_bad(dir: &Path, profile: &ProductProfile, opts: &SynthOptions) -> std::path::PathBuf {
    let path = dir.join("granule.HDF5");
    write_granule(&path, profile, bad_id().start, opts).unwrap();
    path
}

#[test]
fn bad_input_gets_the_same_reason_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let p = ProductProfile::final_v07b();
    let id = bad_id();

    same_verdict(
        "html body",
        &b"<html><body>403 Forbidden</body></html>".repeat(100),
        &id,
        &p,
    );
    same_verdict("empty object", &[], &id, &p);
    same_verdict("zip file", b"PK\x03\x04 a zip file", &id, &p);

    let good = std::fs::read(synth_bad(dir.path(), &p, &SynthOptions::default())).unwrap();
    for keep in [good.len() / 2, good.len() - 1, 64] {
        same_verdict(&format!("truncated to {keep}"), &good[..keep], &id, &p);
    }

    let nogrid = dir.path().join("nogrid.HDF5");
    {
        let f = hdf5::File::create(&nogrid).unwrap();
        f.create_group("Other").unwrap();
    }
    same_verdict("no Grid group", &std::fs::read(&nogrid).unwrap(), &id, &p);

    let omit = synth_bad(
        dir.path(),
        &p,
        &SynthOptions {
            omit_variables: vec!["randomError".into()],
            ..Default::default()
        },
    );
    same_verdict(
        "randomError missing",
        &std::fs::read(omit).unwrap(),
        &id,
        &p,
    );

    let mut small = ProductProfile::final_v07b();
    small.layout.grid.n_lon = 360;
    small.layout.grid.n_lat = 180;
    for v in &mut small.layout.variables {
        v.chunk = [1, 90, 180];
    }
    let path = synth_bad(dir.path(), &small, &SynthOptions::default());
    same_verdict("360 x 180 grid", &std::fs::read(path).unwrap(), &id, &p);

    let path = synth_bad(dir.path(), &p, &SynthOptions::default());
    {
        let f = hdf5::File::open_rw(&path).unwrap();
        let g = f.group("Grid").unwrap();
        g.unlink("precipitation").unwrap();
        g.new_dataset::<f32>()
            .shape((2, 3600, 1800))
            .chunk((1, 145, 1800))
            .deflate(6)
            .create("precipitation")
            .unwrap();
    }
    same_verdict("two time steps", &std::fs::read(&path).unwrap(), &id, &p);

    let path = synth_bad(
        dir.path(),
        &p,
        &SynthOptions {
            precipitation_lon_chunk: Some(100),
            ..Default::default()
        },
    );
    same_verdict("lon chunk 100", &std::fs::read(path).unwrap(), &id, &p);

    let mut f64_profile = ProductProfile::final_v07b();
    f64_profile.layout.variables[0].dtype = "float64".into();
    same_verdict("profile expects float64", &good, &id, &f64_profile);

    for (filter, label) in [
        (ExtraFilter::ScaleOffset, "scale-offset filter"),
        (ExtraFilter::NBit, "nbit filter"),
        (ExtraFilter::Fletcher32, "fletcher32 filter"),
    ] {
        let path = synth_bad(
            dir.path(),
            &p,
            &SynthOptions {
                extra_filter: Some(filter),
                ..Default::default()
            },
        );
        same_verdict(label, &std::fs::read(path).unwrap(), &id, &p);
    }

    let path = synth_bad(dir.path(), &p, &SynthOptions::default());
    {
        let f = hdf5::File::open_rw(&path).unwrap();
        let ds = f.dataset("Grid/precipitation").unwrap();
        let raw = vec![0u8; 145 * 1800 * 4];
        let offset: [u64; 3] = [0, 290, 0];
        // SAFETY: a live dataset id, an offset of its rank, and a buffer of the given length.
        let rc = hdf5::sync::sync(|| unsafe {
            hdf5_sys::h5d::H5Dwrite_chunk(
                ds.id(),
                hdf5_sys::h5p::H5P_DEFAULT,
                1,
                offset.as_ptr(),
                raw.len(),
                raw.as_ptr().cast(),
            )
        });
        assert!(rc >= 0);
    }
    same_verdict(
        "chunk skips deflate",
        &std::fs::read(&path).unwrap(),
        &id,
        &p,
    );

    let other = p
        .granule_at(parse_time("2019-03-10T04:30:00Z").unwrap())
        .unwrap();
    same_verdict("time disagrees with the name", &good, &other, &p);
}

#[test]
fn scattered_metadata_is_too_scattered_with_small_limits() {
    let dir = tempfile::tempdir().unwrap();
    let p = ProductProfile::final_v07b();
    // libhdf5 places each dataset's header just before its chunks: metadata spread over 0-75%.
    let (bytes, id) = synth(
        dir.path(),
        &p,
        "2003-07-14T13:30:00Z",
        &SynthOptions::default(),
    );
    let small_reads = ReadOptions {
        first_read: 4096,
        block_size: 4096,
        ..ReadOptions::default()
    };
    let (_, stats) = ranged(
        &bytes,
        &id,
        &p,
        &RangedOptions {
            read: small_reads.clone(),
            ..generous()
        },
    )
    .unwrap();
    println!(
        "small reads, no limits: {} GETs, {:.1}% of {} bytes, {} round trips",
        stats.gets,
        pct(&stats, bytes.len()),
        bytes.len(),
        stats.round_trips
    );

    let few_trips = RangedOptions {
        read: small_reads.clone(),
        max_round_trips: 3,
        max_fetched_fraction: 1.0,
    };
    let err = ranged(&bytes, &id, &p, &few_trips).unwrap_err();
    println!("max 3 round trips: {err}");
    assert_eq!(err.reason(), "too_scattered");
    assert!(err.falls_back());
    assert!(matches!(
        err,
        VirtualizeError::TooScattered { round_trips, .. } if round_trips > 3
    ));

    let few_bytes = RangedOptions {
        read: small_reads,
        max_round_trips: u32::MAX,
        max_fetched_fraction: 0.02,
    };
    let err = ranged(&bytes, &id, &p, &few_bytes).unwrap_err();
    println!("max 2% of the bytes: {err}");
    assert_eq!(err.reason(), "too_scattered");
    match err {
        VirtualizeError::TooScattered { bytes: b, size, .. } => {
            assert_eq!(size, bytes.len() as u64);
            assert!(b * 50 > size, "{b} of {size}");
        }
        other => panic!("{other}"),
    }

    // The caller's fallback: the whole object through libhdf5.
    let whole = virtualize_bytes(&bytes, &id, &source(bytes.len() as u64), &p).unwrap();
    assert_eq!(whole.ref_count(), 88);
}

#[test]
fn unknown_size_is_ranged_unsupported() {
    #[derive(Debug)]
    struct NoSize(MemReader);
    #[async_trait::async_trait]
    impl RangeReader for NoSize {
        async fn read(&self, offset: u64, len: u64) -> imerg_hdf5::Result<bytes::Bytes> {
            self.0.read(offset, len).await
        }
    }
    // A good granule from storage that tells no size, asked for with no size known.
    let dir = tempfile::tempdir().unwrap();
    let p = ProductProfile::final_v07b();
    let (bytes, id) = synth(
        dir.path(),
        &p,
        "2003-07-14T13:30:00Z",
        &SynthOptions::default(),
    );
    let reader: Arc<dyn RangeReader> = Arc::new(NoSize(MemReader::new(bytes)));
    let err = ranged_with(reader, &id, 0, &p, &generous()).unwrap_err();
    assert_eq!(err.reason(), "ranged_unsupported");
    assert!(err.falls_back());
    // Bytes that are no HDF5 at all are a verdict, whatever the size.
    let reader: Arc<dyn RangeReader> = Arc::new(NoSize(MemReader::new(vec![0u8; 16])));
    let err = ranged_with(reader, &bad_id(), 0, &p, &generous()).unwrap_err();
    assert_eq!(err.reason(), "not_hdf5");
}

/// Coordinates stored contiguous and compact (not chunked as the generator writes them), string
/// attributes fixed and variable length with trailing blanks, number arrays and NaN, and data
/// variables with no `_FillValue` whose fill value is user-set or the library default: both
/// paths still agree on everything.
#[test]
fn other_storage_layouts_fill_values_and_attributes() {
    use hdf5::plist::dataset_create::Layout as H5Layout;
    use hdf5::types::{FixedAscii, VarLenUnicode};

    let dir = tempfile::tempdir().unwrap();
    let p = ProductProfile::final_v07b();
    let id = p
        .granule_at(parse_time("2009-11-02T21:00:00Z").unwrap())
        .unwrap();
    let path = dir.path().join("mixed.HDF5");
    write_granule(&path, &p, id.start, &SynthOptions::default()).unwrap();
    {
        let f = hdf5::File::open_rw(&path).unwrap();
        let g = f.group("Grid").unwrap();
        let lon: Vec<f32> = g.dataset("lon").unwrap().read_raw().unwrap();
        let lat: Vec<f32> = g.dataset("lat").unwrap().read_raw().unwrap();
        let lat_bnds: Vec<f32> = g.dataset("lat_bnds").unwrap().read_raw().unwrap();
        for name in [
            "lon",
            "lat",
            "lat_bnds",
            "randomError",
            "precipitationQualityIndex",
        ] {
            g.unlink(name).unwrap();
        }
        // lon: contiguous, with a variable-length and a fixed-length string attribute.
        let ds = g
            .new_dataset::<f32>()
            .shape(3600)
            .layout(H5Layout::Contiguous)
            .create("lon")
            .unwrap();
        ds.write_raw(&lon).unwrap();
        let units: VarLenUnicode = "degrees_east".parse().unwrap();
        ds.new_attr::<VarLenUnicode>()
            .create("units")
            .unwrap()
            .write_scalar(&units)
            .unwrap();
        let name = FixedAscii::<16>::from_ascii(b"longitude  ").unwrap();
        ds.new_attr::<FixedAscii<16>>()
            .create("long_name")
            .unwrap()
            .write_scalar(&name)
            .unwrap();
        // lat: compact, with a number array and a NaN.
        let ds = g
            .new_dataset::<f32>()
            .shape(1800)
            .layout(H5Layout::Compact)
            .create("lat")
            .unwrap();
        ds.write_raw(&lat).unwrap();
        ds.new_attr::<i32>()
            .shape(3)
            .create("valid_range_i")
            .unwrap()
            .write_raw(&[-90, 0, 90])
            .unwrap();
        ds.new_attr::<f64>()
            .create("missing")
            .unwrap()
            .write_scalar(&f64::NAN)
            .unwrap();
        // lat_bnds: contiguous 2-D.
        g.new_dataset::<f32>()
            .shape((1800, 2))
            .create("lat_bnds")
            .unwrap()
            .write_raw(&lat_bnds)
            .unwrap();
        // Data variables without `_FillValue` and without data: the dataset's fill value.
        g.new_dataset::<f32>()
            .shape((1, 3600, 1800))
            .chunk((1, 145, 1800))
            .deflate(6)
            .fill_value(-1.5f32)
            .create("randomError")
            .unwrap();
        g.new_dataset::<f32>()
            .shape((1, 3600, 1800))
            .chunk((1, 145, 1800))
            .deflate(6)
            .create("precipitationQualityIndex")
            .unwrap();
    }
    {
        let f = hdf5::File::open(&path).unwrap();
        let layout = |n: &str| f.dataset(&format!("Grid/{n}")).unwrap().layout();
        assert_eq!(layout("lon"), H5Layout::Contiguous);
        assert_eq!(layout("lat"), H5Layout::Compact);
        assert_eq!(layout("lat_bnds"), H5Layout::Contiguous);
        assert_eq!(layout("lon_bnds"), H5Layout::Chunked);
    }
    let bytes = std::fs::read(&path).unwrap();
    let oracle = virtualize_bytes(&bytes, &id, &source(bytes.len() as u64), &p).unwrap();
    let (refs, stats) = ranged(&bytes, &id, &p, &generous()).unwrap();
    assert_eq!(refs, oracle);
    assert_eq!(
        oracle.variables["randomError"].zarr["fill_value"],
        serde_json::json!(-1.5)
    );
    assert_eq!(
        oracle.variables["precipitationQualityIndex"].zarr["fill_value"],
        serde_json::json!(0.0)
    );
    assert_eq!(oracle.coords.lon.attributes["long_name"], "longitude");
    assert_eq!(
        oracle.coords.lat.attributes["valid_range_i"],
        serde_json::json!([-90, 0, 90])
    );
    assert_eq!(oracle.coords.lat.attributes["missing"], "NaN");
    println!(
        "| contiguous + compact coordinates, dataset fill values | {} | {} | {:.1}% | {} | identical |",
        bytes.len(),
        stats.gets,
        pct(&stats, bytes.len()),
        stats.round_trips
    );
}

/// A Python with h5py (`IMERG_PYTHON`, else the project's venv under ~/.cache/imerg-ingest).
fn python() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("IMERG_PYTHON") {
        return Some(p.into());
    }
    let dir = Path::new(&std::env::var("HOME").ok()?).join(".cache/imerg-ingest");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/python"))
        .find(|p| p.exists())
}

/// Realistically sized granules (about 12 MB) written by another writer, h5py with its bundled
/// HDF5 2.0 (imerg-hdf5's `tests/h5py_writer.py`): where libhdf5 1.10 can open the file, both
/// paths agree; `latest` is beyond libhdf5 1.10 and only the ranged path reads it.
#[test]
fn realistic_h5py_granules() {
    // A real component that cannot start fails the test: never skipped silently.
    let py = python().expect(
        "no Python with h5py: run ./scripts/test.sh (it builds the venv and sets IMERG_PYTHON)",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../imerg-hdf5/tests/h5py_writer.py");
    let p = ProductProfile::final_v07b();
    // The writer's time value: 675000000 s after the GPS epoch.
    let start =
        parse_time("1980-01-06T00:00:00Z").unwrap() + chrono::Duration::seconds(675_000_000);
    let id = p.granule_at(start).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for libver in ["earliest", "v110", "latest"] {
        let path = dir.path().join(format!("h5py-{libver}.h5"));
        let out = std::process::Command::new(&py)
            .arg(&script)
            .arg(&path)
            .arg(libver)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "h5py writer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&path).unwrap();
        let (refs, stats) = ranged(&bytes, &id, &p, &generous()).unwrap();
        assert_eq!(refs.ref_count(), 88);
        let verdict = match virtualize_bytes(&bytes, &id, &source(bytes.len() as u64), &p) {
            Ok(oracle) => {
                assert_eq!(refs, oracle, "h5py {libver}");
                "identical"
            }
            Err(e) => {
                assert_eq!(libver, "latest", "{e}");
                "libhdf5 1.10 cannot open it"
            }
        };
        let default = match ranged(&bytes, &id, &p, &RangedOptions::default()) {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.reason().to_string(),
        };
        println!(
            "| h5py {libver} | {} | {} | {:.1}% | {} | {verdict} | {default} |",
            bytes.len(),
            stats.gets,
            pct(&stats, bytes.len()),
            stats.round_trips
        );
    }
}
