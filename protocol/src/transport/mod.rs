//! Async ZeroMQ helpers shared by the agent and every client, on libzmq.
//!
//! - [`Client`]: a DEALER with a per-request deadline. Each request has an id and
//!   stale replies are dropped; after a timeout or a transport error the socket is
//!   dropped and the next request connects afresh. A client that cannot reach its
//!   agent says so at once (connection refused, no such socket, permission denied)
//!   instead of waiting out its timeout.
//! - [`ControlServer`]: the agent's ROUTER; replies are sent from the task that
//!   handled a request while the next requests are read ([`Replier`]).
//! - [`Publisher`] and [`Subscriber`]: the two ends of the event stream.
//!
//! Every input is bounded before it is buffered ([`Limits`]): a socket that
//! receives from peers has a maximum message size (libzmq closes the connection of
//! a peer that announces a bigger one, before reading its body), every queue has a
//! high-water mark (a subscriber that does not read loses messages, it does not grow
//! the publisher), a bound endpoint serves at most `max_connections` peers
//! ([`monitor`]), and what was refused is counted ([`ConnectionCounts`]). Peers
//! that connect reconnect by themselves with a short backoff, and idle connections
//! carry ZMTP heartbeats, so a peer that vanished is noticed.
//!
//! Given keys ([`crate::seal`]), the client seals its requests and opens the
//! replies, the publisher seals every body and the subscriber opens every body and
//! refuses old or repeated ones; callers never see a sealed frame.
//!
//! The sockets work on any tokio runtime; [`socket`] is the one piece that bridges
//! libzmq and tokio.

mod listener;
mod monitor;
mod socket;

pub use self::listener::Listener;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use self::monitor::{Monitor, SharedCounts, CONNECTION_EVENTS, CONNECT_EVENTS};
use self::socket::{context, AsyncSocket};
use crate::codec::{Codec, DecodeError, MAX_FRAME_BYTES};
use crate::event::Event;
use crate::message::{Command, ConnectionCounts, ErrorReply, Reply, Request, Response};
use crate::seal::{self, Key, Keyring, Kind, Nonce, ReplayGuard};
use crate::PROTOCOL_VERSION;

/// The largest control frame a peer may send: a body of [`MAX_FRAME_BYTES`],
/// sealed. A bigger one closes the connection before it is read.
pub const MAX_CONTROL_MESSAGE: usize = MAX_FRAME_BYTES + seal::OVERHEAD;

/// How often a request that only reads is sent when its connection closes
/// before the reply (an agent upgrading in place answers the next one).
const MAX_ATTEMPTS: u32 = 3;

/// The largest message a client or subscriber accepts from an agent (a `list` or
/// `stats` reply of thousands of processes).
const MAX_REPLY_MESSAGE: i64 = 64 << 20;

/// The largest message a publish endpoint accepts from a subscriber (they send
/// only subscriptions, which are topic prefixes).
const MAX_SUBSCRIPTION_MESSAGE: i64 = 4 << 10;

/// Messages queued for one subscriber before the publisher drops what is new for
/// it (one statistics round of 4000 processes fits).
const PUBLISH_HWM: i32 = 4096;

/// Messages queued in each direction of a control or client connection.
const CONTROL_HWM: i32 = 1000;

/// Messages a subscriber queues before it stops reading from the network.
const SUBSCRIBE_HWM: i32 = 10_000;

/// A peer that has not finished ZeroMQ's handshake by then is dropped.
const HANDSHAKE_TIMEOUT_MS: i32 = 10_000;

/// ZMTP heartbeats on idle connections: a ping this often; a peer that answers
/// nothing for the timeout is disconnected (and a connecting side reconnects).
const HEARTBEAT_IVL_MS: i32 = 5_000;
const HEARTBEAT_TIMEOUT_MS: i32 = 15_000;

/// Reconnection backoff of connecting sockets: from 100 ms, doubling, to 2 s.
const RECONNECT_IVL_MS: i32 = 100;
const RECONNECT_IVL_MAX_MS: i32 = 2_000;

/// The bounds of an endpoint that something binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Peers served at once; a connection over this is closed at once.
    pub max_connections: usize,
    /// Connections from one address (TCP) served at once.
    pub max_connections_per_peer: usize,
    /// Mode of an `ipc://` socket file (e.g. `0o600`), set right after binding.
    pub ipc_mode: Option<u32>,
    /// Group that an `ipc://` socket file is given to, right after binding.
    pub ipc_group: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            ipc_mode: None,
            ipc_group: None,
        }
    }
}

/// Peers an endpoint serves at once unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Connections from one address an endpoint serves at once unless configured
/// otherwise.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 64;

