//! Listening sockets the agent binds once and hands to its children.
//!
//! Every `[sockets.NAME]` of the config is bound when the agent starts, before any
//! watcher: TCP (IPv4 or IPv6, `SO_REUSEADDR` always, `SO_REUSEPORT` on request, port
//! 0 read back after `bind`) or unix (a path, its mode set from the socket's
//! `umask`). The agent keeps each socket open for as long as it is configured, so a
//! restart or a reload of the workers never closes the listening port: connections
//! that arrive while no worker accepts wait in the socket's backlog.
//!
//! The descriptors stay close-on-exec in the agent. A watcher *uses* sockets when it
//! sets `use_sockets = true` or names one as `$(circus.sockets.NAME)` (or
//! `$(sockets.NAME)`) in its `cmd`, `args` or `env`; its processes then receive
//! every socket of the agent, on descriptors 3, 4, 5... in the order of the socket
//! names ([`Sockets::handout`]), and the references expand to those numbers. With
//! `use_sockets` they also get systemd's `LISTEN_FDS`, `LISTEN_FDNAMES` and
//! `LISTEN_PID` (the last one is written in the child, see [`crate::child`]).
//!
//! A socket that cannot be bound is an error naming the socket and its address. A
//! unix socket file is removed when its socket is closed (at exit, or when a
//! `reloadconfig` removes or rebinds it), unless another file took its place.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, UnixAddr,
};
use ringmaster_protocol::message::SocketInfo;

use crate::config::{SocketConfig, WatcherConfig};
use crate::spawn::SpawnError;

/// The descriptor a child receives its first socket on (as systemd's
/// `SD_LISTEN_FDS_START`); the next ones follow in socket-name order.
pub const FIRST_CHILD_FD: RawFd = 3;

/// A socket that cannot be bound, with its name and address.
#[derive(Debug, thiserror::Error)]
#[error("socket '{name}' ({address}): {reason}")]
pub struct SocketError {
    /// The socket's name (`[sockets.NAME]`).
    pub name: String,
    /// What it was to listen on.
    pub address: String,
    /// What went wrong and what to do.
    pub reason: String,
}

/// Where a bound socket listens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Endpoint {
    /// A TCP address, with the real port.
    Tcp(SocketAddr),
    /// A unix socket file, with the identity of the file the agent created (so
    /// that it never removes a file someone else put there).
    Unix {
        /// The path.
        path: PathBuf,
        /// Device of the socket file.
        dev: u64,
        /// Inode of the socket file.
        ino: u64,
    },
}

impl Endpoint {
    fn family(&self) -> &'static str {
        match self {
            Endpoint::Tcp(SocketAddr::V4(_)) => "tcp",
            Endpoint::Tcp(SocketAddr::V6(_)) => "tcp6",
            Endpoint::Unix { .. } => "unix",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

/// One listening socket the agent holds.
#[derive(Debug)]
pub struct BoundSocket {
    name: String,
    config: SocketConfig,
    fd: OwnedFd,
    endpoint: Endpoint,
}

/// How the address a config asks for reads in messages, before it is bound.
fn wanted_address(config: &SocketConfig) -> String {
    match (&config.path, config.port) {
        (Some(path), _) => path.display().to_string(),
        (None, Some(port)) => {
            let host = config.host_or_default();
            if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
        (None, None) => "no address".to_string(),
    }
}

/// Resolves the TCP address of `config` (None for a unix socket). IP literals,
/// bracketed or not (`::1`, `[::1]`), need no lookup; names are resolved
/// without blocking the agent's thread, and the first address is used.
pub async fn resolve(name: &str, config: &SocketConfig) -> Result<Option<SocketAddr>, SocketError> {
    let Some(port) = config.port else {
        return Ok(None);
    };
    let host = config.host_or_default();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Some(SocketAddr::new(ip, port)));
    }
    let fail = |reason: String| SocketError {
        name: name.to_string(),
        address: wanted_address(config),
        reason,
    };
    let mut found = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| fail(format!("cannot resolve host '{bare}': {e}")))?;
    found
        .next()
        .map(Some)
        .ok_or_else(|| fail(format!("host '{bare}' has no address")))
}

