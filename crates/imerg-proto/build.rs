//! Generates the gRPC code for proto/imerg/ingest/v1 (the operators' API) and
//! proto/imerg/ingest/internal/v1 (the roles' own services) with the system `protoc` (or
//! `$PROTOC`), plus a file descriptor set that the servers publish through gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not compiled in (env!): a build script compiled in one checkout and
    // reused from a shared target directory by another must not point back at the first.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<_> = [
        "internal/v1/granule",
        "internal/v1/worker",
        "internal/v1/commit",
        "v1/ingest",
    ]
    .iter()
    .map(|f| root.join(format!("imerg/ingest/{f}.proto")))
    .collect();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("imerg_ingest_v1_descriptor.bin"))
        .compile_protos(&files, std::slice::from_ref(&root))?;
    for f in &files {
        println!("cargo::rerun-if-changed={}", f.display());
    }
    println!("cargo::rerun-if-env-changed=PROTOC");
    Ok(())
}
