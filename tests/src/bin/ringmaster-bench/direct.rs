//! Phase 3's reference points: how much of the `status` round trip is libzmq's own.
//!
//! Three paths are timed in the same run, in alternating blocks so that the
//! machine's noise falls on all of them alike:
//!
//! - **client**: the protocol [`Client`] (tokio, the async bridge) to the agent,
//!   what `nodectl` and nodemeta use;
//! - **blocking**: a plain blocking libzmq DEALER (no tokio) sending the same
//!   request bytes to the same agent: the agent's side, without the client's bridge;
//! - **floor**: the same blocking DEALER to a plain libzmq ROUTER in a thread of this
//!   process (its own context, so its own I/O thread, as another process would
//!   have) that answers every request with a reply of the agent's reply size at
//!   once: what libzmq itself costs for one request and one reply over `ipc://` on
//!   this machine.
//!
//! The floor is as far as a libzmq transport can go: each message crosses the
//! sender's I/O thread and the receiver's I/O thread, so one round trip wakes six
//! threads in turn (zmq.rs did its I/O on the caller's thread: two).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ringmaster_protocol::transport::Client;
use ringmaster_protocol::{Codec, Command, Reply, Request, Response, PROTOCOL_VERSION};

use crate::Stats;

/// Requests per block before switching to the next path.
const BLOCK: u32 = 100;

/// The round trips of the three paths.
pub struct Direct {
    pub client: Stats,
    pub blocking: Stats,
    pub floor: Stats,
    /// Bytes of the agent's `status` reply (and of the floor's replies).
    pub reply_bytes: usize,
}

/// Times `requests` `status` round trips on each path against the agent at
/// `control`, `client` being a protocol client of it.
pub async fn measure(client: &mut Client, control: &str, requests: u32) -> Result<Direct> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let context = zmq::Context::new();
    let mut agent = Blocking::connect(&context, control)?;
    let reply_bytes = agent.status_reply_len()?;
    let floor_endpoint = format!("ipc://{}/floor.sock", dir.path().display());
    let server = FloorServer::start(&floor_endpoint, reply_bytes)?;
    let mut floor = Blocking::connect(&context, &floor_endpoint)?;
    // Warm up every path: connections, allocator, caches.
    for _ in 0..(requests / 100).max(10) {
        time_client(client).await?;
        agent.round_trip()?;
        floor.round_trip()?;
    }
    let capacity = requests as usize;
    let (mut on_client, mut on_blocking, mut on_floor) = (
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
    );
    let mut done = 0;
    while done < requests {
        let block = BLOCK.min(requests - done);
        for _ in 0..block {
            on_client.push(time_client(client).await?);
        }
        for _ in 0..block {
            on_blocking.push(agent.round_trip()?);
        }
        for _ in 0..block {
            on_floor.push(floor.round_trip()?);
        }
        done += block;
    }
    floor.stop_server()?;
    server.join()?;
    Ok(Direct {
        client: Stats::of(on_client),
        blocking: Stats::of(on_blocking),
        floor: Stats::of(on_floor),
        reply_bytes,
    })
}

async fn time_client(client: &mut Client) -> Result<Duration> {
    let started = Instant::now();
    let reply = client
        .call(Command::Status { name: None })
        .await
        .context("status")?;
    let took = started.elapsed();
    if !matches!(reply, Response::Status(_)) {
        bail!("unexpected reply to status: {reply:?}");
    }
    Ok(took)
}

/// A blocking libzmq DEALER that sends `status` requests, as the protocol client
/// frames them (an empty delimiter, then the body).
struct Blocking {
    socket: zmq::Socket,
    codec: Codec,
    next_id: u64,
}

impl Blocking {
    fn connect(context: &zmq::Context, endpoint: &str) -> Result<Blocking> {
        let socket = context.socket(zmq::DEALER)?;
        socket.set_linger(0)?;
        socket.set_rcvtimeo(30_000)?;
        socket.set_sndtimeo(30_000)?;
        socket
            .connect(endpoint)
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        Ok(Blocking {
            socket,
            codec: Codec::default(),
            next_id: 1,
        })
    }

    /// Sends one request and returns its reply's body.
    fn exchange(&mut self) -> Result<Vec<u8>> {
        self.next_id += 1;
        let body = self.codec.encode(&Request {
            v: PROTOCOL_VERSION,
            id: self.next_id,
            no_wait: false,
            command: Command::Status { name: None },
        })?;
        self.socket
            .send_multipart([&b""[..], &body], 0)
            .context("cannot send")?;
        let frames = self.socket.recv_multipart(0).context("no reply")?;
        frames
            .into_iter()
            .next_back()
            .ok_or_else(|| anyhow!("an empty reply"))
    }

    /// The size of the agent's reply to `status`, checking that it is one.
    fn status_reply_len(&mut self) -> Result<usize> {
        let body = self.exchange()?;
        let reply: Reply = self.codec.decode(&body)?;
        match reply.result {
            Ok(Response::Status(_)) if reply.id == self.next_id => Ok(body.len()),
            other => bail!("unexpected reply to status: {other:?}"),
        }
    }

    /// Times one round trip.
    fn round_trip(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let body = self.exchange()?;
        let took = started.elapsed();
        if body.is_empty() {
            bail!("an empty reply body");
        }
        Ok(took)
    }

    /// Tells the floor server to stop (an empty body).
    fn stop_server(&self) -> Result<()> {
        self.socket
            .send_multipart([&b""[..], &b""[..]], 0)
            .context("cannot stop the floor server")?;
        Ok(())
    }
}

/// A plain libzmq ROUTER answering every request at once with `reply_bytes` bytes,
/// on a thread and a context of its own.
struct FloorServer(std::thread::JoinHandle<Result<()>>);

impl FloorServer {
    fn start(endpoint: &str, reply_bytes: usize) -> Result<FloorServer> {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::ROUTER)?;
        socket.set_linger(0)?;
        socket
            .bind(endpoint)
            .with_context(|| format!("cannot bind {endpoint}"))?;
        let reply = vec![0x5a_u8; reply_bytes];
        let handle = std::thread::Builder::new()
            .name("bench-floor".into())
            .spawn(move || -> Result<()> {
                let _context = context;
                loop {
                    let mut frames = socket.recv_multipart(0)?;
                    let body = frames.pop().unwrap_or_default();
                    if body.is_empty() {
                        return Ok(());
                    }
                    frames.push(reply.clone());
                    socket.send_multipart(frames, 0)?;
                }
            })
            .context("cannot start the floor server's thread")?;
        Ok(FloorServer(handle))
    }

    fn join(self) -> Result<()> {
        self.0
            .join()
            .map_err(|_| anyhow!("the floor server panicked"))?
    }
}
