//! Oracle tests on files written by another writer: h5py (bundled HDF5 2.0) with
//! `libver='earliest'`, `('v110','v110')` and `'latest'`. Every dataset's shape, chunk shape,
//! filters and chunk table read from ranged reads must equal h5py's own report
//! (`dataset.id.get_chunk_info`); where Debian's libhdf5 1.10 can open the file, hdf5-metno must
//! agree too. Skipped (with a message) when no Python with h5py is available: set
//! `IMERG_PYTHON`, or run `. scripts/setup.sh --python`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use imerg_hdf5::{AttrValue, FileReader, Hdf5File, ReadOptions, read_imerg};
use serde_json::Value;

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("IMERG_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("HOME").ok()?;
    let dir = Path::new(&home).join(".cache/imerg-ingest");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/python"))
        .find(|p| p.exists())
}

fn write(py: &Path, out: &Path, libver: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h5py_writer.py");
    let o = std::process::Command::new(py)
        .arg(script)
        .arg(out)
        .arg(libver)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "h5py writer failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn case(libver: &str) {
    // A real component that cannot start fails the test: never skipped silently.
    let py = python().expect(
        "no Python with h5py: run ./scripts/test.sh (it builds the venv and sets IMERG_PYTHON)",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("h5py-{libver}.h5"));
    let report = write(&py, &path, libver);
    let size = std::fs::metadata(&path).unwrap().len();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // Every dataset h5py reports, against h5py's own chunk table.
    let file = rt
        .block_on(Hdf5File::open(
            Arc::new(FileReader::open(&path).unwrap()),
            ReadOptions::default(),
        ))
        .unwrap();
    let mut kinds = Vec::new();
    for (ds_path, want) in report.as_object().unwrap() {
        if ds_path.starts_with('_') {
            continue;
        }
        let d = rt.block_on(file.dataset(ds_path)).unwrap();
        assert_eq!(d.shape, u64s(&want["shape"]), "{ds_path}: shape");
        let chunks = want["chunks"].as_array().map(|_| u64s(&want["chunks"]));
        assert_eq!(
            d.chunk_shape().map(<[u64]>::to_vec),
            chunks,
            "{ds_path}: chunk shape"
        );
        let filters: Vec<(u64, Vec<u64>)> = want["filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f[0].as_u64().unwrap(), u64s(&f[1])))
            .collect();
        let ours: Vec<(u64, Vec<u64>)> = d
            .filters
            .iter()
            .map(|f| {
                (
                    u64::from(f.id),
                    f.client_data.iter().map(|v| u64::from(*v)).collect(),
                )
            })
            .collect();
        assert_eq!(ours, filters, "{ds_path}: filters");
        let mut table: Vec<common::OracleChunk> = want["chunk_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    u64s(&c[0]),
                    c[1].as_u64().unwrap(),
                    c[2].as_u64().unwrap(),
                    c[3].as_u64().unwrap() as u32,
                )
            })
            .collect();
        table.sort();
        assert_eq!(common::ours_chunks(&d), table, "{ds_path}: chunk table");
        if let imerg_hdf5::StorageLayout::Chunked { index, .. } = &d.layout {
            kinds.push(format!("{ds_path}={}", index.kind()));
        }
        if ds_path == "/extra/many_attrs" {
            assert_eq!(d.attributes.len(), 20, "dense or compact, all attributes");
            assert_eq!(
                d.attribute("a07").map(|a| &a.value),
                Some(&AttrValue::Strings(vec!["value 7".into()]))
            );
        }
    }
    println!(
        "h5py {libver} (HDF5 {}): indexes {kinds:?}",
        report["_hdf5_version"]
    );

    // libhdf5 1.10 (hdf5-metno) as a second oracle, where it can open the file.
    let mut unreadable = Vec::new();
    for ds_path in report.as_object().unwrap().keys() {
        if ds_path.starts_with('_') {
            continue;
        }
        let d = rt.block_on(file.dataset(ds_path)).unwrap();
        match common::try_oracle(&path, ds_path) {
            Ok(o) => common::assert_matches(&d, &o),
            Err(e) => unreadable.push(format!("{ds_path}: {e}")),
        }
    }
    if !unreadable.is_empty() {
        assert_eq!(libver, "latest", "libhdf5 1.10 must read {libver} files");
        println!(
            "h5py {libver}: libhdf5 1.10 cannot open {} datasets (h5py oracle only), e.g. {}",
            unreadable.len(),
            unreadable[0]
        );
    }

    // The IMERG read path and its cost, on a fresh reader.
    let bytes = std::fs::read(&path).unwrap();
    let idx = common::read(bytes, ReadOptions::default());
    let n: usize = idx.datasets.iter().take(4).map(|d| d.chunks.len()).sum();
    assert_eq!(n, 88);
    println!("{}", common::report(&format!("h5py {libver}"), size, &idx));
    let _ = read_imerg; // the same entry point as common::read
}

#[test]
fn h5py_earliest() {
    case("earliest");
}

#[test]
fn h5py_v110() {
    case("v110");
}

#[test]
fn h5py_latest() {
    case("latest");
}