/// Errors of the transport helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The agent could not be reached.
    #[error(
        "cannot reach agent at {endpoint}: {reason} (is nodeagent running there, and is this its address?)"
    )]
    Connect {
        /// Where.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// No reply came in time.
    #[error("no reply from agent at {endpoint} within {:.1}s (is nodeagent running there? raise --timeout for slow commands)", after.as_secs_f64())]
    Timeout {
        /// Where.
        endpoint: String,
        /// How long we waited.
        after: Duration,
    },
    /// The connection closed while a reply was awaited (the agent quit,
    /// restarted or re-executed itself). A request that only reads is sent again
    /// on a new connection; one that changes state is not, and this says so.
    #[error("the connection to the agent at {endpoint} closed before it replied (it quit, restarted or is being upgraded in place): the command may or may not have been carried out; check with `status`")]
    Lost {
        /// Where.
        endpoint: String,
    },
    /// Sending or receiving failed after the connection was made.
    #[error("transport error with {endpoint}: {reason}")]
    Io {
        /// Where.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// An endpoint could not be bound.
    #[error("cannot bind {endpoint}: {reason}")]
    Bind {
        /// Where.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A frame could not be encoded or decoded.
    #[error("{0}")]
    Codec(String),
    /// A published body was refused by this subscriber's keys.
    #[error("refused a message on {topic}: {reason}")]
    Refused {
        /// Its topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// Errors of [`Client::call`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request did not get through, or no reply came back.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The agent answered with an error.
    #[error("{0}")]
    Remote(ErrorReply),
}

impl From<DecodeError> for TransportError {
    fn from(e: DecodeError) -> Self {
        TransportError::Codec(e.to_string())
    }
}

/// A request/reply client of one agent's control endpoint.
pub struct Client {
    endpoint: String,
    timeout: Duration,
    codec: Codec,
    keys: Option<Keyring>,
    socket: Option<Arc<AsyncSocket>>,
    /// Tells when the connection of `socket` closes.
    closed: Option<Monitor>,
    next_id: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("keys", &self.keys.as_ref().map(Keyring::ids))
            .field("connected", &self.socket.is_some())
            .finish()
    }
}

impl Client {
    /// A client of `endpoint`; each request, connection included, must complete
    /// within `timeout`. Nothing is connected until the first request.
    pub fn new(endpoint: impl Into<String>, timeout: Duration) -> Self {
        Client {
            endpoint: endpoint.into(),
            timeout,
            codec: Codec::default(),
            keys: None,
            socket: None,
            closed: None,
            // Start ids at a random-ish value so that replies meant for an earlier
            // client of the same process are never mistaken for ours.
            next_id: u64::from(std::process::id()) << 32,
        }
    }

    /// Seals every request with the first of `keys` and opens replies with them
    /// (`None`: talk in clear, to an agent without keys).
    pub fn with_keys(mut self, keys: Option<Keyring>) -> Self {
        self.keys = keys;
        self
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the per-request timeout (e.g. a short one to check that an agent is
    /// there, then a long one for a command that stops processes).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends `command` and waits for its result.
    pub async fn call(&mut self, command: Command) -> Result<Response, ClientError> {
        self.call_with(command, false).await
    }

    /// Sends `command`; with `no_wait` the agent replies as soon as it has accepted
    /// the command instead of when its action is done.
    pub async fn call_with(
        &mut self,
        command: Command,
        no_wait: bool,
    ) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let read_only = !command.changes_state();
        let mut request = Request {
            v: PROTOCOL_VERSION,
            id: 0,
            no_wait,
            command,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.next_id = self.next_id.wrapping_add(1);
            request.id = self.next_id;
            let (frame, nonce) = self.seal(&request)?;
            match self.exchange_by(frame, request.id, nonce, deadline).await {
                Ok(reply) => return reply.result.map_err(ClientError::Remote),
                // A request that only reads is asked again (sealed anew, so
                // that no replay guard refuses it) on a new connection.
                Err(TransportError::Lost { .. }) if read_only && attempt < MAX_ATTEMPTS => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The frame of `request` (sealed with a fresh nonce when there are keys).
    fn seal(&self, request: &Request) -> Result<(Vec<u8>, Option<Nonce>), TransportError> {
        let body = self
            .codec
            .encode(request)
            .map_err(|e| TransportError::Codec(e.to_string()))?;
        Ok(match &self.keys {
            Some(keys) => {
                let sealed = seal::seal(keys.primary(), Kind::Request, &[], &body)
                    .map_err(TransportError::Codec)?;
                (sealed.bytes, Some(sealed.nonce))
            }
            None => (body, None),
        })
    }

    /// Sends an arbitrary frame as is and returns the first frame that comes
    /// back, unread. For tests of sealed frames.
    pub async fn exchange_frame(&mut self, frame: Vec<u8>) -> Result<Bytes, TransportError> {
        let deadline = Instant::now() + self.timeout;
        let result = self.send_frame(frame, deadline).await;
        let result = match result {
            Ok(()) => self.recv_frame(deadline).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.socket = None;
        }
        result
    }

    /// Sends an arbitrary body and waits for the reply with id `expect_id` (0 for
    /// frames the agent cannot read). For tests of bad input.
    pub async fn call_raw(
        &mut self,
        body: Vec<u8>,
        expect_id: u64,
    ) -> Result<Reply, TransportError> {
        self.exchange(body, expect_id, None).await
    }

    async fn exchange(
        &mut self,
        body: Vec<u8>,
        id: u64,
        nonce: Option<Nonce>,
    ) -> Result<Reply, TransportError> {
        let deadline = Instant::now() + self.timeout;
        self.exchange_by(body, id, nonce, deadline).await
    }

    async fn exchange_by(
        &mut self,
        body: Vec<u8>,
        id: u64,
        nonce: Option<Nonce>,
        deadline: Instant,
    ) -> Result<Reply, TransportError> {
        let result = self.exchange_until(body, id, nonce, deadline).await;
        if result.is_err() {
            // A late reply would confuse the next request: start from a fresh
            // socket next time.
            self.socket = None;
            self.closed = None;
        }
        result
    }

    async fn exchange_until(
        &mut self,
        body: Vec<u8>,
        id: u64,
        nonce: Option<Nonce>,
        deadline: Instant,
    ) -> Result<Reply, TransportError> {
        self.send_frame(body, deadline).await?;
        loop {
            let frame = self.recv_frame(deadline).await?;
            if let Some(reply) = self.read_reply(&frame, id, nonce)? {
                return Ok(reply);
            }
        }
    }

    /// Reads one reply frame: `None` for a frame that is not the answer to request
    /// `id` (a stale reply to an earlier, timed-out request, or one that does not
    /// open), which is dropped.
    fn read_reply(
        &self,
        frame: &[u8],
        id: u64,
        nonce: Option<Nonce>,
    ) -> Result<Option<Reply>, TransportError> {
        let sealed = seal::is_sealed(frame);
        let reply: Reply = match (&self.keys, nonce) {
            (Some(keys), Some(nonce)) if sealed => {
                match seal::open(keys, Kind::Reply, &nonce, frame) {
                    Ok(opened) => self.codec.decode(&opened.body)?,
                    Err(_) => return Ok(None),
                }
            }
            (None, _) | (_, None) if sealed => {
                return Err(TransportError::Codec(format!(
                    "the agent at {} sealed its reply: it has keys; pass --key FILE",
                    self.endpoint
                )))
            }
            _ => self.codec.decode(frame)?,
        };
        if !sealed && self.keys.is_some() && nonce.is_some() {
            // Only an agent's refusal to open our request comes in clear, and
            // it cannot know the request id: accept errors, nothing else.
            let refusal = reply.result.is_err() && (reply.id == id || reply.id == 0);
            return Ok(refusal.then_some(reply));
        }
        Ok((reply.id == id).then_some(reply))
    }

    async fn send_frame(&mut self, body: Vec<u8>, deadline: Instant) -> Result<(), TransportError> {
        if body.len() > MAX_CONTROL_MESSAGE {
            // The agent would close the connection unread: say why here instead.
            return Err(TransportError::Codec(format!(
                "request of {} bytes is larger than the {MAX_FRAME_BYTES}-byte limit",
                body.len()
            )));
        }
        if self.socket.is_none() {
            let (socket, closed) = self.connect(deadline).await?;
            self.socket = Some(socket);
            self.closed = Some(closed);
        }
        let Some(socket) = self.socket.as_ref() else {
            return Err(self.io_error("no socket".into()));
        };
        match tokio::time::timeout_at(deadline.into(), socket.send(vec![Vec::new(), body])).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io_error(e.to_string())),
            Err(_) => Err(TransportError::Timeout {
                endpoint: self.endpoint.clone(),
                after: self.timeout,
            }),
        }
    }

    /// A DEALER connected to the agent, its ZeroMQ handshake done, and the
    /// monitor that tells when its connection closes.
    async fn connect(
        &self,
        deadline: Instant,
    ) -> Result<(Arc<AsyncSocket>, Monitor), TransportError> {
        let connect_error = |reason: String| TransportError::Connect {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let raw = dealer().map_err(|e| connect_error(e.to_string()))?;
        let socket = Arc::new(AsyncSocket::new(raw).map_err(|e| connect_error(e.to_string()))?);
        let timeout = self.timeout;
        let monitor = handshake(&socket, &self.endpoint, deadline, true)
            .await
            .map_err(|failure| connect_error(failure.reason(&self.endpoint, timeout)))?;
        Ok((socket, monitor))
    }

    async fn recv_frame(&mut self, deadline: Instant) -> Result<Bytes, TransportError> {
        let Some(socket) = self.socket.as_ref() else {
            return Err(self.io_error("no socket".into()));
        };
        loop {
            let closed = async {
                match self.closed.as_ref() {
                    Some(monitor) => loop {
                        match monitor.next().await {
                            Ok(event) if event.kind == zmq::SocketEvent::DISCONNECTED as u16 => {
                                return
                            }
                            Ok(_) => {}
                            Err(_) => std::future::pending::<()>().await,
                        }
                    },
                    None => std::future::pending::<()>().await,
                }
            };
            let received = tokio::select! {
                biased;
                received = tokio::time::timeout_at(deadline.into(), socket.recv()) => received,
                () = closed => {
                    // What arrived before the close is still read first.
                    match socket.try_recv() {
                        Ok(Some(frames)) => Ok(Ok(frames)),
                        _ => return Err(TransportError::Lost { endpoint: self.endpoint.clone() }),
                    }
                }
            };
            let frames = match received {
                Ok(Ok(frames)) => frames,
                Ok(Err(e)) => return Err(self.io_error(e.to_string())),
                Err(_) => {
                    return Err(TransportError::Timeout {
                        endpoint: self.endpoint.clone(),
                        after: self.timeout,
                    })
                }
            };
            if let Some(last) = frames.into_iter().next_back() {
                return Ok(Bytes::from(last));
            }
        }
    }

    fn io_error(&self, reason: String) -> TransportError {
        TransportError::Io {
            endpoint: self.endpoint.clone(),
            reason,
        }
    }
}

/// A client's DEALER: it queues nothing for a peer that is not connected (so a
/// request waits for the connection, not behind it), drops what is unsent when it
/// is closed, and pings an idle agent.
fn dealer() -> Result<zmq::Socket, zmq::Error> {
    let socket = context().socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    // Not ZMQ_IMMEDIATE: with it, libzmq drops the messages that arrived but were
    // not read yet when the connection closes, and the reply an agent sends just
    // before it re-executes itself would be lost. Requests wait for the handshake
    // anyway ([`handshake`]).
    socket.set_immediate(false)?;
    socket.set_maxmsgsize(MAX_REPLY_MESSAGE)?;
    socket.set_sndhwm(CONTROL_HWM)?;
    socket.set_rcvhwm(CONTROL_HWM)?;
    set_reconnects(&socket)?;
    set_heartbeats(&socket)?;
    Ok(socket)
}

fn set_reconnects(socket: &zmq::Socket) -> Result<(), zmq::Error> {
    socket.set_reconnect_ivl(RECONNECT_IVL_MS)?;
    socket.set_reconnect_ivl_max(RECONNECT_IVL_MAX_MS)
}

fn set_heartbeats(socket: &zmq::Socket) -> Result<(), zmq::Error> {
    socket.set_heartbeat_ivl(HEARTBEAT_IVL_MS)?;
    socket.set_heartbeat_timeout(HEARTBEAT_TIMEOUT_MS)?;
    socket.set_heartbeat_ttl(HEARTBEAT_TIMEOUT_MS)
}

/// For a process about to `exec` (an agent upgrading in place): sends what
/// libzmq still has queued (a last reply) and ends the process's libzmq context.
/// Close every socket first; no socket may be used afterwards. False when the
/// queues were not sent within `limit` (the rest is lost with the `exec`).
pub fn finish_for_exec(limit: Duration) -> bool {
    let (done, finished) = std::sync::mpsc::channel();
    let mut context = context().clone();
    let spawned = std::thread::Builder::new()
        .name("zmq-finish".into())
        .spawn(move || {
            let mut result = context.destroy();
            while result == Err(zmq::Error::EINTR) {
                result = context.destroy();
            }
            let _ = done.send(result.is_ok());
        });
    spawned.is_ok() && matches!(finished.recv_timeout(limit), Ok(true))
}

/// Why a connection could not be made.
#[derive(Debug)]
enum ConnectFailure {
    /// The endpoint is not one libzmq can connect to.
    Endpoint(zmq::Error),
    /// The connection was refused (or the socket file is missing).
    Refused,
    /// Something answered that does not speak ZeroMQ.
    Handshake,
    /// Nothing completed a handshake in time.
    Timeout,
    /// The socket's monitor failed.
    Monitor(String),
}

impl ConnectFailure {
    fn reason(&self, endpoint: &str, timeout: Duration) -> String {
        match self {
            ConnectFailure::Endpoint(e) => format!("not an endpoint ZeroMQ can connect to: {e}"),
            ConnectFailure::Refused => refusal_reason(endpoint),
            ConnectFailure::Handshake => {
                "what answered there does not speak ZeroMQ's protocol".to_string()
            }
            ConnectFailure::Timeout => {
                format!("nothing answered within {:.1}s", timeout.as_secs_f64())
            }
            ConnectFailure::Monitor(e) => e.clone(),
        }
    }
}

/// What the system says about an endpoint whose connection was refused: for
/// `ipc://`, a missing file or a permission it lacks.
fn refusal_reason(endpoint: &str) -> String {
    match endpoint.strip_prefix("ipc://") {
        Some(path) => match std::os::unix::net::UnixStream::connect(path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => format!(
                "permission denied on {path} (the agent's control socket is open to its \
                 own user and group only: run as that user, or join the group named by \
                 [agent] control_group)"
            ),
            Err(e) => e.to_string(),
            Ok(_) => "connection refused".to_string(),
        },
        None => "connection refused".to_string(),
    }
}

/// Connects `socket` to `endpoint` and waits until its ZeroMQ handshake is done,
/// until `deadline`; returns the monitor, which then tells when the connection
/// closes. With `fail_fast`, a refused attempt ends the wait (a client
/// wants to know at once); without, libzmq retries until the deadline (a
/// subscriber may connect before its publisher binds).
async fn handshake(
    socket: &Arc<AsyncSocket>,
    endpoint: &str,
    deadline: Instant,
    fail_fast: bool,
) -> Result<Monitor, ConnectFailure> {
    let monitor = Monitor::start(
        socket,
        CONNECT_EVENTS | zmq::SocketEvent::DISCONNECTED as i32,
    )
    .map_err(|e| ConnectFailure::Monitor(e.to_string()))?;
    socket
        .lock()
        .connect(endpoint)
        .map_err(ConnectFailure::Endpoint)?;
    // A connection closed in the middle of the handshake (an agent that is
    // re-executing itself closes what it accepted) is tried once more: libzmq
    // reconnects by itself, and the connection waits in the new image's queue.
    let mut cut_short = 0;
    let mut retry_after_cut = false;
    loop {
        let event = match tokio::time::timeout_at(deadline.into(), monitor.next()).await {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => return Err(ConnectFailure::Monitor(e.to_string())),
            Err(_) => return Err(ConnectFailure::Timeout),
        };
        match event.kind {
            k if k == zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16 => return Ok(monitor),
            k if k == zmq::SocketEvent::CONNECT_RETRIED as u16 => {
                // After a cut, libzmq announces its reconnection as a retry.
                if retry_after_cut {
                    retry_after_cut = false;
                } else if fail_fast {
                    return Err(ConnectFailure::Refused);
                }
            }
            k if k == zmq::SocketEvent::DISCONNECTED as u16
                || k == zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as u16 =>
            {
                cut_short += 1;
                retry_after_cut = true;
                if fail_fast && cut_short > 2 {
                    return Err(ConnectFailure::Handshake);
                }
            }
            _ => {
                if fail_fast {
                    return Err(ConnectFailure::Handshake);
                }
            }
        }
    }
}

/// Makes an `ipc://` endpoint bindable: a socket file left by a killed agent is
/// removed, but a socket some live process still listens on is left alone and
/// reported. Other endpoints are returned unchanged.
pub fn prepare_bind(endpoint: &str) -> Result<(), TransportError> {
    let Some(path) = endpoint.strip_prefix("ipc://") else {
        return Ok(());
    };
    let path = Path::new(path);
    let bind_error = |reason: String| TransportError::Bind {
        endpoint: endpoint.to_string(),
        reason,
    };
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_socket() {
        return Err(bind_error(format!(
            "{} exists and is not a socket; remove it or choose another path",
            path.display()
        )));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(bind_error(format!(
            "another process is listening on {}; stop it or choose another endpoint",
            path.display()
        ))),
        Err(_) => std::fs::remove_file(path).map_err(|e| {
            bind_error(format!(
                "cannot remove stale socket {}: {e}",
                path.display()
            ))
        }),
    }
}

/// A bound socket with its connections watched and bounded.
struct Bound {
    socket: Arc<AsyncSocket>,
    endpoint: String,
    counts: Arc<SharedCounts>,
    police: tokio::task::JoinHandle<()>,
}

impl Bound {
    /// Binds `raw` at `endpoint` (removing a stale ipc socket file first) under
    /// `limits`.
    fn bind(raw: zmq::Socket, endpoint: &str, limits: Limits) -> Result<Bound, TransportError> {
        prepare_bind(endpoint)?;
        Self::bind_as(raw, endpoint, limits, true)
    }

    /// Binds `raw` to `listener`, which stays open when the socket is closed or
    /// unbound.
    fn bind_listener(
        mut raw: zmq::Socket,
        listener: &Listener,
        limits: Limits,
    ) -> Result<Bound, TransportError> {
        let bind_error = |reason: String| TransportError::Bind {
            endpoint: listener.endpoint().to_string(),
            reason,
        };
        let fd = listener
            .duplicate()
            .map_err(|e| bind_error(format!("cannot duplicate the listening socket: {e}")))?;
        listener::use_fd(&mut raw, fd)
            .map_err(|e| bind_error(format!("libzmq refused the listening socket: {e}")))?;
        Self::bind_as(raw, listener.endpoint(), limits, false)
    }

    /// The bind itself; `own_file`: libzmq makes the ipc socket file, which then
    /// gets `limits`' group and mode.
    fn bind_as(
        raw: zmq::Socket,
        endpoint: &str,
        limits: Limits,
        own_file: bool,
    ) -> Result<Bound, TransportError> {
        let bind_error = |reason: String| TransportError::Bind {
            endpoint: endpoint.to_string(),
            reason,
        };
        raw.set_handshake_ivl(HANDSHAKE_TIMEOUT_MS)
            .and_then(|()| set_heartbeats(&raw))
            .and_then(|()| raw.set_tcp_keepalive(1))
            .map_err(|e| bind_error(e.to_string()))?;
        let socket = Arc::new(AsyncSocket::new(raw).map_err(|e| bind_error(e.to_string()))?);
        let monitor =
            Monitor::start(&socket, CONNECTION_EVENTS).map_err(|e| bind_error(e.to_string()))?;
        let bound = {
            let raw = socket.lock();
            raw.bind(endpoint).map_err(|e| bind_error(e.to_string()))?;
            match raw.get_last_endpoint() {
                Ok(Ok(bound)) => bound,
                _ => endpoint.to_string(),
            }
        };
        if let Some(path) = bound.strip_prefix("ipc://").filter(|_| own_file) {
            listener::set_access(path, &limits).map_err(bind_error)?;
        }
        let counts = Arc::new(SharedCounts::default());
        let police = tokio::spawn(monitor::police(
            monitor,
            limits.max_connections.max(1),
            limits.max_connections_per_peer.max(1),
            Arc::clone(&counts),
        ));
        Ok(Bound {
            socket,
            endpoint: bound,
            counts,
            police,
        })
    }
}

impl Bound {
    /// Stops accepting connections at the endpoint; the connections made stay.
    fn unbind(&self) -> Result<(), TransportError> {
        self.socket
            .lock()
            .unbind(&self.endpoint)
            .map_err(|e| TransportError::Bind {
                endpoint: self.endpoint.clone(),
                reason: format!("cannot unbind: {e}"),
            })
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.police.abort();
    }
}

/// A request read by the [`ControlServer`], with the envelope to reply to.
#[derive(Debug)]
pub struct Incoming {
    envelope: Vec<Vec<u8>>,
    /// The request body.
    pub body: Bytes,
}

impl Incoming {
    /// Where to send the reply.
    pub fn envelope(&self) -> Envelope {
        Envelope(self.envelope.clone())
    }
}

/// The routing frames of a request (peer identity and delimiter), used to reply.
#[derive(Debug, Clone)]
pub struct Envelope(Vec<Vec<u8>>);

/// The agent's control endpoint (ROUTER). Keep it open until its last replies
/// are delivered: replies still queued when the socket closes may be discarded.
pub struct ControlServer {
    bound: Bound,
}

impl ControlServer {
    /// Binds `endpoint` (removing a stale ipc socket file first) with the default
    /// [`Limits`].
    pub async fn bind(endpoint: &str) -> Result<Self, TransportError> {
        Self::bind_with(endpoint, Limits::default()).await
    }

    /// Binds `endpoint` under `limits`. Requests bigger than
    /// [`MAX_CONTROL_MESSAGE`] close their connection unread.
    pub async fn bind_with(endpoint: &str, limits: Limits) -> Result<Self, TransportError> {
        let raw = router().map_err(|e| TransportError::Bind {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
        Ok(ControlServer {
            bound: Bound::bind(raw, endpoint, limits)?,
        })
    }

    /// Serves the connections of `listener` under `limits`; the listener stays
    /// open when this server is dropped or unbound (see [`Listener`]).
    pub async fn bind_listener(
        listener: &Listener,
        limits: Limits,
    ) -> Result<Self, TransportError> {
        let raw = router().map_err(|e| TransportError::Bind {
            endpoint: listener.endpoint().to_string(),
            reason: e.to_string(),
        })?;
        Ok(ControlServer {
            bound: Bound::bind_listener(raw, listener, limits)?,
        })
    }

    /// Stops accepting connections (they wait in the listener's queue, when it
    /// is a [`Listener`] that stays open); requests of connections already made
    /// still arrive.
    pub fn unbind(&self) -> Result<(), TransportError> {
        self.bound.unbind()
    }

    /// The bound endpoint (with the real port when port 0 was asked for).
    pub fn endpoint(&self) -> &str {
        &self.bound.endpoint
    }

    /// The connections so far.
    pub fn connections(&self) -> ConnectionCounts {
        self.bound.counts.load()
    }

    /// A handle that reads the connection counts from another task.
    pub fn counter(&self) -> ConnectionCounter {
        ConnectionCounter(Arc::clone(&self.bound.counts))
    }

    /// A handle that sends replies; clone it into each request's task.
    pub fn replier(&self) -> Replier {
        Replier {
            socket: Arc::clone(&self.bound.socket),
        }
    }

    /// The next request.
    pub async fn recv(&mut self) -> Result<Incoming, TransportError> {
        let mut frames = self
            .bound
            .socket
            .recv()
            .await
            .map_err(|e| TransportError::Io {
                endpoint: self.bound.endpoint.clone(),
                reason: e.to_string(),
            })?;
        let body = frames.pop().unwrap_or_default();
        Ok(Incoming {
            envelope: frames,
            body: Bytes::from(body),
        })
    }
}

/// The agent's ROUTER: replies to a peer that is gone, or that does not read
/// them, are dropped (never wait); requests are bounded in size.
fn router() -> Result<zmq::Socket, zmq::Error> {
    let socket = context().socket(zmq::ROUTER)?;
    socket.set_linger(100)?;
    socket.set_maxmsgsize(MAX_CONTROL_MESSAGE as i64)?;
    socket.set_sndhwm(CONTROL_HWM)?;
    socket.set_rcvhwm(CONTROL_HWM)?;
    Ok(socket)
}

/// Reads the connection counts of a bound endpoint.
#[derive(Debug, Clone)]
pub struct ConnectionCounter(Arc<SharedCounts>);

impl ConnectionCounter {
    /// The counts now.
    pub fn load(&self) -> ConnectionCounts {
        self.0.load()
    }
}

/// Sends replies on a [`ControlServer`].
#[derive(Clone)]
pub struct Replier {
    socket: Arc<AsyncSocket>,
}

impl Replier {
    /// Sends `body` back along `envelope`. A reply to a peer that has gone away
    /// is dropped.
    pub async fn send(&mut self, envelope: Envelope, body: Vec<u8>) -> Result<(), TransportError> {
        let mut frames = envelope.0;
        frames.push(body);
        self.socket
            .send(frames)
            .await
            .map_err(|e| TransportError::Io {
                endpoint: String::new(),
                reason: e.to_string(),
            })
    }
}

/// A publish endpoint (PUB). Sending never blocks: a subscriber that falls too far
/// behind loses messages (and sees a gap in the sequence numbers).
pub struct Publisher {
    bound: Bound,
    key: Option<Key>,
}

impl Publisher {
    /// Binds `endpoint` (removing a stale ipc socket file first) with the default
    /// [`Limits`].
    pub async fn bind(endpoint: &str) -> Result<Self, TransportError> {
        Self::bind_with(endpoint, Limits::default()).await
    }

    /// Binds `endpoint` under `limits`.
    pub async fn bind_with(endpoint: &str, limits: Limits) -> Result<Self, TransportError> {
        let raw = publisher().map_err(|e| TransportError::Bind {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Publisher {
            bound: Bound::bind(raw, endpoint, limits)?,
            key: None,
        })
    }

    /// Publishes to the subscribers that connect to `listener`, under `limits`;
    /// the listener stays open when this publisher is dropped or unbound.
    pub async fn bind_listener(
        listener: &Listener,
        limits: Limits,
    ) -> Result<Self, TransportError> {
        let raw = publisher().map_err(|e| TransportError::Bind {
            endpoint: listener.endpoint().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Publisher {
            bound: Bound::bind_listener(raw, listener, limits)?,
            key: None,
        })
    }

    /// Stops accepting subscribers (they wait in the listener's queue).
    pub fn unbind(&self) -> Result<(), TransportError> {
        self.bound.unbind()
    }

    /// Seals every body with `key` from now on (`None`: publish in clear). The
    /// topic stays in clear so that subscribers can filter on it.
    pub fn seal_with(&mut self, key: Option<Key>) {
        self.key = key;
    }

    /// The bound endpoint.
    pub fn endpoint(&self) -> &str {
        &self.bound.endpoint
    }

    /// A handle that reads the connection counts from another task.
    pub fn counter(&self) -> ConnectionCounter {
        ConnectionCounter(Arc::clone(&self.bound.counts))
    }

    /// Publishes one message: the topic frame, then the body. Never waits.
    pub async fn publish(&mut self, topic: &str, body: Vec<u8>) -> Result<(), TransportError> {
        let body = match &self.key {
            Some(key) => {
                seal::seal(key, Kind::Publication, topic.as_bytes(), &body)
                    .map_err(TransportError::Codec)?
                    .bytes
            }
            None => body,
        };
        self.bound
            .socket
            .try_send(&[topic.as_bytes().to_vec(), body])
            .map(|_| ())
            .map_err(|e| TransportError::Io {
                endpoint: self.bound.endpoint.clone(),
                reason: e.to_string(),
            })
    }
}

/// A PUB whose per-subscriber queues are bounded, that accepts only small
/// messages (subscriptions) from its peers and drops what is unsent at close.
fn publisher() -> Result<zmq::Socket, zmq::Error> {
    let socket = context().socket(zmq::PUB)?;
    socket.set_linger(0)?;
    socket.set_sndhwm(PUBLISH_HWM)?;
    socket.set_maxmsgsize(MAX_SUBSCRIPTION_MESSAGE)?;
    Ok(socket)
}

/// A message from a publish endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    /// `event.*`
    Event(Event),
    /// `stat.*`
    Stat(crate::stats::Stat),
    /// `log.*`: lines of one stream of one watcher.
    Log(crate::logs::LogBatch),
}

/// A subscriber of one or more publish endpoints. It reconnects by itself (from
/// 100 ms, doubling, up to 2 s) and resubscribes; messages published meanwhile are
/// lost, as with any PUB/SUB.
pub struct Subscriber {
    socket: Arc<AsyncSocket>,
    codec: Codec,
    keys: Option<(Keyring, ReplayGuard)>,
    /// When it started to connect: bodies sealed before are refused.
    started_ms: u64,
}

impl Subscriber {
    /// Connects to `endpoint` within `timeout` (waiting for a publisher that is
    /// not there yet) and subscribes to every prefix in `prefixes` (an empty
    /// prefix means everything).
    pub async fn connect(
        endpoint: &str,
        prefixes: &[&str],
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let started_ms = seal::now_ms();
        let connect_error = |reason: String| TransportError::Connect {
            endpoint: endpoint.to_string(),
            reason,
        };
        let raw = subscriber(prefixes).map_err(|e| connect_error(e.to_string()))?;
        let socket = Arc::new(AsyncSocket::new(raw).map_err(|e| connect_error(e.to_string()))?);
        handshake(&socket, endpoint, Instant::now() + timeout, false)
            .await
            .map_err(|failure| connect_error(failure.reason(endpoint, timeout)))?;
        Ok(Subscriber {
            socket,
            codec: Codec::default(),
            keys: None,
            started_ms,
        })
    }

    /// Opens every body with `keys` from now on, refusing bodies in clear and
    /// bodies older than the replay window or repeated within it (`None`: expect
    /// bodies in clear).
    pub fn with_keys(mut self, keys: Option<Keyring>) -> Self {
        self.keys = keys.map(|k| {
            let guard = ReplayGuard::new(seal::DEFAULT_REPLAY_WINDOW)
                .refusing_before(self.started_ms, false);
            (k, guard)
        });
        self
    }

    /// The next message: its topic and body (opened, when this subscriber has
    /// keys). A body that is refused is a [`TransportError::Refused`] naming its
    /// topic; the subscriber stays usable.
    pub async fn recv(&mut self) -> Result<(String, Bytes), TransportError> {
        loop {
            let message = self.socket.recv().await.map_err(|e| TransportError::Io {
                endpoint: String::new(),
                reason: e.to_string(),
            })?;
            let mut frames = message.into_iter();
            let (Some(topic), Some(body)) = (frames.next(), frames.next()) else {
                continue;
            };
            let topic = String::from_utf8_lossy(&topic).into_owned();
            let body = self.open(&topic, Bytes::from(body))?;
            return Ok((topic, body));
        }
    }

    fn open(&mut self, topic: &str, body: Bytes) -> Result<Bytes, TransportError> {
        let refused = |reason: String| TransportError::Refused {
            topic: topic.to_string(),
            reason,
        };
        let sealed = seal::is_sealed(&body);
        let Some((keys, guard)) = self.keys.as_mut() else {
            if sealed {
                let key = seal::header(&body).map_or_else(|_| "?".into(), |h| h.key.to_string());
                return Err(refused(format!(
                    "it is sealed with key {key}: the publisher has keys; pass --key FILE"
                )));
            }
            return Ok(body);
        };
        if !sealed {
            return Err(refused(
                "it is in clear and this subscriber has keys: the publisher has no keys, \
                 or someone else is publishing there"
                    .into(),
            ));
        }
        let opened =
            seal::open(keys, Kind::Publication, topic.as_bytes(), &body).map_err(|refusal| {
                match refusal {
                    seal::Refusal::UnknownKey(id) => refused(format!(
                        "it is sealed with key {id}, which is not among your keys \
                     (the agents' read key? add it with --key, or to the pool's key list)"
                    )),
                    other => refused(other.to_string()),
                }
            })?;
        guard
            .check(opened.timestamp_ms, &opened.nonce)
            .map_err(|r| refused(r.to_string()))?;
        Ok(Bytes::from(opened.body))
    }

    /// The next message, decoded: an event, statistics or a batch of output lines. Messages of
    /// other kinds are skipped; a body that does not decode is an error naming its
    /// topic.
    pub async fn recv_published(&mut self) -> Result<Published, TransportError> {
        loop {
            let (topic, body) = self.recv().await?;
            let kind = topic.split('.').next().unwrap_or_default();
            let decoded = match kind {
                crate::event::EVENT_PREFIX => self.codec.decode(&body).map(Published::Event),
                crate::stats::STAT_PREFIX => self.codec.decode(&body).map(Published::Stat),
                crate::logs::LOG_PREFIX => self.codec.decode(&body).map(Published::Log),
                _ => continue,
            };
            return decoded.map_err(|e| TransportError::Codec(format!("{topic}: {e}")));
        }
    }

    /// The next message, decoded as an [`Event`] (messages of other kinds are
    /// skipped).
    pub async fn recv_event(&mut self) -> Result<Event, TransportError> {
        loop {
            let (topic, body) = self.recv().await?;
            if topic.split('.').next() != Some(crate::event::EVENT_PREFIX) {
                continue;
            }
            return Ok(self.codec.decode(&body)?);
        }
    }
}

/// A SUB with bounded messages and queue, short reconnects and heartbeats,
/// subscribed to `prefixes`.
fn subscriber(prefixes: &[&str]) -> Result<zmq::Socket, zmq::Error> {
    let socket = context().socket(zmq::SUB)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(MAX_REPLY_MESSAGE)?;
    socket.set_rcvhwm(SUBSCRIBE_HWM)?;
    set_reconnects(&socket)?;
    set_heartbeats(&socket)?;
    for prefix in prefixes {
        socket.set_subscribe(prefix.as_bytes())?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::message::Response;

    /// Answers `requests` requests, each from a task of its own (so replies are
    /// sent while the next requests are read), echoing the request id; returns
    /// the server, which must stay open until its last replies are delivered.
    async fn serve(mut server: ControlServer, requests: usize) -> ControlServer {
        let codec = Codec::default();
        for _ in 0..requests {
            let incoming = server.recv().await.unwrap();
            let mut replier = server.replier();
            let request: Request = codec.decode(&incoming.body).unwrap();
            let body = codec
                .encode(&Reply {
                    v: PROTOCOL_VERSION,
                    id: request.id,
                    result: Ok(Response::Count(request.id)),
                })
                .unwrap();
            tokio::spawn(async move { replier.send(incoming.envelope(), body).await.unwrap() });
        }
        server
    }

    /// Many clients at once, replies sent from other tasks than the one that
    /// reads: every request is answered (no wake-up of the reading task is lost).
    async fn many_clients_are_all_answered() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}/c.sock", dir.path().display());
        let (clients, each) = (8, 250);
        let server = ControlServer::bind(&endpoint).await.unwrap();
        let serving = tokio::spawn(serve(server, clients * each));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let endpoint = endpoint.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = Client::new(endpoint, Duration::from_secs(20));
                for _ in 0..each {
                    let reply = client.call(Command::NumWatchers {}).await.unwrap();
                    assert!(matches!(reply, Response::Count(_)));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        serving.await.unwrap();
    }

    #[test]
    fn many_clients_are_answered_on_a_current_thread_runtime() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(many_clients_are_all_answered());
    }

    #[test]
    fn many_clients_are_answered_on_a_multi_thread_runtime() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(many_clients_are_all_answered());
    }

    #[tokio::test]
    async fn a_client_says_at_once_that_nothing_listens() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}/nobody.sock", dir.path().display());
        let mut client = Client::new(endpoint.clone(), Duration::from_secs(20));
        let started = Instant::now();
        let err = client.call(Command::NumWatchers {}).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("cannot reach agent") && text.contains("No such file"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_subscriber_gets_what_is_published_and_a_publisher_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}/p.sock", dir.path().display());
        let mut publisher = Publisher::bind(&endpoint).await.unwrap();
        let mut subscriber = Subscriber::connect(&endpoint, &["a."], Duration::from_secs(5))
            .await
            .unwrap();
        // The subscription reaches the publisher a moment after the connection.
        let got = loop {
            publisher.publish("b.skip", b"no".to_vec()).await.unwrap();
            publisher.publish("a.one", b"yes".to_vec()).await.unwrap();
            if let Ok(got) =
                tokio::time::timeout(Duration::from_millis(50), subscriber.recv()).await
            {
                break got.unwrap();
            }
        };
        assert_eq!(got, ("a.one".to_string(), Bytes::from_static(b"yes")));
        // A subscriber that reads nothing: publishing far past its queue neither
        // blocks nor fails.
        let started = Instant::now();
        for _ in 0..(PUBLISH_HWM as usize * 4) {
            publisher.publish("a.flood", vec![0; 100]).await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_endpoint_serves_at_most_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sock");
        let endpoint = format!("ipc://{}", path.display());
        let limits = Limits {
            max_connections: 3,
            ..Limits::default()
        };
        let server = ControlServer::bind_with(&endpoint, limits).await.unwrap();
        let held: Vec<_> = (0..10)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.connections().refused < 7 {
            assert!(Instant::now() < deadline, "{:?}", server.connections());
            tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
        }
        let counts = server.connections();
        assert_eq!((counts.accepted, counts.open, counts.refused), (10, 3, 7));
        drop(held);
    }
}
