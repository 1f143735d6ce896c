//! `ringmaster-http-worker`: a tiny HTTP/1.0 server for the socket tests, run as a
//! watcher's process on a listening socket it inherits from the agent.
//!
//! ```text
//! ringmaster-http-worker [--fd N]
//! ```
//!
//! The socket is descriptor N, else descriptor 3 when `LISTEN_FDS` is set for
//! this process (systemd style: `LISTEN_PID` must be its pid). Each request is
//! answered `HTTP/1.0 200 OK` with the body `pid <PID>`, so a client can tell
//! which process served it.
//!
//! On SIGTERM it stops accepting, finishes the request in hand and exits 0, as a
//! well-behaved worker does: the connections it did not accept stay queued in the
//! agent's socket for the next process. (Exiting at once could drop a request
//! already accepted, which would make a zero-downtime test fail for the wrong
//! reason.) SIGTERM is blocked and received by a thread with `sigwait`, so no
//! signal handler is needed; `accept` gives up every 50 ms (`SO_RCVTIMEO`) to
//! look at the flag, so an idle worker exits at once too. (That timeout is an
//! option of the shared socket, so every process that has it sees it; fine for
//! a test where all of them are this worker, and the agent never accepts.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::{TimeVal, TimeValLike};

/// How long an idle worker waits for a connection before it looks at the stop
/// flag again.
const IDLE_CHECK_MS: i64 = 50;

fn main() -> ExitCode {
    let fd = match socket_fd() {
        Ok(fd) => fd,
        Err(message) => {
            eprintln!("ringmaster-http-worker: {message}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    // Block SIGTERM before any other thread exists, so every thread inherits the
    // mask and only `sigwait` below receives it.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    if let Err(e) = term.thread_block() {
        eprintln!("ringmaster-http-worker: cannot block SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            if term.wait().is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    // SAFETY: the descriptor was handed to this process to listen on (by `--fd`
    // or LISTEN_FDS), nothing else in the process uses it, and it stays open
    // for the whole life of the listener.
    #[allow(unsafe_code)]
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let idle = TimeVal::milliseconds(IDLE_CHECK_MS);
    if let Err(e) = setsockopt(&listener, ReceiveTimeout, &idle) {
        eprintln!("ringmaster-http-worker: cannot set SO_RCVTIMEO: {e}");
        return ExitCode::FAILURE;
    }
    serve(&listener, &stop);
    ExitCode::SUCCESS
}

/// The descriptor to listen on: `--fd N`, else 3 with `LISTEN_FDS`.
fn socket_fd() -> Result<RawFd, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, n] if flag == "--fd" => n
            .parse::<RawFd>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("--fd takes a descriptor number, not '{n}'")),
        [] => {
            let fds = std::env::var("LISTEN_FDS")
                .map_err(|_| "no socket: give --fd N or run with LISTEN_FDS".to_string())?;
            let pid = std::env::var("LISTEN_PID").unwrap_or_default();
            if pid != std::process::id().to_string() {
                return Err(format!(
                    "LISTEN_PID is '{pid}', not this process ({})",
                    std::process::id()
                ));
            }
            match fds.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(3),
                _ => Err(format!("LISTEN_FDS is '{fds}': no socket")),
            }
        }
        _ => Err("usage: ringmaster-http-worker [--fd N]".into()),
    }
}

/// Accepts and answers connections until `stop` is set; never stops in the
/// middle of a request.
fn serve(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => answer(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                eprintln!("ringmaster-http-worker: accept: {e}");
                return;
            }
        }
    }
}

fn answer(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!("pid {}\n", std::process::id());
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}
