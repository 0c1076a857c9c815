//! References proven the hard way: for every stored chunk of every variable, read the bytes at
//! `[offset, offset + length)` of the file, decode them with the codecs written in the Zarr
//! metadata, and compare with what HDF5 itself returns for that region. Covers shuffle on and
//! off, several deflate levels, the v1 B-tree, extensible-array and fixed-array chunk indexes,
//! and the partial edge chunks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use imerg_catalog::{ProductProfile, parse_time};
use imerg_refs::{Codec, GranuleRefs, SourceObject, decode_chunk};
use imerg_synth::{H5Format, SynthOptions, write_granule};
use imerg_virtualize::{virtualize_bytes, virtualize_path};

fn synth(dir: &Path, start: &str, opts: &SynthOptions) -> (PathBuf, imerg_catalog::GranuleId) {
    let p = ProductProfile::final_v07b();
    let id = p.granule_at(parse_time(start).unwrap()).unwrap();
    let path = dir.join(&id.key);
    write_granule(&path, &p, id.start, opts).unwrap();
    (path, id)
}

fn source(path: &Path) -> SourceObject {
    SourceObject {
        url: format!("file://{}", path.display()),
        etag: Some("\"test-etag\"".into()),
        last_modified: None,
        size: std::fs::metadata(path).unwrap().len(),
    }
}

/// Reads the region of one chunk through HDF5 as little-endian bytes.
fn hdf5_region(
    ds: &hdf5::Dataset,
    dtype: &str,
    lon0: usize,
    lon1: usize,
    lat0: usize,
    lat1: usize,
) -> Vec<u8> {
    let sel = (0, lon0..lon1, lat0..lat1);
    match dtype {
        "float32" => ds
            .read_slice_2d::<f32, _>(sel)
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "int16" => ds
            .read_slice_2d::<i16, _>(sel)
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => panic!("unexpected dtype {other}"),
    }
}

