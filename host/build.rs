//! The inference protocol's gRPC service (`proto/open_inference_grpc.proto`, KServe's, vendored
//! with its licence) to Rust: protox parses it in pure Rust, so no `protoc` is needed on the
//! machine, and tonic-prost-build writes the messages and the server trait into OUT_DIR.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/open_inference_grpc.proto";
    println!("cargo:rerun-if-changed={proto}");
    let files = protox::compile([proto], ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(files)?;
    Ok(())
}
