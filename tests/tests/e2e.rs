//! End-to-end tests: every test starts the real `nodeagent` binary in a temp dir
//! with `ipc://` endpoints and drives it through the protocol client and `nodectl`.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod e2e {
    mod bad_input;
    mod commands;
    mod exec;
    mod lifecycle;
    mod logging;
    mod nodectl;
    mod nodetop;
    mod packaging;
    mod persistence;
    mod pool;
    mod relay;
    mod security;
    mod stats;
    mod systemd;
}
