//! The `nodeagent` binary's command line. (Having an integration test here also makes
//! `cargo test --workspace` build the binary that the end-to-end tests run.)

use std::process::Command;

#[test]
fn help_and_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("--config") && text.contains("--check-config"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/agent.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .args(["--check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[watchers.worker]"));
}
