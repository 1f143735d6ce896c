//! `nodectl upgrade`: one agent upgraded in place, waited for and reported.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use ringmaster_meta::fanout::Timeouts;
use ringmaster_meta::upgrade::{upgrade_agent, Upgraded};
use ringmaster_meta::NodeError;
use ringmaster_protocol::seal::Keyring;
use serde_json::json;

use crate::output::print_json;
use crate::runtime;

/// How long to reach the agent before the upgrade.
const REACH: Duration = Duration::from_secs(5);

/// How long the check, the switch and the first answer of the new binary may
/// take together.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(60);

/// `--binary` as the agent needs it: absolute. A relative path is taken from
/// this directory (nodectl usually runs on the node it upgrades).
pub fn binary_arg(binary: Option<&Path>) -> Option<String> {
    binary.map(|path| {
        std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string()
    })
}

/// The timeouts of an upgrade: `--timeout` bounds the whole of it.
pub fn timeouts(timeout: Option<Duration>) -> Timeouts {
    let answer = timeout.unwrap_or(UPGRADE_TIMEOUT);
    Timeouts {
        reach: REACH.min(answer),
        answer,
    }
}

/// One line that says what happened.
pub fn summary(upgraded: &Upgraded) -> String {
    let report = &upgraded.report;
    format!(
        "upgraded {} in place in {:.0} ms: {} → {} ({}), pid {} kept, {} process(es) and {} \
         socket(s) handed over",
        upgraded.info.node,
        upgraded.took.as_secs_f64() * 1000.0,
        report.from_version,
        upgraded.info.version,
        report.binary,
        upgraded.info.pid,
        report.processes,
        report.sockets
    )
}

/// The JSON object `--json` prints for an upgraded node.
pub fn json_of(upgraded: &Upgraded) -> serde_json::Value {
    json!({
        "node": upgraded.info.node,
        "from_version": upgraded.report.from_version,
        "to_version": upgraded.info.version,
        "binary": upgraded.report.binary,
        "pid": upgraded.info.pid,
        "upgrades": upgraded.info.upgrades,
        "processes": upgraded.report.processes,
        "sockets": upgraded.report.sockets,
        "took_ms": upgraded.took.as_secs_f64() * 1000.0,
    })
}

/// Runs the upgrade of the agent at `endpoint` and prints the outcome. Exit
/// codes: 0 upgraded; 3 refused by the agent (nothing changed); 1 unreachable,
/// or the new binary did not answer.
pub fn run(
    endpoint: &str,
    keys: Option<Keyring>,
    binary: Option<String>,
    timeout: Option<Duration>,
    json: bool,
) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(upgrade_agent(endpoint, keys, binary, timeouts(timeout)));
    match result {
        Ok(upgraded) => {
            if json {
                print_json(&json_of(&upgraded));
            } else {
                println!("{}", summary(&upgraded));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let (kind, code) = match &error {
                NodeError::Remote(reply) => (reply.kind.to_string(), 3),
                NodeError::Unreachable(_) => ("unreachable".to_string(), 1),
                _ => ("not_upgraded".to_string(), 1),
            };
            if json {
                print_json(&json!({ "error": { "kind": kind, "message": error.to_string() } }));
            } else {
                eprintln!("nodectl: {error}");
            }
            ExitCode::from(code)
        }
    }
}
