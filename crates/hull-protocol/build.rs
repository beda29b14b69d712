// Generates the protobuf messages and the ttrpc client (sync, for the host) and,
// with the `async-server` feature, the async server (for the guest agent).
use std::path::PathBuf;

fn generate(out: &PathBuf, async_server: bool) {
    std::fs::create_dir_all(out).expect("create codegen output dir");
    ttrpc_codegen::Codegen::new()
        .out_dir(out)
        .inputs(["proto/agent.proto", "proto/forward.proto"])
        .include("proto")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_server,
            ..Default::default()
        })
        .run()
        .expect("ttrpc code generation");
    // The generated files start with inner attributes, which `include!` cannot take;
    // the including modules in lib.rs carry the same allowances.
    for name in [
        "agent.rs",
        "agent_ttrpc.rs",
        "forward.rs",
        "forward_ttrpc.rs",
    ] {
        let path = out.join(name);
        let text = std::fs::read_to_string(&path).expect("read generated file");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .collect();
        std::fs::write(&path, kept.join("\n")).expect("write generated file");
    }
}

fn main() {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    println!("cargo:rerun-if-changed=proto/forward.proto");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    generate(&out.join("sync"), false);
    if std::env::var_os("CARGO_FEATURE_ASYNC_SERVER").is_some() {
        generate(&out.join("async"), true);
    }
}
