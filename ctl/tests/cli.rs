//! The `nodectl` binary's command line. (Having an integration test here also makes
//! `cargo test --workspace` build the binary that the end-to-end tests run.)

use std::process::Command;

#[test]
fn help_lists_exit_codes_and_usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes"));
    let out = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
