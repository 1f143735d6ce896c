//! End-to-end tests: every test starts the real `nodeagent` binary in a temp dir
//! with `ipc://` endpoints and drives it through the protocol client and `nodectl`.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod e2e {
    mod bad_input;
    mod circus_config;
    mod circusctl;
    mod circusd;
    mod commands;
    mod descendants;
    mod exec;
    mod hooks;
    mod hostile;
    mod lifecycle;
    mod lifecycle_options;
    mod logging;
    mod nodectl;
    mod nodetop;
    mod output;
    mod packaging;
    mod persistence;
    mod pool;
    mod procenv;
    mod relay;
    mod restart;
    mod security;
    mod sockets;
    mod state_dir;
    mod stats;
    mod systemd;
    mod upgrade;
}
