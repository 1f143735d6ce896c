//! A client that hammers an HTTP worker (`ringmaster-http-worker`) through a
//! shared listening socket, for the tests that must see no refused connection
//! across a reload, a restart or an upgrade in place.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{wait_for_blocking, DEADLINE};

/// One request to the HTTP worker: the pid that answered, or what went wrong.
pub fn request(addr: SocketAddr) -> Result<u32, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("read: {e} (got {text:?})"))?;
    if !text.starts_with("HTTP/1.0 200 OK") {
        return Err(format!("bad response {text:?}"));
    }
    text.rsplit("pid ")
        .next()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("no pid in {text:?}"))
}

/// What a [`Hammer`] saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests answered.
    pub ok: u64,
    /// What went wrong, per failed request.
    pub failures: Vec<String>,
    /// The pids that answered.
    pub pids: BTreeSet<u32>,
}

/// A client thread sending requests back to back until stopped.
pub struct Hammer {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
    thread: Option<JoinHandle<()>>,
}

impl Hammer {
    /// Starts hammering `addr`.
    pub fn start(addr: SocketAddr) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let thread = {
            let (stop, ok, tally) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&tally));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let result = request(addr);
                    let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
                    match result {
                        Ok(pid) => {
                            tally.ok += 1;
                            tally.pids.insert(pid);
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => tally.failures.push(e),
                    }
                }
            })
        };
        Hammer {
            stop,
            ok,
            tally,
            thread: Some(thread),
        }
    }

    /// Waits until `more` further requests succeeded.
    pub fn wait_more(&self, more: u64, what: &str) {
        let target = self.ok.load(Ordering::SeqCst) + more;
        wait_for_blocking(what, DEADLINE, || {
            self.ok.load(Ordering::SeqCst) >= target
                || !self
                    .tally
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .failures
                    .is_empty()
        });
    }

    /// Stops and returns what it saw.
    pub fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.tally.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for Hammer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Fails unless every request succeeded and at least `at_least` did.
pub fn assert_clean(tally: &Tally, at_least: u64) {
    assert!(
        tally.failures.is_empty(),
        "{} request(s) failed (of {} ok): {:?}",
        tally.failures.len(),
        tally.ok,
        tally.failures.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        tally.ok >= at_least,
        "only {} request(s) succeeded",
        tally.ok
    );
}
