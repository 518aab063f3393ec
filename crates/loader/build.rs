//! Builds the kernel programs (`bpf/`, nightly, bpfel-unknown-none) with aya-build and leaves
//! the object in OUT_DIR for `include_bytes_aligned!`.

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("../..");
    let bpf_dir = root.join("bpf");
    let abi_dir = root.join("crates/abi");
    // aya-build watches the kernel crate; the ABI crate it depends on must trigger a rebuild too.
    println!("cargo:rerun-if-changed={}", abi_dir.display());
    let bpf_dir = bpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "plexus-ebpf",
            root_dir: bpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