impl BoundSocket {
    /// Binds socket `name` as `config` says, listening on `resolved` for TCP (see
    /// [`resolve`]).
    pub fn bind(
        name: &str,
        config: &SocketConfig,
        resolved: Option<SocketAddr>,
    ) -> Result<BoundSocket, SocketError> {
        let fail = |reason: String| SocketError {
            name: name.to_string(),
            address: wanted_address(config),
            reason,
        };
        let (fd, endpoint) = match (&config.path, resolved) {
            (Some(path), _) => bind_unix(path, config).map_err(fail)?,
            (None, Some(addr)) => bind_tcp(addr, config).map_err(fail)?,
            (None, None) => return Err(fail("neither a port nor a path to listen on".into())),
        };
        Ok(BoundSocket {
            name: name.to_string(),
            config: config.clone(),
            fd,
            endpoint,
        })
    }

    /// The socket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config it was bound from.
    pub fn config(&self) -> &SocketConfig {
        &self.config
    }

    /// Where it listens (with the real port when 0 was asked for).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The agent's descriptor of the socket (close-on-exec).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A duplicate of the descriptor (close-on-exec), e.g. to wait for a
    /// connection with `tokio::io::unix::AsyncFd` without accepting it. While any
    /// duplicate is open the socket stays open and listening, even once the agent
    /// closed its own descriptor; drop duplicates when [`Sockets::generation`]
    /// changes.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// What `listsockets` shows of it.
    pub fn info(&self, watchers: Vec<String>) -> SocketInfo {
        let (host, port, path) = match &self.endpoint {
            Endpoint::Tcp(addr) => (
                Some(self.config.host_or_default().to_string()),
                Some(addr.port()),
                None,
            ),
            Endpoint::Unix { path, .. } => (None, None, Some(path.display().to_string())),
        };
        SocketInfo {
            name: self.name.clone(),
            fd: self.raw_fd(),
            family: self.endpoint.family().to_string(),
            address: self.endpoint.to_string(),
            host,
            port,
            path,
            backlog: self.config.backlog,
            watchers,
        }
    }

    /// Applies a new config in place when only the backlog, the umask or
    /// `replace` changed (same descriptor, never closed); returns false when the
    /// socket must be bound again.
    pub fn adjust(&mut self, new: &SocketConfig) -> Result<bool, SocketError> {
        let same_address = SocketConfig {
            backlog: new.backlog,
            umask: new.umask,
            replace: new.replace,
            ..self.config.clone()
        } == *new;
        if !same_address {
            return Ok(false);
        }
        let fail = |reason: String| SocketError {
            name: self.name.clone(),
            address: self.endpoint.to_string(),
            reason,
        };
        if new.backlog != self.config.backlog {
            // listen() on a listening socket only changes its backlog.
            socket::listen(&self.fd, backlog(new.backlog))
                .map_err(|e| fail(format!("cannot change the backlog: {e}")))?;
        }
        if new.umask != self.config.umask {
            if let Endpoint::Unix { path, .. } = &self.endpoint {
                set_mode(path, new.umask.0).map_err(fail)?;
            }
        }
        self.config = new.clone();
        Ok(true)
    }
}

/// A socket as an upgrade in place hands it to the next program image (see
/// [`crate::upgrade`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HandedSocket {
    /// Its name.
    pub name: String,
    /// The config it was bound from.
    pub config: SocketConfig,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// Its descriptor, open across the `exec`.
    pub fd: RawFd,
}

impl BoundSocket {
    /// What the next program image needs to take this socket over.
    pub fn handed(&self) -> HandedSocket {
        HandedSocket {
            name: self.name.clone(),
            config: self.config.clone(),
            endpoint: self.endpoint.clone(),
            fd: self.fd.as_raw_fd(),
        }
    }

