//! Hostile and malformed input: every case must give a typed error, never a panic, a hang or a
//! huge allocation. Files are synthetic granules patched in place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use imerg_catalog::ProductProfile;
use imerg_hdf5::{
    ChunkIndex, Hdf5Error, Hdf5File, MemReader, ReadOptions, StorageLayout, read_imerg,
};
use imerg_synth::{SynthOptions, write_granule};

fn granule(opts: &SynthOptions) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.HDF5");
    let start = imerg_catalog::parse_time("2001-05-06T10:30:00Z").unwrap();
    write_granule(&path, &ProductProfile::final_v07b(), start, opts).unwrap();
    std::fs::read(path).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn run(bytes: Vec<u8>) -> Result<imerg_hdf5::GranuleIndex, Hdf5Error> {
    rt().block_on(read_imerg(
        Arc::new(MemReader::new(bytes)),
        ReadOptions::default(),
    ))
}

fn precipitation(bytes: &[u8]) -> imerg_hdf5::DatasetInfo {
    rt().block_on(async {
        let f = Hdf5File::open(
            Arc::new(MemReader::new(bytes.to_vec())),
            ReadOptions::default(),
        )
        .await
        .unwrap();
        f.dataset("/Grid/precipitation").await.unwrap()
    })
}

#[test]
fn truncated_file_is_a_typed_error() {
    let mut b = granule(&SynthOptions::default());
    b.truncate(b.len() / 2);
    let e = run(b).unwrap_err();
    assert!(matches!(e, Hdf5Error::Truncated { .. }), "{e}");
    // Cut inside the first read: still typed.
    let mut b = granule(&SynthOptions::default());
    b.truncate(100);
    let e = run(b).unwrap_err();
    assert!(
        matches!(e, Hdf5Error::Truncated { .. } | Hdf5Error::Malformed { .. }),
        "{e}"
    );
    // Cut inside the superblock itself: truncated, as libhdf5 says.
    let mut b = granule(&SynthOptions::default());
    b.truncate(64);
    let e = run(b).unwrap_err();
    assert!(matches!(e, Hdf5Error::Truncated { .. }), "{e}");
}

#[test]
fn wrong_signature_is_not_hdf5() {
    let e = run(b"<html>Access denied</html>".repeat(100)).unwrap_err();
    assert!(matches!(e, Hdf5Error::NotHdf5 { .. }), "{e}");
    let e = run(Vec::new()).unwrap_err();
    assert!(matches!(e, Hdf5Error::NotHdf5 { .. }), "{e}");
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[test]
fn dataspace_of_2_pow_40_elements_is_refused() {
    let mut b = granule(&SynthOptions::default());
    let p = precipitation(&b);
    let dims: Vec<u8> = [1u64, 3600, 1800]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    let at = find(&b, &dims, p.header_address as usize).expect("dataspace dims in the header");
    b[at + 8..at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = run(b).unwrap_err();
    assert!(
        matches!(
            e,
            Hdf5Error::LimitExceeded {
                what: "dataspace elements",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn btree_node_pointing_to_itself_is_a_cycle() {
    let mut b = granule(&SynthOptions::default());
    let p = precipitation(&b);
    let StorageLayout::Chunked {
        index: ChunkIndex::BTreeV1 {
            address: Some(root),
        },
        ..
    } = p.layout
    else {
        panic!("earliest granules use v1 B-trees")
    };
    let root = root as usize;
    assert_eq!(&b[root..root + 4], b"TREE");
    b[root + 5] = 1; // level 1: children are nodes
    let child0 = root + 24 + 40; // header, then key 0 (4 + 4 + 8 x 4 bytes)
    b[child0..child0 + 8].copy_from_slice(&(root as u64).to_le_bytes());
    let e = run(b).unwrap_err();
    assert!(matches!(e, Hdf5Error::Cycle { .. }), "{e}");
}

#[test]
fn btree_claiming_huge_entry_counts_is_an_error() {
    let mut b = granule(&SynthOptions::default());
    let p = precipitation(&b);
    let StorageLayout::Chunked {
        index: ChunkIndex::BTreeV1 {
            address: Some(root),
        },
        ..
    } = p.layout
    else {
        panic!("v1 B-tree")
    };
    let root = root as usize;
    b[root + 6..root + 8].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(run(b).is_err());
}

#[test]
fn address_past_eof_is_rejected() {
    let mut b = granule(&SynthOptions::default());
    let p = precipitation(&b);
    let StorageLayout::Chunked {
        index: ChunkIndex::BTreeV1 {
            address: Some(root),
        },
        ..
    } = p.layout
    else {
        panic!("v1 B-tree")
    };
    // First chunk's address (leaf child 0) far past the end of the file.
    let child0 = root as usize + 24 + 40;
    b[child0..child0 + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    let e = run(b).unwrap_err();
    assert!(matches!(e, Hdf5Error::AddressOutOfRange { .. }), "{e}");
}

#[test]
fn corrupted_v2_object_header_fails_its_checksum() {
    let mut b = granule(&SynthOptions {
        format: imerg_synth::H5Format::V110,
        ..SynthOptions::default()
    });
    let p = precipitation(&b);
    let h = p.header_address as usize;
    assert_eq!(&b[h..h + 4], b"OHDR");
    b[h + 12] ^= 0x01;
    let e = run(b).unwrap_err();
    assert!(matches!(e, Hdf5Error::Checksum { .. }), "{e}");
}

/// Random byte corruption of every metadata range the reader fetched: never a panic.
#[test]
fn corrupted_metadata_never_panics() {
    for opts in [
        SynthOptions::default(),
        SynthOptions {
            format: imerg_synth::H5Format::V110,
            ..SynthOptions::default()
        },
    ] {
        let clean = granule(&opts);
        let idx = run(clean.clone()).unwrap();
        // Metadata bytes: the superblock, every dataset's object header and chunk index root.
        let mut ranges: Vec<(usize, usize)> = vec![(0, 200)];
        for d in &idx.datasets {
            ranges.push((d.header_address as usize, 600));
            if let StorageLayout::Chunked { index, .. } = &d.layout {
                let a = match index {
                    ChunkIndex::BTreeV1 { address }
                    | ChunkIndex::SingleChunk { address, .. }
                    | ChunkIndex::Implicit { address }
                    | ChunkIndex::FixedArray { address, .. }
                    | ChunkIndex::ExtensibleArray { address }
                    | ChunkIndex::BTreeV2 { address } => *address,
                };
                if let Some(a) = a {
                    ranges.push((a as usize, 400));
                }
            }
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut ok, mut err) = (0, 0);
        for _ in 0..1500 {
            let mut b = clean.clone();
            for _ in 0..1 + next() % 8 {
                let (s, n) = ranges[(next() % ranges.len() as u64) as usize];
                let at = s + (next() % n as u64) as usize;
                if let Some(x) = b.get_mut(at) {
                    *x ^= 1 << (next() % 8);
                }
            }
            match run(b) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        println!("{:?}: {ok} still readable, {err} typed errors", opts.format);
    }
}
