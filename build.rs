//! Compiles `proto/externalscaler.proto` with protox (pure Rust, no system `protoc`) and emits
//! the file descriptor set that the reflection service serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/externalscaler.proto";
    println!("cargo:rerun-if-changed={proto}");

    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("externalscaler_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors.clone())?;

    // The server the scaler runs: the same service, but its two request messages and the
    // GetMetrics answer are `proto::wire`'s, decoded and encoded by hand (no `HashMap` per
    // request, no `Vec` per answer). Every other message is the one generated above.
    let wire_dir = out_dir.join("wire");
    std::fs::create_dir_all(&wire_dir)?;
    let mut wire = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&wire_dir)
        .codec_path("crate::proto::wire::Codec")
        .extern_path(
            ".externalscaler.ScaledObjectRef",
            "crate::proto::wire::ScaledObjectRef",
        )
        .extern_path(
            ".externalscaler.GetMetricsRequest",
            "crate::proto::wire::GetMetricsRequest",
        )
        .extern_path(
            ".externalscaler.GetMetricsResponse",
            "crate::proto::wire::GetMetricsResponse",
        );
    for message in [
        "IsActiveResponse",
        "GetMetricSpecResponse",
        "MetricSpec",
        "MetricValue",
    ] {
        wire = wire.extern_path(
            format!(".externalscaler.{message}"),
            format!("crate::proto::{message}"),
        );
    }
    wire.compile_fds(descriptors)?;
    Ok(())
}
