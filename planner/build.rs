//! Generates the ONNX protobuf types from the vendored `proto/onnx.proto` with protox (a pure-Rust
//! protobuf compiler), so building needs no `protoc` download.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["onnx.proto"], ["proto"]).expect("proto/onnx.proto compiles");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("prost generates the ONNX types");
}