    /// The socket a previous program image handed over, on descriptor `fd`.
    pub fn taken_over(handed: HandedSocket, fd: OwnedFd) -> BoundSocket {
        BoundSocket {
            name: handed.name,
            config: handed.config,
            fd,
            endpoint: handed.endpoint,
        }
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Endpoint::Unix { path, dev, ino } = &self.endpoint {
            // Only the file this socket created: a file someone put there since
            // (or a socket bound again at the same path) stays.
            let ours = std::fs::symlink_metadata(path)
                .is_ok_and(|meta| meta.dev() == *dev && meta.ino() == *ino);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn backlog(value: u32) -> Backlog {
    let clamped = i32::try_from(value)
        .unwrap_or(i32::MAX)
        .min(nix::libc::SOMAXCONN);
    Backlog::new(clamped).unwrap_or(Backlog::MAXCONN)
}

fn bind_tcp(addr: SocketAddr, config: &SocketConfig) -> Result<(OwnedFd, Endpoint), String> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("cannot create a socket: {e}"))?;
    socket::setsockopt(&fd, socket::sockopt::ReuseAddr, &true)
        .map_err(|e| format!("cannot set SO_REUSEADDR: {e}"))?;
    if config.reuseport {
        socket::setsockopt(&fd, socket::sockopt::ReusePort, &true)
            .map_err(|e| format!("cannot set SO_REUSEPORT: {e}"))?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|e| match e {
        nix::Error::EADDRINUSE => format!(
            "cannot bind: {e} (another program listens there; stop it, pick another port, \
             or set reuseport = true on both)"
        ),
        nix::Error::EADDRNOTAVAIL => {
            format!("cannot bind: {e} (no interface of this host has that address)")
        }
        nix::Error::EACCES => format!("cannot bind: {e} (ports below 1024 need root)"),
        other => format!("cannot bind: {other}"),
    })?;
    socket::listen(&fd, backlog(config.backlog)).map_err(|e| format!("cannot listen: {e}"))?;
    let local: SockaddrStorage = socket::getsockname(fd.as_raw_fd())
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let port = local
        .as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| local.as_sockaddr_in6().map(|a| a.port()))
        .unwrap_or(addr.port());
    Ok((fd, Endpoint::Tcp(SocketAddr::new(addr.ip(), port))))
}

fn bind_unix(path: &Path, config: &SocketConfig) -> Result<(OwnedFd, Endpoint), String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !config.replace {
            return Err(format!(
                "{} exists already: remove it, or set replace = true to let the agent \
                 replace it",
                path.display()
            ));
        }
        if meta.is_dir() {
            return Err(format!("{} is a directory", path.display()));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    }
    let addr = UnixAddr::new(path).map_err(|e| {
        format!(
            "unusable path: {e} (a unix socket path has at most {} bytes)",
            std::mem::size_of::<nix::libc::sockaddr_un>() - 3
        )
    })?;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("cannot create a socket: {e}"))?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(|e| match e {
        nix::Error::ENOENT => format!("cannot bind: {e} (does its directory exist?)"),
        other => format!("cannot bind: {other}"),
    })?;
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| format!("cannot read the socket file: {e}"))?;
    let endpoint = Endpoint::Unix {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    let ready = set_mode(path, config.umask.0).and_then(|()| {
        socket::listen(&fd, backlog(config.backlog)).map_err(|e| format!("cannot listen: {e}"))
    });
    if let Err(reason) = ready {
        let _ = std::fs::remove_file(path);
        return Err(reason);
    }
    Ok((fd, endpoint))
}

/// The mode of a unix socket file: everything its `umask` does not take away.
fn set_mode(path: &Path, umask: u32) -> Result<(), String> {
    let mode = 0o777 & !umask;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set mode {mode:03o} on {}: {e}", path.display()))
}

/// Every socket the agent holds, by name (which is also the order children
/// receive them in).
#[derive(Debug, Default)]
pub struct Sockets {
    bound: BTreeMap<String, BoundSocket>,
    generation: u64,
}

impl Sockets {
    /// The sockets of `configs`: those handed over by the previous program image
    /// (`handed`, with their inherited descriptors) when their config is
    /// unchanged, the others bound anew. A handed-over socket that the config no
    /// longer has, or has changed, is closed.
    pub async fn take_over_or_bind(
        configs: &BTreeMap<String, SocketConfig>,
        handed: Vec<(HandedSocket, OwnedFd)>,
    ) -> Result<Sockets, SocketError> {
        let mut handed: BTreeMap<String, (HandedSocket, OwnedFd)> = handed
            .into_iter()
            .map(|(h, fd)| (h.name.clone(), (h, fd)))
            .collect();
        let mut sockets = Sockets::default();
        for (name, config) in configs {
            let bound = match handed.remove(name) {
                Some((h, fd)) if h.config == *config => BoundSocket::taken_over(h, fd),
                other => {
                    // Changed: the old one goes first (its address may be the same).
                    drop(other);
                    let addr = resolve(name, config).await?;
                    BoundSocket::bind(name, config, addr)?
                }
            };
            sockets.bound.insert(name.clone(), bound);
        }
        Ok(sockets)
    }

