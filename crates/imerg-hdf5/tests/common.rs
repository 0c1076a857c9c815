//! Shared helpers of the integration tests: the hdf5-metno oracle (what libhdf5 reports for a
//! dataset) and the comparison with what this crate read from ranged reads alone.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::sync::Arc;

use imerg_hdf5::{
    DatasetInfo, FetchStats, FilterKind, GranuleIndex, MemReader, ReadOptions, read_imerg,
};

/// One chunk as libhdf5 reports it: (offset, address, size, filter mask).
pub type OracleChunk = (Vec<u64>, u64, u64, u32);

/// What libhdf5 (through hdf5-metno) says about one dataset.
#[derive(Debug)]
pub struct Oracle {
    pub shape: Vec<u64>,
    pub dtype_size: usize,
    pub float: bool,
    pub chunk: Option<Vec<u64>>,
    pub filters: Vec<FilterKind>,
    pub chunks: Vec<OracleChunk>,
}

pub fn oracle(path: &Path, ds_path: &str) -> Oracle {
    try_oracle(path, ds_path).unwrap()
}

/// The oracle, or libhdf5's error (Debian's 1.10 cannot read some HDF5 2.0 messages).
pub fn try_oracle(path: &Path, ds_path: &str) -> Result<Oracle, String> {
    let f = hdf5::File::open(path).map_err(|e| e.to_string())?;
    let ds = f.dataset(ds_path).map_err(|e| e.to_string())?;
    let dt = ds.dtype().map_err(|e| e.to_string())?;
    let desc = dt.to_descriptor().map_err(|e| e.to_string())?;
    let float = matches!(desc, hdf5::types::TypeDescriptor::Float(_));
    let filters = ds
        .filters()
        .into_iter()
        .map(|f| match f {
            hdf5::filters::Filter::Deflate(l) => FilterKind::Deflate {
                level: u32::from(l),
            },
            hdf5::filters::Filter::Shuffle => FilterKind::Shuffle {
                element_size: dt.size() as u32,
            },
            hdf5::filters::Filter::Fletcher32 => FilterKind::Fletcher32,
            hdf5::filters::Filter::SZip(..) => FilterKind::Szip,
            hdf5::filters::Filter::NBit => FilterKind::NBit,
            hdf5::filters::Filter::ScaleOffset(_) => FilterKind::ScaleOffset,
            hdf5::filters::Filter::User(id, _) => FilterKind::Other(id as u16),
        })
        .collect();
    let n = ds.num_chunks().unwrap_or(0);
    let mut chunks: Vec<OracleChunk> = (0..n)
        .map(|i| {
            let ci = ds.chunk_info(i).unwrap();
            (ci.offset.clone(), ci.addr, ci.size, ci.filter_mask)
        })
        .collect();
    chunks.sort();
    Ok(Oracle {
        shape: ds.shape().iter().map(|d| *d as u64).collect(),
        dtype_size: dt.size(),
        float,
        chunk: ds.chunk().map(|c| c.iter().map(|x| *x as u64).collect()),
        filters,
        chunks,
    })
}

pub fn ours_chunks(d: &DatasetInfo) -> Vec<OracleChunk> {
    d.chunks
        .iter()
        .map(|c| (c.offset.clone(), c.address, c.size, c.filter_mask))
        .collect()
}

pub fn assert_matches(d: &DatasetInfo, o: &Oracle) {
    let p = &d.path;
    assert_eq!(d.shape, o.shape, "{p}: shape");
    assert_eq!(d.dtype.size() as usize, o.dtype_size, "{p}: dtype size");
    assert_eq!(
        matches!(d.dtype, imerg_hdf5::Datatype::Float { .. }),
        o.float,
        "{p}: float"
    );
    assert_eq!(
        d.chunk_shape().map(<[u64]>::to_vec),
        o.chunk,
        "{p}: chunk shape"
    );
    let ours: Vec<FilterKind> = d.filters.iter().map(|f| f.kind()).collect();
    assert_eq!(ours, o.filters, "{p}: filters");
    assert_eq!(ours_chunks(d), o.chunks, "{p}: chunk table");
}

/// Reads a granule with this crate from a buffer (counting reads).
pub fn read(bytes: Vec<u8>, opts: ReadOptions) -> GranuleIndex {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(read_imerg(Arc::new(MemReader::new(bytes)), opts))
        .unwrap()
}

/// Metadata ranges: GETs after the first, merged when adjacent.
pub fn report(label: &str, size: u64, idx: &GranuleIndex) -> String {
    let s: &FetchStats = &idx.stats;
    let kinds: Vec<&str> = idx
        .datasets
        .iter()
        .filter_map(|d| match &d.layout {
            imerg_hdf5::StorageLayout::Chunked { index, .. } => Some(index.kind()),
            _ => None,
        })
        .collect();
    let mut kinds_u = kinds.clone();
    kinds_u.sort();
    kinds_u.dedup();
    let later: Vec<String> = s
        .requests
        .iter()
        .skip(1)
        .map(|r| format!("{}+{}@{}", r.offset, r.len, r.depth))
        .collect();
    format!(
        "{label}: size {size} sb v{} index {:?}; GETs {} bytes {} ({:.2}% of file) round trips {}; later GETs [{}]",
        idx.superblock.version,
        kinds_u,
        s.gets,
        s.bytes,
        100.0 * s.bytes as f64 / size as f64,
        s.round_trips,
        later.join(", ")
    )
}
