//! Oracle tests on synthetic granules (imerg-synth, written by libhdf5 through hdf5-metno) in
//! every format option: the chunk tables, shapes, dtypes, chunk shapes and filters read from
//! ranged reads must equal what libhdf5 reports; the read cost is printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use imerg_catalog::ProductProfile;
use imerg_hdf5::{AttrValue, ReadOptions};
use imerg_synth::{H5Format, SynthOptions, write_granule};

fn case(label: &str, opts: SynthOptions) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.HDF5");
    let profile = ProductProfile::final_v07b();
    let start = imerg_catalog::parse_time("2001-05-06T10:30:00Z").unwrap();
    write_granule(&path, &profile, start, &opts).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let size = bytes.len() as u64;
    let idx = common::read(bytes, ReadOptions::default());
    for d in &idx.datasets {
        let o = common::oracle(&path, &d.path);
        common::assert_matches(d, &o);
    }
    let n: usize = idx.datasets.iter().take(4).map(|d| d.chunks.len()).sum();
    assert_eq!(n, 88, "{label}: 88 chunk references");
    let p = &idx.datasets[0];
    assert_eq!(
        p.attribute("CodeMissingValue").map(|a| &a.value),
        Some(&AttrValue::Strings(vec!["-9999.9".into()]))
    );
    assert_eq!(p.fill_value_f64(), Some(f64::from(-9999.9f32)));
    match p.attribute("_FillValue").map(|a| &a.value) {
        Some(AttrValue::Floats(v)) => assert_eq!(v, &vec![f64::from(-9999.9f32)]),
        other => panic!("_FillValue {other:?}"),
    }
    let time = &idx.datasets[4];
    assert_eq!(
        time.attribute("units").map(|a| &a.value),
        Some(&AttrValue::Strings(vec![
            "seconds since 1980-01-06 00:00:00 UTC".into()
        ]))
    );
    println!("{}", common::report(label, size, &idx));
}

#[test]
fn earliest_deflate6() {
    case("synth earliest deflate6", SynthOptions::default());
}

#[test]
fn earliest_shuffle_deflate4() {
    case(
        "synth earliest shuffle+deflate4",
        SynthOptions {
            shuffle: true,
            deflate_level: 4,
            ..SynthOptions::default()
        },
    );
}

#[test]
fn v110_unlimited_time() {
    case(
        "synth v110 unlimited time",
        SynthOptions {
            format: H5Format::V110,
            ..SynthOptions::default()
        },
    );
}

#[test]
fn v110_fixed_time_shuffle() {
    case(
        "synth v110 fixed time shuffle",
        SynthOptions {
            format: H5Format::V110,
            unlimited_time: false,
            shuffle: true,
            ..SynthOptions::default()
        },
    );
}

#[test]
fn earliest_fixed_time() {
    case(
        "synth earliest fixed time",
        SynthOptions {
            unlimited_time: false,
            ..SynthOptions::default()
        },
    );
}
