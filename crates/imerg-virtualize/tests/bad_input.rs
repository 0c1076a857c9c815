//! Bad input gets a clear error, never a panic: each case checks the error names what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use imerg_catalog::{GranuleId, ProductProfile, parse_time};
use imerg_refs::SourceObject;
use imerg_synth::{ExtraFilter, SynthOptions, write_granule};
use imerg_virtualize::{VirtualizeError, virtualize_bytes, virtualize_path};

const START: &str = "2019-03-10T04:00:00Z";

fn id() -> GranuleId {
    ProductProfile::final_v07b()
        .granule_at(parse_time(START).unwrap())
        .unwrap()
}

fn source() -> SourceObject {
    SourceObject {
        url: "file:///nowhere".into(),
        etag: None,
        last_modified: None,
        size: 0,
    }
}

fn synth_with(dir: &Path, profile: &ProductProfile, opts: &SynthOptions) -> PathBuf {
    let path = dir.join("granule.HDF5");
    write_granule(&path, profile, id().start, opts).unwrap();
    path
}

fn virtualize_file(path: &Path) -> Result<imerg_refs::GranuleRefs, VirtualizeError> {
    virtualize_path(path, &id(), &source(), &ProductProfile::final_v07b())
}

fn expect_err(res: Result<imerg_refs::GranuleRefs, VirtualizeError>, reason: &str, says: &[&str]) {
    let err = res.expect_err("must be rejected");
    let msg = err.to_string();
    assert_eq!(err.reason(), reason, "{msg}");
    assert!(msg.contains(&id().key), "names the key: {msg}");
    for s in says {
        assert!(msg.contains(s), "{msg:?} should say {s:?}");
    }
}

#[test]
fn not_hdf5() {
    let text = b"<html><body>403 Forbidden</body></html>".repeat(100);
    expect_err(
        virtualize_bytes(&text, &id(), &source(), &ProductProfile::final_v07b()),
        "not_hdf5",
        &["not an HDF5 file"],
    );
    expect_err(
        virtualize_bytes(&[], &id(), &source(), &ProductProfile::final_v07b()),
        "not_hdf5",
        &["0 bytes"],
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.HDF5");
    std::fs::write(&p, b"PK\x03\x04 a zip file").unwrap();
    expect_err(virtualize_file(&p), "not_hdf5", &["not an HDF5 file"]);
}

#[test]
fn truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = synth_with(
        dir.path(),
        &ProductProfile::final_v07b(),
        &SynthOptions::default(),
    );
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() / 2, bytes.len() - 1, 64] {
        let res = virtualize_bytes(
            &bytes[..keep],
            &id(),
            &source(),
            &ProductProfile::final_v07b(),
        );
        let err = res.expect_err("truncated");
        assert_eq!(err.reason(), "truncated", "{keep}: {err}");
        assert!(err.to_string().contains("truncated"), "{err}");
        let cut = dir.path().join(format!("cut{keep}.HDF5"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        assert_eq!(virtualize_file(&cut).unwrap_err().reason(), "truncated");
    }
}

/// A granule whose `time` declares 2^40 steps (chunked, nothing stored: libhdf5 would serve fill
/// values) is rejected from its shape, before any value is read: no allocation of what the file
/// declares (reliability review H1; the old code aborted the process).
#[test]
fn time_declaring_two_to_the_forty_steps_is_rejected_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = synth_with(
        dir.path(),
        &ProductProfile::final_v07b(),
        &SynthOptions::default(),
    );
    {
        let f = hdf5::File::open_rw(&path).unwrap();
        let grid = f.group("Grid").unwrap();
        grid.unlink("time").unwrap();
        grid.new_dataset::<i32>()
            .shape((1usize << 40,))
            .chunk(1024)
            .create("time")
            .unwrap();
    }
    expect_err(
        virtualize_file(&path),
        "coordinates",
        &["shape is [1099511627776], expected [1]"],
    );
    let bytes = std::fs::read(&path).unwrap();
    expect_err(
        virtualize_bytes(&bytes, &id(), &source(), &ProductProfile::final_v07b()),
        "coordinates",
        &["expected [1]"],
    );
}

#[test]
fn missing_group_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nogrid.HDF5");
    {
        let f = hdf5::File::create(&path).unwrap();
        f.create_group("Other").unwrap();
    }
    expect_err(
        virtualize_file(&path),
        "missing_variable",
        &["missing group \"Grid\""],
    );

    let path = synth_with(
        dir.path(),
        &ProductProfile::final_v07b(),
        &SynthOptions {
            omit_variables: vec!["randomError".into()],
            ..Default::default()
        },
    );
    expect_err(
        virtualize_file(&path),
        "missing_variable",
        &["Grid/randomError"],
    );
}

