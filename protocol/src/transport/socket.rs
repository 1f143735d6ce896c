//! The bridge between libzmq sockets and tokio: one small type, [`AsyncSocket`].
//!
//! A libzmq socket is driven from Rust with non-blocking calls (`ZMQ_DONTWAIT`);
//! when one would block, the task waits on the socket's `ZMQ_FD` under tokio's
//! [`AsyncFd`]. That descriptor is a notification, not the socket: it becomes
//! readable when libzmq queues a command for the socket (a message arrived, a
//! peer can take more), and the libzmq call that processes those commands (a
//! receive, a send, reading `ZMQ_EVENTS`) drains it. Three rules keep every
//! wake-up:
//!
//! - a task sleeps only right after a call that processed every queued command: a
//!   receive that found nothing, or `ZMQ_EVENTS` (a send that fails may not have
//!   looked), so the descriptor was drained and the next change signals it anew;
//! - every call is counted, and a task that sleeps also wakes when another task has
//!   made a call since its own ([`Notify`]), since that call may have drained a
//!   signal meant for it;
//! - after a wake-up the task clears tokio's readiness before it calls again, so
//!   readiness that comes after that call is kept.
//!
//! So a receive costs no `ZMQ_EVENTS` read at all, a task is woken by another
//! only when one waits, and the bridge holds on either tokio runtime.
//!
//! Every socket of a process lives in one libzmq context ([`context`]) with one I/O
//! thread; the context is never terminated, so no exit waits on a lingering peer.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

/// The process's libzmq context.
pub(crate) fn context() -> &'static zmq::Context {
    static CONTEXT: OnceLock<zmq::Context> = OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new)
}

