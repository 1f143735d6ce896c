//! Listening sockets that the caller owns and libzmq only serves ([`Listener`]).
//!
//! libzmq normally makes the listening socket of a `bind` itself, and closes it
//! (and removes an `ipc://` socket file) when the socket is closed. An agent that
//! re-executes itself in place must keep its endpoints open across the `exec`, so
//! that a client connecting meanwhile waits in the kernel's accept queue instead of
//! being refused. So the agent makes the listening socket here, hands libzmq a
//! duplicate of it (`ZMQ_USE_FD`), and keeps the original: closing or unbinding
//! the libzmq socket then closes only the duplicate, and the original can be
//! inherited by the next program image, which binds it again the same way.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::{prepare_bind, Limits, TransportError};

/// A listening TCP or unix socket for one endpoint.
#[derive(Debug)]
pub struct Listener {
    endpoint: String,
    fd: OwnedFd,
    /// The socket file, removed when the listener is dropped if it is still
    /// the one this listener made (device and inode): a file an agent started
    /// meanwhile bound at the same path is left alone.
    path: Option<(PathBuf, u64, u64)>,
}

impl Listener {
    /// Makes the listening socket of `endpoint` (`tcp://HOST:PORT`, `*` for every
    /// address, port 0 for any; `ipc://PATH`, `@NAME` for the abstract namespace).
    /// A stale ipc socket file is removed first and the file gets `limits`' mode
    /// and group. The endpoint it reports has the real port.
    pub fn open(endpoint: &str, limits: &Limits) -> Result<Listener, TransportError> {
        let bind_error = |reason: String| TransportError::Bind {
            endpoint: endpoint.to_string(),
            reason,
        };
        if let Some(path) = endpoint.strip_prefix("ipc://") {
            if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .map_err(|e| bind_error(e.to_string()))?;
                let listener =
                    UnixListener::bind_addr(&address).map_err(|e| bind_error(e.to_string()))?;
                return Self::finish(endpoint.to_string(), listener.into(), None)
                    .map_err(|e| bind_error(e.to_string()));
            }
            prepare_bind(endpoint)?;
            let listener = UnixListener::bind(path).map_err(|e| bind_error(e.to_string()))?;
            set_access(path, limits).map_err(bind_error)?;
            return Self::finish(endpoint.to_string(), listener.into(), Some(path.into()))
                .map_err(|e| bind_error(e.to_string()));
        }
        let Some(address) = endpoint.strip_prefix("tcp://") else {
            return Err(bind_error(
                "only tcp:// and ipc:// endpoints can be handed over".to_string(),
            ));
        };
        let (host, port) = split_host_port(address).ok_or_else(|| {
            bind_error("expected tcp://HOST:PORT (HOST may be *, PORT may be 0)".to_string())
        })?;
        let listener =
            std::net::TcpListener::bind((host, port)).map_err(|e| bind_error(format!("{e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| bind_error(e.to_string()))?;
        Self::finish(format!("tcp://{local}"), listener.into(), None)
            .map_err(|e| bind_error(e.to_string()))
    }

    /// A listener inherited from the program image before this one, under
    /// `endpoint` (as [`Listener::endpoint`] reported it there).
    pub fn inherited(endpoint: String, fd: OwnedFd) -> io::Result<Listener> {
        let path = endpoint
            .strip_prefix("ipc://")
            .filter(|p| !p.starts_with('@'))
            .map(PathBuf::from);
        Self::finish(endpoint, fd, path)
    }

    fn finish(endpoint: String, fd: OwnedFd, path: Option<PathBuf>) -> io::Result<Listener> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
        use std::os::unix::fs::MetadataExt;
        let path = match path {
            Some(path) => {
                let meta = std::fs::symlink_metadata(&path)?;
                Some((path, meta.dev(), meta.ino()))
            }
            None => None,
        };
        // libzmq's I/O thread accepts when the socket is readable: it must never
        // block there. Close-on-exec until someone hands it over on purpose.
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        fcntl(
            &fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
        Ok(Listener { endpoint, fd, path })
    }

    /// The endpoint, with the real port.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The socket file of an `ipc://` endpoint.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_ref().map(|(path, _, _)| path.as_path())
    }

    /// A duplicate for libzmq, which closes it with its socket.
    pub(super) fn duplicate(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Some((path, dev, ino)) = &self.path {
            let ours = std::fs::symlink_metadata(path)
                .is_ok_and(|meta| meta.dev() == *dev && meta.ino() == *ino);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Makes `socket` serve the listening descriptor `fd` at its next `bind`
/// (`ZMQ_USE_FD`, which the `zmq` crate does not expose). libzmq owns `fd` from
/// then on and closes it with the socket.
#[allow(unsafe_code)]
pub(super) fn use_fd(socket: &mut zmq::Socket, fd: OwnedFd) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let raw: std::os::raw::c_int = fd.as_raw_fd();
    // SAFETY: `socket.as_mut_ptr()` is a live libzmq socket (we hold it mutably),
    // and the option value points to an `int` of the size passed, which libzmq
    // copies before it returns.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            zmq_sys::ZMQ_USE_FD as std::os::raw::c_int,
            std::ptr::addr_of!(raw).cast(),
            std::mem::size_of::<std::os::raw::c_int>(),
        )
    };
    if rc != 0 {
        // Not taken: `fd` is closed here.
        return Err(io::Error::last_os_error());
    }
    // libzmq closes it with the socket.
    let _ = fd.into_raw_fd();
    Ok(())
}

/// Gives the socket file at `path` the group and mode `limits` ask for.
pub(super) fn set_access(path: &str, limits: &Limits) -> Result<(), String> {
    if let Some(gid) = limits.ipc_group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| format!("cannot give {path} to group {gid}: {e}"))?;
    }
    if let Some(mode) = limits.ipc_mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set the mode of {path}: {e}"))?;
    }
    Ok(())
}

/// `HOST:PORT` with `*` for every IPv4 address and `[v6]` brackets removed.
fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = match host {
        "*" => "0.0.0.0",
        h => h
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h),
    };
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(split_host_port("127.0.0.1:5555"), Some(("127.0.0.1", 5555)));
        assert_eq!(split_host_port("*:0"), Some(("0.0.0.0", 0)));
        assert_eq!(split_host_port("[::1]:7"), Some(("::1", 7)));
        assert_eq!(split_host_port("localhost:80"), Some(("localhost", 80)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("h:port"), None);
    }

    #[test]
    fn tcp_listener_reports_its_port_and_is_non_blocking() {
        let listener = match Listener::open("tcp://127.0.0.1:0", &Limits::default()) {
            Ok(listener) => listener,
            Err(e) => panic!("open: {e}"),
        };
        assert!(listener.endpoint().starts_with("tcp://127.0.0.1:"));
        assert!(!listener.endpoint().ends_with(":0"));
        let flags = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_GETFL);
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags.unwrap_or(0));
        assert!(flags.contains(nix::fcntl::OFlag::O_NONBLOCK));
    }

    #[test]
    fn ipc_listener_gets_its_mode_and_removes_its_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("control.sock");
        let endpoint = format!("ipc://{}", path.display());
        let limits = Limits {
            ipc_mode: Some(0o600),
            ..Limits::default()
        };
        let listener = Listener::open(&endpoint, &limits).unwrap_or_else(|e| panic!("open: {e}"));
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        assert_eq!(listener.path(), Some(path.as_path()));
        drop(listener);
        assert!(!path.exists(), "the socket file outlived its listener");
    }
}