    /// Binds every socket of `configs`; the first that fails is the error.
    pub async fn bind_all(
        configs: &BTreeMap<String, SocketConfig>,
    ) -> Result<Sockets, SocketError> {
        let mut sockets = Sockets::default();
        for (name, config) in configs {
            let addr = resolve(name, config).await?;
            let bound = BoundSocket::bind(name, config, addr)?;
            sockets.bound.insert(name.clone(), bound);
        }
        Ok(sockets)
    }

    /// How many sockets.
    pub fn len(&self) -> usize {
        self.bound.len()
    }

    /// True when the agent holds no socket.
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// The socket named `name`.
    pub fn get(&self, name: &str) -> Option<&BoundSocket> {
        self.bound.get(name)
    }

    /// The socket named `name`, to [`BoundSocket::adjust`] it.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut BoundSocket> {
        self.bound.get_mut(name)
    }

    /// Every socket, by name.
    pub fn iter(&self) -> impl Iterator<Item = &BoundSocket> {
        self.bound.values()
    }

    /// Adds or replaces a socket; returns the one it replaced (still open until
    /// dropped).
    pub fn insert(&mut self, socket: BoundSocket) -> Option<BoundSocket> {
        self.generation += 1;
        self.bound.insert(socket.name.clone(), socket)
    }

    /// Takes socket `name` out (it closes when dropped).
    pub fn remove(&mut self, name: &str) -> Option<BoundSocket> {
        let removed = self.bound.remove(name);
        if removed.is_some() {
            self.generation += 1;
        }
        removed
    }

    /// Closes every socket (and removes their unix socket files).
    pub fn close_all(&mut self) {
        if !self.bound.is_empty() {
            self.generation += 1;
        }
        self.bound.clear();
    }

    /// Bumped whenever a socket is added, replaced or removed: whoever keeps a
    /// duplicate of a descriptor ([`BoundSocket::try_clone_fd`]) drops it when
    /// this changes, or the old socket keeps listening.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Socket `name`, matched exactly, else ignoring case; with its index in the
    /// order children receive them.
    fn lookup(&self, name: &str) -> Option<(usize, &BoundSocket)> {
        let exact = self.bound.keys().position(|n| n == name);
        let index =
            exact.or_else(|| self.bound.keys().position(|n| n.eq_ignore_ascii_case(name)))?;
        self.bound.values().nth(index).map(|s| (index, s))
    }

    /// The names of the sockets watcher `config` uses: every socket with
    /// `use_sockets`, else those its `cmd`, `args` and `env` name (that exist).
    pub fn used_by(&self, config: &WatcherConfig) -> Vec<String> {
        if config.use_sockets {
            return self.bound.keys().cloned().collect();
        }
        let mut names: Vec<String> = references(config)
            .iter()
            .filter_map(|r| self.lookup(r).map(|(_, s)| s.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// What `listsockets` shows: every socket with the watchers that use it.
    pub fn info<'a>(
        &self,
        watchers: impl IntoIterator<Item = (&'a String, &'a WatcherConfig)>,
    ) -> Vec<SocketInfo> {
        let mut users: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (watcher, config) in watchers {
            for socket in self.used_by(config) {
                if let Some((_, bound)) = self.lookup(&socket) {
                    users
                        .entry(bound.name.as_str())
                        .or_default()
                        .push(watcher.clone());
                }
            }
        }
        self.bound
            .values()
            .map(|s| s.info(users.remove(s.name.as_str()).unwrap_or_default()))
            .collect()
    }

    /// What the processes of watcher `config` receive; None when it uses no
    /// socket (its processes then start without any set-up of descriptors).
    pub fn handout(&self, config: &WatcherConfig) -> Option<Handout<'_>> {
        if config.use_sockets || !references(config).is_empty() {
            Some(Handout {
                sockets: self,
                systemd: config.use_sockets,
            })
        } else {
            None
        }
    }
}

/// The sockets the processes of one watcher receive: all of the agent's, on
/// descriptors [`FIRST_CHILD_FD`], +1, ... in name order.
#[derive(Debug, Clone, Copy)]
pub struct Handout<'a> {
    sockets: &'a Sockets,
    systemd: bool,
}