/// A name for an `inproc://` endpoint that no other socket of this process uses.
pub(crate) fn unique_inproc(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "inproc://ringmaster-{what}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The notification descriptor of a libzmq socket (owned by libzmq, never closed
/// here).
struct Notification(RawFd);

impl AsRawFd for Notification {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A libzmq socket that tasks can await. Sending and receiving may happen from
/// different tasks at once; each call holds the socket only for one non-blocking
/// libzmq call.
pub(crate) struct AsyncSocket {
    // Declared first so that it is deregistered before libzmq closes the socket.
    readiness: AsyncFd<Notification>,
    socket: Mutex<zmq::Socket>,
    /// Calls made on the socket so far through [`AsyncSocket::call`].
    calls: AtomicU64,
    changed: Notify,
}

impl AsyncSocket {
    /// Wraps `socket`; must be called inside a tokio runtime with I/O enabled.
    #[allow(unsafe_code)]
    pub(crate) fn new(socket: zmq::Socket) -> io::Result<AsyncSocket> {
        let fd = socket.get_fd()?;
        // SAFETY: `fd` is the socket's notification descriptor, which libzmq keeps
        // open, unchanged, until the socket is closed. The socket is closed only
        // when this value is dropped, after `readiness` (fields drop in order), so
        // the descriptor outlives its registration.
        let readiness =
            unsafe { AsyncFd::register_with_interest(Notification(fd), Interest::READABLE) }
                .map_err(io::Error::from)?;
        Ok(AsyncSocket {
            readiness,
            socket: Mutex::new(socket),
            calls: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    /// The socket, for options and for calls that never block.
    pub(crate) fn lock(&self) -> MutexGuard<'_, zmq::Socket> {
        // A panic while the lock was held cannot leave a libzmq socket half-changed.
        self.socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes one call on the socket and wakes the tasks that wait on it (the call
    /// may have drained a signal one of them waits for); returns its result and
    /// the number of calls made so far, this one included.
    fn call<T>(&self, f: impl FnOnce(&zmq::Socket) -> T) -> (T, u64) {
        let (result, seen) = {
            let socket = self.lock();
            let result = f(&socket);
            (result, self.calls.fetch_add(1, Ordering::AcqRel) + 1)
        };
        self.changed.notify_waiters();
        (result, seen)
    }

    /// Receives one whole message (all its frames).
    pub(crate) async fn recv(&self) -> Result<Vec<Vec<u8>>, zmq::Error> {
        loop {
            let (result, seen) = self.call(|s| s.recv_multipart(zmq::DONTWAIT));
            match result {
                // To find nothing, libzmq processed every queued command.
                Err(zmq::Error::EAGAIN) => self.wait(seen).await?,
                other => return other,
            }
        }
    }

    /// Receives one whole message if one is queued: `Ok(None)` when none is.
    pub(crate) fn try_recv(&self) -> Result<Option<Vec<Vec<u8>>>, zmq::Error> {
        match self.call(|s| s.recv_multipart(zmq::DONTWAIT)).0 {
            Ok(frames) => Ok(Some(frames)),
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends one message, waiting while libzmq cannot take it (a DEALER with no
    /// connected peer, a queue at its high-water mark).
    pub(crate) async fn send(&self, frames: Vec<Vec<u8>>) -> Result<(), zmq::Error> {
        loop {
            if self.try_send(&frames)? {
                return Ok(());
            }
            // A send that fails may not have looked at the queued commands;
            // reading the events processes them all.
            let (events, seen) = self.call(zmq::Socket::get_events);
            if !events?.contains(zmq::POLLOUT) {
                self.wait(seen).await?;
            }
        }
    }

    /// Sends one message if libzmq takes it now: `Ok(false)` when it would block.
    pub(crate) fn try_send(&self, frames: &[Vec<u8>]) -> Result<bool, zmq::Error> {
        match self.call(|s| s.send_multipart(frames, zmq::DONTWAIT)).0 {
            Ok(()) => Ok(true),
            Err(zmq::Error::EAGAIN) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits after call number `seen`, which processed every queued command:
    /// until the notification descriptor signals, or another task makes a call.
    async fn wait(&self, seen: u64) -> Result<(), zmq::Error> {
        let changed = self.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if self.calls.load(Ordering::Acquire) != seen {
            // Another task called meanwhile: look again.
            return Ok(());
        }
        tokio::select! {
            guard = self.readiness.readable() => {
                // The next call drains the descriptor; what signals after it
                // must stay ready.
                guard.map_err(|_| zmq::Error::EFAULT)?.clear_ready();
            }
            () = &mut changed => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// One task waits to send (a DEALER with no peer yet) while another waits to
    /// receive on the same socket; a peer comes, echoes, and both get through.
    async fn a_sender_and_a_receiver_wait_on_one_socket() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}/s.sock", dir.path().display());
        let dealer = context().socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        dealer.set_immediate(true).unwrap();
        dealer.set_reconnect_ivl(20).unwrap();
        dealer.connect(&endpoint).unwrap();
        let dealer = Arc::new(AsyncSocket::new(dealer).unwrap());
        let receiving = tokio::spawn({
            let dealer = Arc::clone(&dealer);
            async move {
                let mut got = Vec::new();
                for _ in 0..100 {
                    got.push(dealer.recv().await.unwrap());
                }
                got
            }
        });
        let sending = tokio::spawn({
            let dealer = Arc::clone(&dealer);
            async move {
                for i in 0..100u8 {
                    dealer.send(vec![vec![i]]).await.unwrap();
                }
            }
        });
        // The peer comes only once both tasks wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let router = context().socket(zmq::ROUTER).unwrap();
        router.set_linger(0).unwrap();
        router.bind(&endpoint).unwrap();
        let router = AsyncSocket::new(router).unwrap();
        for _ in 0..100 {
            let message = router.recv().await.unwrap();
            router.send(message).await.unwrap();
        }
        let (got, sent) = tokio::time::timeout(Duration::from_secs(20), async {
            (receiving.await.unwrap(), sending.await)
        })
        .await
        .unwrap();
        sent.unwrap();
        let expected: Vec<Vec<Vec<u8>>> = (0..100u8).map(|i| vec![vec![i]]).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn on_a_current_thread_runtime() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(a_sender_and_a_receiver_wait_on_one_socket());
    }

    #[test]
    fn on_a_multi_thread_runtime() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(a_sender_and_a_receiver_wait_on_one_socket());
    }
}
