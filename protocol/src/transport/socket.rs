//! The bridge between libzmq sockets and tokio: one small type, [`AsyncSocket`].
//!
//! A libzmq socket is driven from Rust with non-blocking calls (`ZMQ_DONTWAIT`);
//! when one would block, the task waits on the socket's `ZMQ_FD` under tokio's
//! [`AsyncFd`]. That descriptor is a notification, not the socket: it becomes
//! readable when the socket's state *may* have changed, and every call on the socket
//! (a send, a receive, even reading `ZMQ_EVENTS`) may consume that notification.
//! So a waiter always re-reads `ZMQ_EVENTS` before it sleeps, clears tokio's
//! readiness only when nothing it wants is pending, and a call made by another task
//! wakes the waiters ([`Notify`]) so that they look again. With those three rules no
//! wake-up is lost, whichever runtime (current-thread or multi-thread) the tasks run
//! on.
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

    /// Receives one whole message (all its frames).
    pub(crate) async fn recv(&self) -> Result<Vec<Vec<u8>>, zmq::Error> {
        loop {
            match self.lock().recv_multipart(zmq::DONTWAIT) {
                Err(zmq::Error::EAGAIN) => {}
                other => return other,
            }
            self.ready(zmq::POLLIN).await?;
        }
    }

    /// Receives one whole message if one is queued: `Ok(None)` when none is.
    pub(crate) fn try_recv(&self) -> Result<Option<Vec<Vec<u8>>>, zmq::Error> {
        let result = self.lock().recv_multipart(zmq::DONTWAIT);
        // The call may have consumed a notification another task waits for.
        self.changed.notify_waiters();
        match result {
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
            self.ready(zmq::POLLOUT).await?;
        }
    }

    /// Sends one message if libzmq takes it now: `Ok(false)` when it would block.
    pub(crate) fn try_send(&self, frames: &[Vec<u8>]) -> Result<bool, zmq::Error> {
        let result = self.lock().send_multipart(frames, zmq::DONTWAIT);
        // The call may have consumed a notification another task waits for.
        self.changed.notify_waiters();
        match result {
            Ok(()) => Ok(true),
            Err(zmq::Error::EAGAIN) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until the socket has one of `want` pending.
    async fn ready(&self, want: zmq::PollEvents) -> Result<(), zmq::Error> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.lock().get_events()?.intersects(want) {
                return Ok(());
            }
            tokio::select! {
                guard = self.readiness.readable() => {
                    let mut guard = guard.map_err(|_| zmq::Error::EFAULT)?;
                    let events = self.lock().get_events()?;
                    if !events.intersects(want) {
                        guard.clear_ready();
                        if !events.is_empty() {
                            // Reading the events consumed the notification: pass it
                            // on to a task that waits for what is pending.
                            self.changed.notify_waiters();
                        }
                    }
                }
                () = &mut changed => {}
            }
        }
    }
}
