//! The `nodemeta` binary's command line. (Having an integration test here also
//! makes `cargo test --workspace` build the binary that the end-to-end tests run.)

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn nodemeta(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodemeta"))
        .args(args)
        .env_remove("RINGMASTER_POOLS")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_describes_the_options() {
    let out = nodemeta(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--pool",
        "--pubsub",
        "--stale-after",
        "stat.pool",
        "Examples",
    ] {
        assert!(help.contains(needle), "no {needle} in:\n{help}");
    }
}

#[test]
fn missing_pools_file_and_unknown_pool_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let endpoint = format!("ipc://{}/meta.pub", dir.path().display());
    let out = nodemeta(&[
        "--pools",
        missing.to_str().unwrap(),
        "--pool",
        "prod",
        "--pubsub",
        &endpoint,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("nodemeta: ") && err.contains("nope.toml") && err.contains("cannot read"),
        "{err}"
    );

    let pools = dir.path().join("pools.toml");
    std::fs::write(
        &pools,
        "[pools.dev]\n[[pools.dev.nodes]]\nname = \"a\"\ncontrol = \"ipc:///tmp/a.ctl\"\npubsub = \"ipc:///tmp/a.pub\"\n",
    )
    .unwrap();
    let out = nodemeta(&[
        "--pools",
        pools.to_str().unwrap(),
        "--pool",
        "prod",
        "--pubsub",
        &endpoint,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("nodemeta: ") && err.contains("no pool 'prod'") && err.contains("dev"),
        "{err}"
    );
}

#[test]
fn routable_endpoint_needs_insecure_and_bad_options_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let pools = dir.path().join("pools.toml");
    std::fs::write(
        &pools,
        "[pools.dev]\n[[pools.dev.nodes]]\nname = \"a\"\ncontrol = \"ipc:///tmp/a.ctl\"\npubsub = \"ipc:///tmp/a.pub\"\n",
    )
    .unwrap();
    let pools = pools.to_str().unwrap();
    let out = nodemeta(&[
        "--pools",
        pools,
        "--pool",
        "dev",
        "--pubsub",
        "tcp://0.0.0.0:5570",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--insecure"), "{}", stderr(&out));

    let endpoint = format!("ipc://{}/meta.pub", dir.path().display());
    let out = nodemeta(&[
        "--pools",
        pools,
        "--pool",
        "dev",
        "--pubsub",
        &endpoint,
        "--interval",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--interval"), "{}", stderr(&out));
}