impl Handout<'_> {
    /// The agent's descriptors, in the order of the child's numbers.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.sockets.bound.values().map(|s| s.fd.as_fd()).collect()
    }

    /// Socket names, in the order of the child's numbers.
    pub fn names(&self) -> Vec<&str> {
        self.sockets.bound.keys().map(String::as_str).collect()
    }

    /// True when the child gets systemd's `LISTEN_*` variables (`use_sockets`);
    /// `LISTEN_PID` can only be written in the child, after fork.
    pub fn systemd(&self) -> bool {
        self.systemd
    }

    /// Adds `LISTEN_FDS` and `LISTEN_FDNAMES` to `env` (with `use_sockets`).
    pub fn add_listen_env(&self, env: &mut BTreeMap<String, String>) {
        if self.systemd {
            env.insert("LISTEN_FDS".into(), self.sockets.len().to_string());
            env.insert("LISTEN_FDNAMES".into(), self.names().join(":"));
        }
    }

    /// Replaces `$(circus.sockets.NAME)` and `$(sockets.NAME)` (any case) in
    /// `text` with the descriptor number the child receives socket NAME on.
    pub fn expand(&self, text: &str) -> Result<String, SpawnError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some((start, end, name)) = next_reference(rest) {
            out.push_str(&rest[..start]);
            let Some((index, _)) = self.sockets.lookup(name) else {
                return Err(SpawnError::UnknownSocket {
                    name: name.to_string(),
                    known: if self.sockets.is_empty() {
                        "the agent has none; add a [sockets.NAME] table".into()
                    } else {
                        let names = self.names().join(", ");
                        format!("the agent has: {names}")
                    },
                });
            };
            let number = FIRST_CHILD_FD + RawFd::try_from(index).unwrap_or(RawFd::MAX - 3);
            out.push_str(&number.to_string());
            rest = &rest[end..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The first `$(circus.sockets.NAME)` or `$(sockets.NAME)` in `text`: where it
/// starts, where it ends (exclusive) and NAME.
fn next_reference(text: &str) -> Option<(usize, usize, &str)> {
    let mut from = 0;
    while let Some(found) = text[from..].find("$(") {
        let start = from + found;
        let key_start = start + 2;
        let close = text[key_start..].find(')')?;
        let key = &text[key_start..key_start + close];
        let lower = key.to_ascii_lowercase();
        let short = lower.strip_prefix("circus.").unwrap_or(&lower);
        if short.starts_with("sockets.") {
            let name = &key[key.len() - (short.len() - "sockets.".len())..];
            return Some((start, key_start + close + 1, name));
        }
        from = key_start;
    }
    None
}

/// Socket names a watcher's `cmd`, `args` and `env` refer to, as written.
pub fn references(config: &WatcherConfig) -> Vec<&str> {
    let texts = std::iter::once(config.cmd.as_str())
        .chain(config.args.0.iter().map(String::as_str))
        .chain(config.env.values().map(String::as_str));
    let mut names = Vec::new();
    for text in texts {
        let mut rest = text;
        while let Some((_, end, name)) = next_reference(rest) {
            names.push(name);
            rest = &rest[end..];
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Umask;

    fn tcp(host: Option<&str>, port: u16) -> SocketConfig {
        SocketConfig {
            host: host.map(String::from),
            port: Some(port),
            path: None,
            backlog: 2048,
            reuseport: false,
            umask: Umask(0o010),
            replace: false,
        }
    }

    fn unix(path: &Path) -> SocketConfig {
        SocketConfig {
            host: None,
            port: None,
            path: Some(path.to_path_buf()),
            ..tcp(None, 0)
        }
    }

    fn watcher(cmd: &str) -> WatcherConfig {
        WatcherConfig::with_cmd(cmd).unwrap()
    }

    #[tokio::test]
    async fn binds_tcp_with_the_real_port_and_resolves_hosts() {
        let config = tcp(None, 0);
        let addr = resolve("web", &config).await.unwrap();
        let bound = BoundSocket::bind("web", &config, addr).unwrap();
        let Endpoint::Tcp(real) = bound.endpoint() else {
            panic!("not tcp");
        };
        assert_ne!(real.port(), 0);
        assert_eq!(real.ip().to_string(), "127.0.0.1");
        std::net::TcpStream::connect(real).unwrap();
        let info = bound.info(vec![]);
        assert_eq!(
            (info.family.as_str(), info.port),
            ("tcp", Some(real.port()))
        );

        // The same port again: a clear error naming the socket and the address.
        let again = tcp(Some("127.0.0.1"), real.port());
        let err = BoundSocket::bind("again", &again, Some(*real)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("'again'") && text.contains(&real.to_string()),
            "{text}"
        );
        // ... unless both ask for SO_REUSEPORT.
        let shared = SocketConfig {
            reuseport: true,
            ..tcp(None, 0)
        };
        let first = BoundSocket::bind("a", &shared, resolve("a", &shared).await.unwrap()).unwrap();
        let Endpoint::Tcp(at) = first.endpoint().clone() else {
            panic!("not tcp");
        };
        let same = SocketConfig {
            port: Some(at.port()),
            ..shared
        };
        BoundSocket::bind("b", &same, Some(at)).unwrap();

        assert_eq!(
            resolve("x", &tcp(Some("[::1]"), 80)).await.unwrap(),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            resolve("x", &tcp(Some("localhost"), 80))
                .await
                .unwrap()
                .map(|a| a.port()),
            Some(80)
        );
        assert_eq!(resolve("x", &unix(Path::new("/x"))).await.unwrap(), None);
    }

    #[test]
    fn unix_sockets_take_their_mode_and_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        let config = SocketConfig {
            umask: Umask(0o077),
            ..unix(&path)
        };
        let mut bound = BoundSocket::bind("app", &config, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // The mode and the backlog change in place.
        let wider = SocketConfig {
            umask: Umask(0o002),
            backlog: 10,
            ..config.clone()
        };
        let fd = bound.raw_fd();
        assert!(bound.adjust(&wider).unwrap());
        assert_eq!(bound.raw_fd(), fd);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o775);
        // Another path is not an in-place change.
        assert!(!bound.adjust(&unix(&dir.path().join("other.sock"))).unwrap());

        // A second socket on the same path needs replace.
        let err = BoundSocket::bind("dup", &config, None).unwrap_err();
        assert!(err.to_string().contains("replace = true"), "{err}");
        let replacing = SocketConfig {
            replace: true,
            ..config.clone()
        };
        let second = BoundSocket::bind("dup", &replacing, None).unwrap();
        // The first one's drop leaves the second one's file alone.
        drop(bound);
        assert!(path.exists());
        drop(second);
        assert!(!path.exists());

        let missing = unix(&dir.path().join("no/such/dir.sock"));
        let err = BoundSocket::bind("lost", &missing, None).unwrap_err();
        assert!(err.to_string().contains("directory exist"), "{err}");
    }

    #[tokio::test]
    async fn references_expand_to_child_descriptors() {
        let configs = BTreeMap::from([
            ("web".to_string(), tcp(None, 0)),
            ("alpha".to_string(), tcp(None, 0)),
        ]);
        let sockets = Sockets::bind_all(&configs).await.unwrap();
        let plain = watcher("sleep 10 $(wid)");
        assert!(sockets.handout(&plain).is_none());
        assert!(sockets.used_by(&plain).is_empty());

        let user = watcher("srv --fd $(circus.sockets.web) $(SOCKETS.Alpha) $(circus.env.X)");
        assert_eq!(references(&user), vec!["web", "Alpha"]);
        assert_eq!(sockets.used_by(&user), vec!["alpha", "web"]);
        let handout = sockets.handout(&user).unwrap();
        assert!(!handout.systemd());
        assert_eq!(
            handout.expand(&user.cmd).unwrap(),
            "srv --fd 4 3 $(circus.env.X)"
        );
        let err = handout.expand("$(circus.sockets.nope)").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("'nope'") && text.contains("alpha, web"),
            "{text}"
        );

        let mut systemd = watcher("srv");
        systemd.use_sockets = true;
        let handout = sockets.handout(&systemd).unwrap();
        let mut env = BTreeMap::new();
        handout.add_listen_env(&mut env);
        assert_eq!(env["LISTEN_FDS"], "2");
        assert_eq!(env["LISTEN_FDNAMES"], "alpha:web");
        assert_eq!(handout.fds().len(), 2);

        let watchers = BTreeMap::from([
            ("sd".to_string(), systemd.clone()),
            ("u".to_string(), user.clone()),
            ("p".to_string(), plain.clone()),
        ]);
        let info = sockets.info(&watchers);
        assert_eq!(info[0].name, "alpha");
        assert_eq!(info[0].watchers, vec!["sd", "u"]);
    }
}
