//! Async ZeroMQ helpers shared by the agent and every client.
//!
//! zmq.rs sockets must live on a `current_thread` tokio runtime: on the multi-thread
//! runtime zmq.rs 0.7 deadlocks under concurrent client churn. Every binary of
//! Ringmaster therefore runs its sockets on one.
//!
//! - [`Client`]: a DEALER with a per-request deadline. Each request has an id and
//!   stale replies are dropped; after a timeout or a transport error the socket is
//!   dropped and the next request connects afresh (a zmq.rs DEALER never reconnects
//!   by itself), so a client stays usable after an agent restart.
//! - [`ControlServer`]: the agent's ROUTER, split so that replies can be sent from
//!   the task that handled a request while the next requests are read.
//! - [`Publisher`] and [`Subscriber`]: the two ends of the event stream.
//!
//! Given keys ([`crate::seal`]), the client seals its requests and opens the
//! replies, the publisher seals every body and the subscriber opens every body and
//! refuses old or repeated ones; callers never see a sealed frame.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zeromq::prelude::*;
use zeromq::{
    DealerSocket, PubSocket, RouterRecvHalf, RouterSendHalf, RouterSocket, SocketOptions,
    SubSocket, ZmqMessage,
};

use crate::codec::{Codec, DecodeError};
use crate::event::Event;
use crate::message::{Command, ErrorReply, Reply, Request, Response};
use crate::seal::{self, Key, Keyring, Kind, Nonce, ReplayGuard};
use crate::PROTOCOL_VERSION;

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
    socket: Option<DealerSocket>,
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
        self.next_id = self.next_id.wrapping_add(1);
        let request = Request {
            v: PROTOCOL_VERSION,
            id: self.next_id,
            no_wait,
            command,
        };
        let body = self
            .codec
            .encode(&request)
            .map_err(|e| TransportError::Codec(e.to_string()))?;
        let (frame, nonce) = match &self.keys {
            Some(keys) => {
                let sealed = seal::seal(keys.primary(), Kind::Request, &[], &body)
                    .map_err(TransportError::Codec)?;
                (sealed.bytes, Some(sealed.nonce))
            }
            None => (body, None),
        };
        let reply = self.exchange(frame, request.id, nonce).await?;
        reply.result.map_err(ClientError::Remote)
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
        let result = self.exchange_until(body, id, nonce, deadline).await;
        if result.is_err() {
            // A DEALER never reconnects by itself, and a late reply would confuse
            // the next request: start from a fresh socket next time.
            self.socket = None;
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
        if self.socket.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut options = SocketOptions::default();
            options.connect_timeout(remaining.max(Duration::from_millis(1)));
            let mut socket = DealerSocket::with_options(options);
            let connect_error = |reason: String| TransportError::Connect {
                endpoint: self.endpoint.clone(),
                reason,
            };
            match tokio::time::timeout(remaining, socket.connect(&self.endpoint)).await {
                Ok(Ok(())) => self.socket = Some(socket),
                Ok(Err(zeromq::ZmqError::Network(e))) => return Err(connect_error(e.to_string())),
                Ok(Err(zeromq::ZmqError::ConnectTimeout(_))) | Err(_) => {
                    return Err(connect_error(format!(
                        "nothing answered within {:.1}s",
                        self.timeout.as_secs_f64()
                    )))
                }
                Ok(Err(e)) => return Err(connect_error(e.to_string())),
            }
        }
        let endpoint = self.endpoint.clone();
        let timeout = self.timeout;
        let Some(socket) = self.socket.as_mut() else {
            return Err(TransportError::Io {
                endpoint,
                reason: "no socket".into(),
            });
        };
        let mut message = ZmqMessage::from(Bytes::new());
        message.push_back(Bytes::from(body));
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TransportError::Io {
                endpoint,
                reason: e.to_string(),
            }),
            Err(_) => Err(TransportError::Timeout {
                endpoint,
                after: timeout,
            }),
        }
    }

    async fn recv_frame(&mut self, deadline: Instant) -> Result<Bytes, TransportError> {
        let endpoint = self.endpoint.clone();
        let timeout = self.timeout;
        let Some(socket) = self.socket.as_mut() else {
            return Err(TransportError::Io {
                endpoint,
                reason: "no socket".into(),
            });
        };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let frames = match tokio::time::timeout(remaining, socket.recv()).await {
                Ok(Ok(frames)) => frames,
                Ok(Err(e)) => {
                    return Err(TransportError::Io {
                        endpoint,
                        reason: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(TransportError::Timeout {
                        endpoint,
                        after: timeout,
                    })
                }
            };
            if let Some(last) = frames.into_vec().pop() {
                return Ok(last);
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

/// Binds `socket` at `endpoint` (removing a stale ipc socket file first) and
/// returns the bound endpoint, with the real port when port 0 was asked for.
async fn bind<S: Socket>(socket: &mut S, endpoint: &str) -> Result<String, TransportError> {
    prepare_bind(endpoint)?;
    socket
        .bind(endpoint)
        .await
        .map(|bound| bound.to_string())
        .map_err(|e| TransportError::Bind {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })
}

/// A request read by the [`ControlServer`], with the envelope to reply to.
#[derive(Debug)]
pub struct Incoming {
    envelope: Vec<Bytes>,
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
pub struct Envelope(Vec<Bytes>);

/// The agent's control endpoint (ROUTER).
pub struct ControlServer {
    recv: RouterRecvHalf,
    send: RouterSendHalf,
    endpoint: String,
}

impl ControlServer {
    /// Binds `endpoint` (removing a stale ipc socket file first).
    pub async fn bind(endpoint: &str) -> Result<Self, TransportError> {
        let mut socket = RouterSocket::new();
        let bound = bind(&mut socket, endpoint).await?;
        let (send, recv) = socket.split();
        Ok(ControlServer {
            recv,
            send,
            endpoint: bound,
        })
    }

    /// The bound endpoint (with the real port when port 0 was asked for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A handle that sends replies; clone it into each request's task.
    pub fn replier(&self) -> Replier {
        Replier {
            send: self.send.clone(),
        }
    }

    /// The next request.
    pub async fn recv(&mut self) -> Result<Incoming, TransportError> {
        let message = self.recv.recv().await.map_err(|e| TransportError::Io {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        })?;
        let mut frames = message.into_vec();
        let body = frames.pop().unwrap_or_default();
        Ok(Incoming {
            envelope: frames,
            body,
        })
    }
}

/// Sends replies on a [`ControlServer`].
#[derive(Clone)]
pub struct Replier {
    send: RouterSendHalf,
}

impl Replier {
    /// Sends `body` back along `envelope`. Fails when the peer has gone away.
    pub async fn send(&mut self, envelope: Envelope, body: Vec<u8>) -> Result<(), TransportError> {
        let mut frames = envelope.0;
        frames.push(Bytes::from(body));
        let message = ZmqMessage::try_from(frames).map_err(|e| TransportError::Io {
            endpoint: String::new(),
            reason: e.to_string(),
        })?;
        self.send
            .send(message)
            .await
            .map_err(|e| TransportError::Io {
                endpoint: String::new(),
                reason: e.to_string(),
            })
    }
}

/// The agent's publish endpoint (PUB). Sending never blocks: a subscriber that
/// falls too far behind loses messages (and sees a gap in the sequence numbers).
pub struct Publisher {
    socket: PubSocket,
    endpoint: String,
    key: Option<Key>,
}

impl Publisher {
    /// Binds `endpoint` (removing a stale ipc socket file first).
    pub async fn bind(endpoint: &str) -> Result<Self, TransportError> {
        let mut socket = PubSocket::new();
        let bound = bind(&mut socket, endpoint).await?;
        Ok(Publisher {
            socket,
            endpoint: bound,
            key: None,
        })
    }

    /// Seals every body with `key` from now on (`None`: publish in clear). The
    /// topic stays in clear so that subscribers can filter on it.
    pub fn seal_with(&mut self, key: Option<Key>) {
        self.key = key;
    }

    /// The bound endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Publishes one message: the topic frame, then the body.
    pub async fn publish(&mut self, topic: &str, body: Vec<u8>) -> Result<(), TransportError> {
        let body = match &self.key {
            Some(key) => {
                seal::seal(key, Kind::Publication, topic.as_bytes(), &body)
                    .map_err(TransportError::Codec)?
                    .bytes
            }
            None => body,
        };
        let mut message = ZmqMessage::from(topic.to_string());
        message.push_back(Bytes::from(body));
        self.socket
            .send(message)
            .await
            .map_err(|e| TransportError::Io {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })
    }
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

/// A subscriber of one or more publish endpoints.
pub struct Subscriber {
    socket: SubSocket,
    codec: Codec,
    keys: Option<(Keyring, ReplayGuard)>,
}

impl Subscriber {
    /// Connects to `endpoint` within `timeout` and subscribes to every prefix in
    /// `prefixes` (an empty prefix means everything).
    pub async fn connect(
        endpoint: &str,
        prefixes: &[&str],
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let mut options = SocketOptions::default();
        options.connect_timeout(timeout);
        let mut socket = SubSocket::with_options(options);
        for prefix in prefixes {
            socket
                .subscribe(prefix)
                .await
                .map_err(|e| TransportError::Io {
                    endpoint: endpoint.to_string(),
                    reason: e.to_string(),
                })?;
        }
        match tokio::time::timeout(timeout, socket.connect(endpoint)).await {
            Ok(Ok(())) => Ok(Subscriber {
                socket,
                codec: Codec::default(),
                keys: None,
            }),
            Ok(Err(e)) => Err(TransportError::Connect {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            }),
            Err(_) => Err(TransportError::Connect {
                endpoint: endpoint.to_string(),
                reason: format!("nothing answered within {:.1}s", timeout.as_secs_f64()),
            }),
        }
    }

    /// Opens every body with `keys` from now on, refusing bodies in clear and
    /// bodies older than the replay window or repeated within it (`None`: expect
    /// bodies in clear).
    pub fn with_keys(mut self, keys: Option<Keyring>) -> Self {
        self.keys = keys.map(|k| (k, ReplayGuard::new(seal::DEFAULT_REPLAY_WINDOW)));
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
            let mut frames = message.into_vec().into_iter();
            let (Some(topic), Some(body)) = (frames.next(), frames.next()) else {
                continue;
            };
            let topic = String::from_utf8_lossy(&topic).into_owned();
            let body = self.open(&topic, body)?;
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
