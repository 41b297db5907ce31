//! Compiles `ferryman/v1/*.proto` into Rust with tonic-prost-build, using the vendored protoc
//! unless `PROTOC` is set, and writes a file descriptor set for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let include = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        PathBuf::from("ferryman/v1/chat.proto"),
        PathBuf::from("ferryman/v1/inference.proto"),
        PathBuf::from("ferryman/v1/keys.proto"),
        PathBuf::from("ferryman/v1/spend.proto"),
        PathBuf::from("ferryman/v1/tenancy.proto"),
        PathBuf::from("ferryman/v1/audit.proto"),
        PathBuf::from("ferryman/v1/usage.proto"),
        PathBuf::from("ferryman/v1/config.proto"),
        PathBuf::from("ferryman/v1/mcp.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .file_descriptor_set_path(out_dir.join("ferryman_descriptor.bin"))
        .compile_with_config(config, &files, &[PathBuf::from("."), include])?;
    Ok(())
}
