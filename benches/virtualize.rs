//! Virtualizing one granule from bytes in memory (open the file image, enumerate 88 chunks, build
//! the Zarr metadata, read coordinates, fingerprint). Run: `cargo bench -p imerg-benches --bench virtualize`.

use criterion::{Criterion, criterion_group, criterion_main};
use imerg_benches::granule_fixture;
use imerg_synth::SynthOptions;
use imerg_virtualize::virtualize_bytes;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("virtualize_bytes");
    for (name, opts) in [
        ("deflate6", SynthOptions::default()),
        (
            "shuffle_deflate4_v110",
            SynthOptions {
                shuffle: true,
                deflate_level: 4,
                format: imerg_synth::H5Format::V110,
                ..Default::default()
            },
        ),
    ] {
        let Ok(fx) = granule_fixture("2020-06-01T12:00:00Z", &opts) else {
            panic!("could not write the benchmark granule");
        };
        eprintln!("{name}: granule of {} bytes", fx.bytes.len());
        group.bench_function(name, |b| {
            b.iter(|| {
                let refs = virtualize_bytes(&fx.bytes, &fx.id, &fx.source, &fx.profile);
                assert!(matches!(&refs, Ok(r) if r.ref_count() == 88));
                refs
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
