//! What libzmq says about a socket's connections (`zmq_socket_monitor`), and the
//! bound on how many peers a bound socket serves.
//!
//! libzmq has no limit on connections, so every endpoint that Ringmaster binds is
//! watched: each accepted connection is entered in a [`Ledger`], and one over the
//! limit is shut down at once (libzmq then closes it and frees its buffers), so a
//! flood of idle or half-open connections costs a descriptor for a moment, never the
//! agent's attention. There are two limits: connections in all, and connections
//! from one address, so that one host flooding an endpoint cannot take the places
//! of the others. The ledger is pure and unit-tested; [`police`] carries out its
//! verdicts.
//!
//! A monitor must never be left without a reader: libzmq sends its events with a
//! blocking call, so [`Monitor`] switches the monitoring off before its reading end
//! goes away.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::socket::{context, unique_inproc, AsyncSocket};
use crate::message::ConnectionCounts;

/// One event of a monitored socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MonitorEvent {
    /// What happened (`zmq::SocketEvent` as its number).
    pub kind: u16,
    /// The connection's descriptor for accepts and disconnects; a number that
    /// depends on the event otherwise.
    pub value: u32,
}

impl MonitorEvent {
    fn is(&self, kind: zmq::SocketEvent) -> bool {
        self.kind == kind as u16
    }
}

/// The events that tell connections apart.
pub(crate) const CONNECTION_EVENTS: i32 = zmq::SocketEvent::ACCEPTED as i32
    | zmq::SocketEvent::ACCEPT_FAILED as i32
    | zmq::SocketEvent::DISCONNECTED as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32;

/// The events a connecting socket waits for.
pub(crate) const CONNECT_EVENTS: i32 = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
    | zmq::SocketEvent::CONNECT_RETRIED as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32;

/// The reading end of a socket's monitor.
pub(crate) struct Monitor {
    target: Arc<AsyncSocket>,
    events: AsyncSocket,
}

impl Monitor {
    /// Starts monitoring `target` for `events`; call before it binds or connects,
    /// so that no event is emitted before the reading end is there.
    pub(crate) fn start(target: &Arc<AsyncSocket>, events: i32) -> std::io::Result<Monitor> {
        let address = unique_inproc("monitor");
        target.lock().monitor(&address, events)?;
        let pair = context().socket(zmq::PAIR)?;
        pair.set_linger(0)?;
        pair.connect(&address)?;
        Ok(Monitor {
            target: Arc::clone(target),
            events: AsyncSocket::new(pair)?,
        })
    }

    /// The next event.
    pub(crate) async fn next(&self) -> Result<MonitorEvent, zmq::Error> {
        loop {
            let frames = self.events.recv().await?;
            if let Some(event) = frames.first().and_then(|f| parse(f)) {
                return Ok(event);
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // Monitoring anew with no events stops the old monitor without a last
        // event, so nothing is ever sent to a reader that is gone.
        let _ = self.target.lock().monitor(&unique_inproc("unmonitored"), 0);
    }
}

fn parse(frame: &[u8]) -> Option<MonitorEvent> {
    let kind = u16::from_ne_bytes(frame.get(0..2)?.try_into().ok()?);
    let value = u32::from_ne_bytes(frame.get(2..6)?.try_into().ok()?);
    Some(MonitorEvent { kind, value })
}

/// What to do about a connection event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing.
    Keep,
    /// Shut this connection down: it is over the limit.
    Refuse(RawFd),
}

/// The connections of one bound socket, by descriptor, against its limits.
#[derive(Debug)]
pub(crate) struct Ledger {
    limit: usize,
    per_peer: usize,
    open: HashMap<u32, Option<IpAddr>>,
    from: HashMap<IpAddr, usize>,
    counts: ConnectionCounts,
}

impl Ledger {
    /// A ledger that admits at most `limit` connections at once, and at most
    /// `per_peer` from one address.
    pub(crate) fn new(limit: usize, per_peer: usize) -> Ledger {
        Ledger {
            limit,
            per_peer,
            open: HashMap::new(),
            from: HashMap::new(),
            counts: ConnectionCounts::default(),
        }
    }

    /// Takes one event into account; `peer` is the address of an accepted TCP
    /// connection (none for `ipc://`).
    pub(crate) fn on(&mut self, event: MonitorEvent, peer: Option<IpAddr>) -> Verdict {
        let fd = event.value;
        if event.is(zmq::SocketEvent::ACCEPTED) {
            self.counts.accepted += 1;
            // A descriptor seen again was closed without its event reaching us.
            self.forget(fd);
            let from_peer = peer.map_or(0, |ip| self.from.get(&ip).copied().unwrap_or(0));
            if self.open.len() >= self.limit || from_peer >= self.per_peer {
                self.counts.refused += 1;
                return RawFd::try_from(fd).map_or(Verdict::Keep, Verdict::Refuse);
            }
            self.open.insert(fd, peer);
            if let Some(ip) = peer {
                *self.from.entry(ip).or_insert(0) += 1;
            }
        } else if event.is(zmq::SocketEvent::DISCONNECTED) {
            // A refused connection was never open: its end frees nothing.
            if self.forget(fd) {
                self.counts.closed += 1;
            }
        } else if event.is(zmq::SocketEvent::ACCEPT_FAILED) {
            self.counts.accept_failed += 1;
        } else if event.is(zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL)
            || event.is(zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL)
            || event.is(zmq::SocketEvent::HANDSHAKE_FAILED_AUTH)
        {
            self.counts.handshake_failed += 1;
        }
        self.counts.open = self.open.len() as u64;
        Verdict::Keep
    }

