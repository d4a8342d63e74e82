//! Compiles `protos/**/*.proto` with protox (pure Rust, so no `protoc` is needed on the machine)
//! and generates prost messages plus tonic clients and servers. The encoded descriptor set is
//! kept in OUT_DIR for gRPC reflection and protobuf-JSON conversion.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read proto dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}

fn main() {
    let root = PathBuf::from("protos");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    println!("cargo:rerun-if-changed=protos");

    let fds = protox::compile(&files, [&root]).expect("compile .proto files");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(
        out_dir.join("feast_descriptor_set.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .expect("write descriptor set");

    let mut config = prost_build::Config::new();
    // `prost::Name` on every message: the model finds a message's descriptor by its full name.
    config.enable_type_names();
    tonic_prost_build::configure()
        // Sorted maps make re-encoding deterministic (tags, field mappings, permissions).
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(fds, config)
        .expect("generate Rust code from descriptors");
}