fn check_all_references(path: &Path, refs: &GranuleRefs) -> usize {
    let raw = std::fs::read(path).unwrap();
    let file = hdf5::File::open(path).unwrap();
    let mut checked = 0;
    let mut edge_checked = 0;
    for (name, var) in &refs.variables {
        let ds = file.dataset(&format!("Grid/{name}")).unwrap();
        let dtype = var.zarr["data_type"].as_str().unwrap();
        let size = if dtype == "int16" { 2 } else { 4 };
        let chunk: Vec<usize> = var.zarr["chunk_grid"]["configuration"]["chunk_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let shape: Vec<usize> = var.zarr["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let codecs: Vec<Codec> = var.zarr["codecs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Codec::from_zarr_json(c).expect("known codec"))
            .collect();
        let chunk_len = chunk.iter().product::<usize>() * size;
        // Every chunk position of the grid is referenced exactly once.
        let expected_chunks = shape[1].div_ceil(chunk[1]) * shape[2].div_ceil(chunk[2]);
        assert_eq!(var.refs.len(), expected_chunks, "{name}");
        for r in &var.refs {
            assert_eq!(r.chunk[0], refs.time_index);
            let stored = &raw[r.offset as usize..(r.offset + r.length) as usize];
            let decoded = decode_chunk(&codecs, stored, size, chunk_len).unwrap();
            let lon0 = r.chunk[1] as usize * chunk[1];
            let lon1 = (lon0 + chunk[1]).min(shape[1]);
            let lat0 = r.chunk[2] as usize * chunk[2];
            let lat1 = (lat0 + chunk[2]).min(shape[2]);
            let want = hdf5_region(&ds, dtype, lon0, lon1, lat0, lat1);
            // Compare the in-bounds part of the (full-size) decoded chunk, row by row.
            let row = (lat1 - lat0) * size;
            for (k, lon) in (lon0..lon1).enumerate() {
                let off = (lon - lon0) * chunk[2] * size;
                assert_eq!(
                    &decoded[off..off + row],
                    &want[k * row..(k + 1) * row],
                    "{name} chunk {:?} lon {lon}",
                    r.chunk
                );
            }
            if lon1 - lon0 < chunk[1] {
                edge_checked += 1;
            }
            checked += 1;
        }
    }
    assert!(edge_checked >= 3, "partial edge chunks were compared");
    checked
}

/// The HDF5 structure signature of the chunk index the case must exercise.
fn run_case(opts: SynthOptions, start: &str, index_signature: &[u8; 4]) {
    let dir = tempfile::tempdir().unwrap();
    let (path, id) = synth(dir.path(), start, &opts);
    let raw = std::fs::read(&path).unwrap();
    assert!(
        raw.windows(4).any(|w| w == index_signature),
        "file uses the {} chunk index",
        String::from_utf8_lossy(index_signature)
    );
    let p = ProductProfile::final_v07b();
    let refs = virtualize_path(&path, &id, &source(&path), &p).unwrap();
    assert_eq!(refs.ref_count(), 88);
    assert_eq!(check_all_references(&path, &refs), 88);
    // The zarr metadata states the file's own pipeline.
    let codecs = refs.variables["precipitation"].zarr["codecs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        codecs.iter().any(|c| c["name"] == "numcodecs.shuffle"),
        opts.shuffle,
        "{codecs:?}"
    );
    let zlib = codecs
        .iter()
        .find(|c| c["name"] == "numcodecs.zlib")
        .unwrap();
    assert_eq!(
        zlib["configuration"]["level"],
        u64::from(opts.deflate_level)
    );
    // From bytes in memory: the same references.
    let bytes = std::fs::read(&path).unwrap();
    let mem = virtualize_bytes(&bytes, &id, &source(&path), &p).unwrap();
    assert_eq!(mem, refs);
}

#[test]
fn btree_v1_no_shuffle_deflate6() {
    run_case(SynthOptions::default(), "1998-01-01T00:00:00Z", b"TREE");
}

#[test]
fn btree_v1_shuffle_deflate4() {
    run_case(
        SynthOptions {
            shuffle: true,
            deflate_level: 4,
            ..Default::default()
        },
        "2003-07-14T13:30:00Z",
        b"TREE",
    );
}

#[test]
fn extensible_array_index_shuffle_deflate1() {
    run_case(
        SynthOptions {
            shuffle: true,
            deflate_level: 1,
            format: H5Format::V110,
            unlimited_time: true,
            ..Default::default()
        },
        "2015-02-28T23:30:00Z",
        b"EAHD",
    );
}

#[test]
fn fixed_array_index_no_shuffle_deflate9() {
    run_case(
        SynthOptions {
            deflate_level: 9,
            format: H5Format::V110,
            unlimited_time: false,
            ..Default::default()
        },
        "2024-12-31T12:00:00Z",
        b"FAHD",
    );
}

#[test]
fn metadata_and_coordinates_are_what_readers_need() {
    let dir = tempfile::tempdir().unwrap();
    let (path, id) = synth(dir.path(), "2010-06-01T06:30:00Z", &SynthOptions::default());
    let p = ProductProfile::final_v07b();
    let refs = virtualize_path(&path, &id, &source(&path), &p).unwrap();
    let z = &refs.variables["precipitation"].zarr;
    assert_eq!(z["shape"], serde_json::json!([1, 3600, 1800]));
    assert_eq!(z["fill_value"], serde_json::json!(-9999.900390625));
    assert_eq!(z["attributes"]["_FillValue"], "AAAAQPOHw8A=");
    assert_eq!(z["attributes"]["CodeMissingValue"], "-9999.9");
    assert_eq!(z["attributes"]["DimensionNames"], "time,lon,lat");
    assert_eq!(
        z["dimension_names"],
        serde_json::json!(["time", "lon", "lat"])
    );
    let q = &refs.variables["probabilityLiquidPrecipitation"].zarr;
    assert_eq!(q["data_type"], "int16");
    assert_eq!(q["attributes"]["_FillValue"], -9999);
    assert_eq!(
        refs.coords.time.units,
        "seconds since 1980-01-06 00:00:00 UTC"
    );
    assert_eq!(refs.coords.time.calendar, "julian");
    assert_eq!(
        refs.coords.time.bounds[1] - refs.coords.time.bounds[0],
        1800
    );
    assert_eq!(refs.coords.lon.values.len(), 3600);
    assert!((refs.coords.lat.values[0] + 89.95).abs() < 1e-4);
    assert_eq!(refs.coords.lat_bnds.shape, vec![1800, 2]);
    assert_eq!(refs.coords.lon.attributes["units"], "degrees_east");
    assert_eq!(refs.etag.as_deref(), Some("\"test-etag\""));
    assert_eq!(refs.fingerprint, refs.layout.fingerprint());
    // Same layout, another time and deflate level: the same fingerprint.
    let (path2, id2) = synth(
        dir.path(),
        "2010-06-01T07:00:00Z",
        &SynthOptions {
            deflate_level: 3,
            ..Default::default()
        },
    );
    let refs2 = virtualize_path(&path2, &id2, &source(&path2), &p).unwrap();
    assert_eq!(refs2.fingerprint, refs.fingerprint);
    assert_ne!(
        refs2.variables["precipitation"].refs,
        refs.variables["precipitation"].refs
    );
}