    /// Removes an open connection; false when it was not open.
    fn forget(&mut self, fd: u32) -> bool {
        let Some(peer) = self.open.remove(&fd) else {
            return false;
        };
        if let Some(ip) = peer {
            if let Some(n) = self.from.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.from.remove(&ip);
                }
            }
        }
        true
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> &ConnectionCounts {
        &self.counts
    }
}

/// The counts of a [`Ledger`] that other tasks read.
#[derive(Debug, Default)]
pub(crate) struct SharedCounts {
    accepted: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    closed: AtomicU64,
    handshake_failed: AtomicU64,
    accept_failed: AtomicU64,
}

impl SharedCounts {
    fn store(&self, counts: &ConnectionCounts) {
        self.accepted.store(counts.accepted, Ordering::Relaxed);
        self.open.store(counts.open, Ordering::Relaxed);
        self.refused.store(counts.refused, Ordering::Relaxed);
        self.closed.store(counts.closed, Ordering::Relaxed);
        self.handshake_failed
            .store(counts.handshake_failed, Ordering::Relaxed);
        self.accept_failed
            .store(counts.accept_failed, Ordering::Relaxed);
    }

    /// A copy of the counts.
    pub(crate) fn load(&self) -> ConnectionCounts {
        ConnectionCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            handshake_failed: self.handshake_failed.load(Ordering::Relaxed),
            accept_failed: self.accept_failed.load(Ordering::Relaxed),
        }
    }
}

/// Reads `monitor` for as long as its socket lives, keeping `counts` current and
/// shutting down every connection over the limits.
pub(crate) async fn police(
    monitor: Monitor,
    limit: usize,
    per_peer: usize,
    counts: Arc<SharedCounts>,
) {
    let mut ledger = Ledger::new(limit, per_peer);
    while let Ok(event) = monitor.next().await {
        let peer = if event.is(zmq::SocketEvent::ACCEPTED) {
            RawFd::try_from(event.value).ok().and_then(peer_address)
        } else {
            None
        };
        if let Verdict::Refuse(fd) = ledger.on(event, peer) {
            // The peer sees its connection closed; libzmq sees the end of the
            // stream and frees what it held for it.
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
        counts.store(ledger.counts());
    }
}

/// The address at the other end of TCP connection `fd` (none for a unix socket).
fn peer_address(fd: RawFd) -> Option<IpAddr> {
    let addr: nix::sys::socket::SockaddrStorage = nix::sys::socket::getpeername(fd).ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6().map(|v6| {
        let ip = v6.ip();
        // An IPv4 peer of a dual-stack socket is that IPv4 address.
        ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: zmq::SocketEvent, value: u32) -> MonitorEvent {
        MonitorEvent {
            kind: kind as u16,
            value,
        }
    }

    fn accept(fd: u32) -> MonitorEvent {
        event(zmq::SocketEvent::ACCEPTED, fd)
    }

    fn close(fd: u32) -> MonitorEvent {
        event(zmq::SocketEvent::DISCONNECTED, fd)
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn connections_over_the_limit_are_refused_and_a_closed_one_frees_its_place() {
        let mut ledger = Ledger::new(2, 10);
        assert_eq!(ledger.on(accept(10), None), Verdict::Keep);
        assert_eq!(ledger.on(accept(11), None), Verdict::Keep);
        assert_eq!(ledger.on(accept(12), None), Verdict::Refuse(12));
        // The refused one's own disconnect frees nothing.
        ledger.on(close(12), None);
        assert_eq!(ledger.on(accept(13), None), Verdict::Refuse(13));
        ledger.on(close(10), None);
        assert_eq!(ledger.on(accept(14), None), Verdict::Keep);
        let counts = ledger.counts();
        assert_eq!(
            (counts.accepted, counts.open, counts.refused, counts.closed),
            (5, 2, 2, 1)
        );
    }

    #[test]
    fn one_address_cannot_take_every_place() {
        let mut ledger = Ledger::new(10, 2);
        assert_eq!(ledger.on(accept(1), ip(1)), Verdict::Keep);
        assert_eq!(ledger.on(accept(2), ip(1)), Verdict::Keep);
        assert_eq!(ledger.on(accept(3), ip(1)), Verdict::Refuse(3));
        // Another address still gets in.
        assert_eq!(ledger.on(accept(4), ip(2)), Verdict::Keep);
        // When one of the first address's connections ends, it may open another.
        ledger.on(close(1), None);
        assert_eq!(ledger.on(accept(5), ip(1)), Verdict::Keep);
        assert_eq!(ledger.counts().open, 3);
    }

    #[test]
    fn a_descriptor_accepted_again_is_not_counted_twice() {
        let mut ledger = Ledger::new(1, 1);
        ledger.on(accept(7), ip(1));
        // Its disconnect was lost: the same number again is a new connection.
        assert_eq!(ledger.on(accept(7), ip(1)), Verdict::Keep);
        assert_eq!(ledger.counts().open, 1);
    }

    #[test]
    fn failed_handshakes_and_accepts_are_counted() {
        let mut ledger = Ledger::new(4, 4);
        ledger.on(event(zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL, 0), None);
        ledger.on(event(zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL, 0), None);
        ledger.on(event(zmq::SocketEvent::ACCEPT_FAILED, 24), None);
        let counts = ledger.counts();
        assert_eq!((counts.handshake_failed, counts.accept_failed), (2, 1));
    }

    #[test]
    fn events_are_read_as_libzmq_writes_them() {
        let mut frame = (zmq::SocketEvent::ACCEPTED as u16).to_ne_bytes().to_vec();
        frame.extend_from_slice(&42u32.to_ne_bytes());
        assert_eq!(parse(&frame), Some(accept(42)));
        assert_eq!(parse(&frame[..4]), None);
    }
}
