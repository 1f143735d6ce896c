//! ZeroMQ endpoints as Ringmaster accepts them: `tcp://HOST:PORT` (IPv4, IPv6 in
//! brackets, or a name) and `ipc:///PATH`, whether one stays on this host, and the
//! default endpoints of an agent.
//!
//! Everything that binds (the agent, `nodemeta`) refuses a routable address without
//! keys unless told it is on a private network; everything that connects (pools
//! files) checks the shape. Both use [`Endpoint`].
//!
//! An agent whose config names no endpoint binds `ipc://` sockets in its runtime
//! directory ([`default_runtime_dir`]), which only its own user (or a configured
//! group) may open; `nodectl` and `nodetop` look there by default.

use std::fmt;
use std::path::PathBuf;

/// The environment variable that moves the default runtime directory.
pub const RUNTIME_DIR_ENV: &str = "RINGMASTER_RUNTIME_DIR";

/// The directory of an agent's default `ipc://` endpoints: `$RINGMASTER_RUNTIME_DIR`
/// when set; else `/run/ringmaster` for root; else `$XDG_RUNTIME_DIR/ringmaster`;
/// else `/tmp/ringmaster-UID`.
pub fn default_runtime_dir() -> PathBuf {
    let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = from_env(RUNTIME_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/ringmaster");
    }
    match from_env("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("ringmaster"),
        None => PathBuf::from(format!("/tmp/ringmaster-{uid}")),
    }
}

/// The control endpoint of an agent whose config names none:
/// `ipc://RUNTIME_DIR/control.sock`.
pub fn default_control() -> String {
    format!("ipc://{}/control.sock", default_runtime_dir().display())
}

/// The publish endpoint of an agent whose config names none:
/// `ipc://RUNTIME_DIR/pubsub.sock`.
pub fn default_pubsub() -> String {
    format!("ipc://{}/pubsub.sock", default_runtime_dir().display())
}

/// A parsed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `ipc:///PATH`: a unix socket, private to the host (and its file permissions).
    Ipc(String),
    /// `tcp://HOST:PORT`.
    Tcp {
        /// Host name or address, without IPv6 brackets.
        host: String,
        /// Port (0: any, for binds).
        port: u16,
    },
}

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint '{endpoint}' {reason}")]
pub struct EndpointError {
    /// The endpoint as given.
    pub endpoint: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Endpoint {
    /// Parses `tcp://HOST:PORT` or `ipc:///PATH`.
    pub fn parse(endpoint: &str) -> Result<Endpoint, EndpointError> {
        let fail = |reason: &str| EndpointError {
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = endpoint.strip_prefix("ipc://") {
            if path.is_empty() {
                return Err(fail("has no path: use ipc:///PATH"));
            }
            return Ok(Endpoint::Ipc(path.to_string()));
        }
        let Some(rest) = endpoint.strip_prefix("tcp://") else {
            return Err(fail("is not tcp://HOST:PORT or ipc:///PATH"));
        };
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(fail("has no port: use tcp://HOST:PORT"));
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| fail("has an invalid port: use tcp://HOST:PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(fail("has no host: use tcp://HOST:PORT"));
        }
        Ok(Endpoint::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// True for `tcp://` endpoints, which every local user can reach (and, unless
    /// loopback, other hosts).
    pub fn is_tcp(&self) -> bool {
        matches!(self, Endpoint::Tcp { .. })
    }

    /// True when only this host can reach it: ipc, or TCP on a loopback address
    /// (127.0.0.0/8, `::1`, `localhost`).
    pub fn is_host_private(&self) -> bool {
        match self {
            Endpoint::Ipc(_) => true,
            Endpoint::Tcp { host, .. } => {
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Ipc(path) => write!(f, "ipc://{path}"),
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// Checks an endpoint something is about to bind: it must parse, and unless
/// `routable` (keys are configured, or `insecure` was asked for) it must stay on
/// this host. `how_to_allow` ends the error message for a routable address (e.g.
/// "name a key file in `admin_key`").
pub fn check_bind(endpoint: &str, routable: bool, how_to_allow: &str) -> Result<Endpoint, String> {
    let parsed = Endpoint::parse(endpoint).map_err(|e| e.to_string())?;
    if !routable && !parsed.is_host_private() {
        return Err(format!(
            "'{endpoint}' is not a loopback address; without keys Ringmaster binds only \
             loopback or ipc:// endpoints. To bind it, {how_to_allow}"
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_tcp_ipc_and_ipv6() {
        assert_eq!(
            Endpoint::parse("tcp://10.0.0.5:5555").unwrap(),
            Endpoint::Tcp {
                host: "10.0.0.5".into(),
                port: 5555
            }
        );
        let v6 = Endpoint::parse("tcp://[::1]:7").unwrap();
        assert!(v6.is_host_private());
        assert_eq!(v6.to_string(), "tcp://[::1]:7");
        assert!(Endpoint::parse("ipc:///run/a.sock")
            .unwrap()
            .is_host_private());
        assert!(!Endpoint::parse("tcp://10.0.0.5:1")
            .unwrap()
            .is_host_private());
        assert!(Endpoint::parse("tcp://localhost:1")
            .unwrap()
            .is_host_private());
        for bad in [
            "10.0.0.5:5555",
            "tcp://host",
            "tcp://:5",
            "tcp://h:99999",
            "ipc://",
            "udp://h:1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binds_refuse_routable_addresses_without_keys_or_insecure() {
        let err = check_bind("tcp://0.0.0.0:5555", false, "pass --insecure").unwrap_err();
        assert!(
            err.contains("not a loopback") && err.ends_with("To bind it, pass --insecure"),
            "{err}"
        );
        assert!(check_bind("tcp://0.0.0.0:5555", true, "x").is_ok());
        assert!(check_bind("tcp://127.0.0.2:0", false, "x").is_ok());
    }
}
