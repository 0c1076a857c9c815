//! Helpers for the crate's unit tests that need a real repository: synthetic granules written to
//! a local source directory and virtualized, copies of them moved in time, and a local dataset.

use std::path::Path;

use imerg_catalog::{GranuleId, ProductProfile, parse_time};
use imerg_refs::{GranuleRefs, SourceObject};
use imerg_synth::{SynthOptions, write_granule};

use crate::{Dataset, DatasetConfig, RepoLocation, SourceContainer};

/// A synthetic Final granule starting at `start`, written under `src` and virtualized.
pub(crate) fn granule(src: &Path, start: &str) -> GranuleRefs {
    let p = ProductProfile::final_v07b();
    let id: GranuleId = p.granule_at(parse_time(start).unwrap()).unwrap();
    let path = src.join(&id.key);
    write_granule(&path, &p, id.start, &SynthOptions::default()).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let object = SourceObject {
        url: SourceContainer::local(src).unwrap().url_of(&id.key),
        etag: None,
        last_modified: Some(meta.modified().unwrap().into()),
        size: meta.len(),
    };
    imerg_virtualize::virtualize_path(&path, &id, &object, &p).unwrap()
}

/// A copy of `g` moved by `steps` half hours (references to objects that need not exist: the
/// writer never reads the source).
pub(crate) fn shifted(g: &GranuleRefs, steps: u64, src: &Path) -> GranuleRefs {
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

/// Opens (or creates) the Final dataset in the local repository `repo` with sources under `src`.
pub(crate) async fn open(repo: &Path, src: &Path) -> Dataset {
    let cfg = DatasetConfig::new(
        ProductProfile::final_v07b(),
        SourceContainer::local(src).unwrap(),
    );
    Dataset::open_or_create(&RepoLocation::Local(repo.to_path_buf()), cfg)
        .await
        .unwrap()
}
