//! systemd's notify protocol, for `Type=notify` units: `READY=1` once the endpoints
//! are bound and the autostart watchers spawned, `STATUS=` kept current,
//! `WATCHDOG=1` when the unit has a watchdog, `STOPPING=1` on shutdown.
//!
//! The protocol is one datagram per message, `KEY=VALUE` lines, sent to the unix
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace). [`Notifier::take_from_env`] reads and removes the variables at start
//! (so that supervised processes do not inherit them), and every send is
//! best-effort: systemd being away never stops the agent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tracing::{debug, warn};

/// The notify socket and the watchdog interval systemd asked for.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
    /// The variables as systemd set them, for the next program image of an
    /// upgrade in place (same pid, so the same unit).
    env: Vec<(String, String)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`, removes them from
    /// the environment, and returns a notifier when a socket is named and usable.
    /// Call it before any other thread starts.
    pub fn take_from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let env: Vec<(String, String)> = [
            (
                "NOTIFY_SOCKET",
                path.as_ref().map(|p| p.to_string_lossy().into_owned()),
            ),
            ("WATCHDOG_USEC", usec.clone()),
            ("WATCHDOG_PID", pid.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_string(), value?)))
        .collect();
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(name);
        }
        let path = path?;
        let text = path.to_string_lossy().into_owned();
        let addr = match socket_addr(&text) {
            Ok(addr) => addr,
            Err(e) => {
                warn!("NOTIFY_SOCKET={text} is not usable, systemd will not hear from us: {e}");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(socket) => socket,
            Err(e) => {
                warn!("cannot open a socket to talk to systemd: {e}");
                return None;
            }
        };
        let for_us = pid.is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog = usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            // Ping at half the interval, as systemd recommends.
            .map(|u| Duration::from_micros(u / 2));
        Some(Notifier {
            socket,
            addr,
            watchdog,
            env,
        })
    }

    /// `NOTIFY_SOCKET` and the watchdog variables as they were given to this
    /// process, for the program image an upgrade in place executes.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// How often to send `WATCHDOG=1`, when the unit has a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message (`READY=1\nSTATUS=...`); failures are logged, not fatal.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            debug!("notify {message:?} not delivered: {e}");
        }
    }
}

fn socket_addr(text: &str) -> std::io::Result<SocketAddr> {
    if let Some(name) = text.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        return SocketAddr::from_abstract_name(name.as_bytes());
    }
    if !text.starts_with('/') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an absolute path or @name",
        ));
    }
    SocketAddr::from_pathname(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(socket_addr("/run/systemd/notify").is_ok());
        assert!(socket_addr("@ringmaster-test").is_ok());
        assert!(socket_addr("relative").is_err());
    }
}