#[test]
fn shape_dtype_and_chunking_different_from_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    // A small grid written by a profile that says so; the Final profile expects 3600 x 1800.
    let mut small = ProductProfile::final_v07b();
    small.layout.grid.n_lon = 360;
    small.layout.grid.n_lat = 180;
    for v in &mut small.layout.variables {
        v.chunk = [1, 90, 180];
    }
    let path = synth_with(dir.path(), &small, &SynthOptions::default());
    expect_err(
        virtualize_file(&path),
        "coordinates",
        &["lon", "shape is [360]"],
    );

    // Coordinates right, a data variable with two time steps.
    let path = synth_with(
        dir.path(),
        &ProductProfile::final_v07b(),
        &SynthOptions::default(),
    );
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
    expect_err(
        virtualize_file(&path),
        "layout",
        &[
            "precipitation",
            "shape is [2, 3600, 1800]",
            "expects [1, 3600, 1800]",
        ],
    );

    let path = synth_with(
        dir.path(),
        &ProductProfile::final_v07b(),
        &SynthOptions {
            precipitation_lon_chunk: Some(100),
            ..Default::default()
        },
    );
    expect_err(
        virtualize_file(&path),
        "layout",
        &[
            "precipitation",
            "chunk shape is [1, 100, 1800]",
            "expects [1, 145, 1800]",
        ],
    );

    let mut f64_profile = ProductProfile::final_v07b();
    f64_profile.layout.variables[0].dtype = "float64".into();
    let path = synth_with(
        dir.path(),
        &ProductProfile::final_v07b(),
        &SynthOptions::default(),
    );
    expect_err(
        virtualize_path(&path, &id(), &source(), &f64_profile),
        "layout",
        &["precipitation", "dtype", "float32", "expects float64"],
    );
}

#[test]
fn filters_zarr_cannot_express() {
    let dir = tempfile::tempdir().unwrap();
    for (filter, reason, says) in [
        (
            ExtraFilter::ScaleOffset,
            "unsupported_filter",
            "scale-offset",
        ),
        (ExtraFilter::NBit, "unsupported_filter", "nbit"),
        (ExtraFilter::Fletcher32, "unsupported_filter", "fletcher32"),
    ] {
        let path = synth_with(
            dir.path(),
            &ProductProfile::final_v07b(),
            &SynthOptions {
                extra_filter: Some(filter),
                ..Default::default()
            },
        );
        expect_err(virtualize_file(&path), reason, &["precipitation", says]);
    }
}

#[test]
fn chunk_whose_filter_mask_skips_a_filter() {
    let dir = tempfile::tempdir().unwrap();
    let path = synth_with(
        dir.path(),
        &ProductProfile::final_v07b(),
        &SynthOptions::default(),
    );
    {
        // Overwrite one chunk with its raw (undeflated) bytes and a mask that says "deflate
        // skipped", as HDF5 does when an optional filter fails.
        let f = hdf5::File::open_rw(&path).unwrap();
        let ds = f.dataset("Grid/precipitation").unwrap();
        let raw = vec![0u8; 145 * 1800 * 4];
        let offset: [u64; 3] = [0, 290, 0];
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
    expect_err(
        virtualize_file(&path),
        "filter_mask",
        &["precipitation", "[0, 290, 0]", "skips filters (mask 0x1)"],
    );
}

#[test]
fn time_that_disagrees_with_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = synth_with(
        dir.path(),
        &ProductProfile::final_v07b(),
        &SynthOptions::default(),
    );
    let other = ProductProfile::final_v07b()
        .granule_at(parse_time("2019-03-10T04:30:00Z").unwrap())
        .unwrap();
    let err = virtualize_path(&path, &other, &source(), &ProductProfile::final_v07b()).unwrap_err();
    assert_eq!(err.reason(), "coordinates");
    let msg = err.to_string();
    assert!(
        msg.contains("2019-03-10 04:00:00 UTC") && msg.contains("04:30:00"),
        "{msg}"
    );
}

#[test]
fn shifted_coordinates_change_the_fingerprint_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let a = synth_with(
        dir.path(),
        &ProductProfile::final_v07b(),
        &SynthOptions::default(),
    );
    let ra = virtualize_file(&a).unwrap();
    let b = synth_with(
        dir.path(),
        &ProductProfile::final_v07b(),
        &SynthOptions {
            lon_shift: 0.05,
            ..Default::default()
        },
    );
    let rb = virtualize_file(&b).unwrap();
    assert_ne!(ra.fingerprint, rb.fingerprint);
    let d = ra.layout.differences(&rb.layout);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].contains("coordinate values"), "{d:?}");
}
