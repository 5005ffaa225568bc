//! Generates the gRPC code from `proto/berth/v1/*.proto` with Debian's `protoc`
//! (`protobuf-compiler`; `PROTOC` overrides where it is found).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "version",
        "images",
        "content",
        "snapshots",
        "containers",
        "tasks",
        "events",
        "volumes",
        "networks",
        "builds",
        "distribution",
        "files",
    ]
    .map(|name| format!("proto/berth/v1/{name}.proto"));
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&files, &["proto".to_string()])?;
    Ok(())
}
