//! Generates the Rust types and the tonic client and server for Hubble's protobuf schema in
//! `proto/`. The files are parsed with protox (pure Rust), so no system `protoc` is needed; the
//! Google well-known types come from protox too.

use anyhow::Context;

const PROTOS: &[&str] = &[
    "flow/flow.proto",
    "relay/relay.proto",
    "observer/observer.proto",
];

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let mut compiler = protox::Compiler::new([&root]).context("protox include path")?;
    compiler.include_source_info(true).include_imports(true);
    compiler
        .open_files(PROTOS)
        .map_err(|e| anyhow::anyhow!("parsing {}: {e:?}", root.display()))?;
    let descriptors = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(descriptors)
        .context("generating Rust code for the Hubble protos")?;
    Ok(())
}
