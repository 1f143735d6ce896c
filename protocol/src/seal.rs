//! Keys and sealed frames: what makes an agent safe to reach over a network.
//!
//! A pool has keys: random 256-bit secrets, each with an 8-byte id, kept in key
//! files that only their owner may read ([`Key`]). When an agent has keys, every
//! control frame and every published body is *sealed*: encrypted and authenticated
//! with XChaCha20-Poly1305, bound to a timestamp and a random 24-byte nonce. A
//! sealed frame is laid out as
//!
//! ```text
//! "RMS1" | kind (1: Q request, R reply, P publication) | key id (8)
//!        | timestamp (8, ms since the epoch, big-endian) | nonce (24)
//!        | ciphertext | tag (16)
//! ```
//!
//! The 45-byte header travels in clear and is authenticated with the body, together
//! with a context: nothing for a request, the request's nonce for a reply (so a
//! reply answers exactly one request), and the topic for a publication (so a body
//! cannot be moved to another topic). The topic frame itself stays in clear so that
//! ZeroMQ's prefix filtering keeps working.
//!
//! The receiving side refuses a frame that is not sealed, names a key it does not
//! hold, fails authentication, carries a timestamp outside the replay window, or
//! repeats a nonce seen within that window ([`ReplayGuard`]). On the agent the
//! [`Gate`] does all of it before a request is decoded, and also refuses a
//! state-changing command sealed with a read key; every refusal is counted
//! ([`RefusalCounts`]). Clients seal with the first key of their [`Keyring`] and
//! open with whichever key a frame names.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::message::{ErrorKind, ErrorReply, Reply, Request};
use crate::PROTOCOL_VERSION;

/// The first bytes of every sealed frame. A MessagePack request starts with a map
/// byte and a Circus JSON request with `{`, so the three never collide.
pub const MAGIC: [u8; 4] = *b"RMS1";
/// Length of a key id in bytes.
pub const KEY_ID_LEN: usize = 8;
/// Length of a nonce in bytes (XChaCha20).
pub const NONCE_LEN: usize = 24;
const SECRET_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Length of the clear header of a sealed frame.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + KEY_ID_LEN + 8 + NONCE_LEN;
/// Bytes a sealed frame adds to its body.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// How far a frame's timestamp may be from the receiver's clock, by default.
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(30);
/// Most nonces a [`ReplayGuard`] remembers; beyond that new frames are refused
/// until old ones leave the window (about 50 MB at most).
pub const MAX_REMEMBERED: usize = 1 << 20;
const KEY_FILE_TAG: &str = "ringmaster-key-v1";

/// The public name of a key: 8 random bytes, shown as 16 hex digits. It travels in
/// clear in every sealed frame and in logs; it reveals nothing of the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The nonce of a sealed frame.
pub type Nonce = [u8; NONCE_LEN];

/// What a sealed frame carries; part of the authenticated header, so a frame of
/// one kind can never be passed off as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request to an agent's control endpoint.
    Request,
    /// An agent's reply.
    Reply,
    /// A published body (`stat.*`, `event.*`, `log.*`).
    Publication,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Request => b'Q',
            Kind::Reply => b'R',
            Kind::Publication => b'P',
        }
    }

    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            b'Q' => Some(Kind::Request),
            b'R' => Some(Kind::Reply),
            b'P' => Some(Kind::Publication),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Request => "request",
            Kind::Reply => "reply",
            Kind::Publication => "publication",
        })
    }
}

/// A secret key and its id. `Debug` shows the id only.
#[derive(Clone)]
pub struct Key {
    id: KeyId,
    secret: [u8; SECRET_LEN],
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.id == other.id && self.secret == other.secret
    }
}

impl Eq for Key {}

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others may read or write the file.
    #[error(
        "key file {} may be read or written by others (mode {mode:03o}); \
         only its owner may have access: chmod 600 {}",
        path.display(), path.display()
    )]
    Loose {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a key file.
    #[error(
        "{} is not a Ringmaster key file ({reason}); make one with: nodectl keygen FILE",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file to write exists already.
    #[error("{} exists already; a key file is never overwritten: remove it first or choose another name", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be written.
    #[error("cannot write key file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The operating system gave no random bytes.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

impl Key {
    /// A new random key.
    pub fn generate() -> Result<Key, KeyError> {
        let mut id = [0u8; KEY_ID_LEN];
        let mut secret = [0u8; SECRET_LEN];
        fill_random(&mut id).map_err(KeyError::Random)?;
        fill_random(&mut secret).map_err(KeyError::Random)?;
        Ok(Key::from_parts(KeyId(id), secret))
    }

    fn from_parts(id: KeyId, secret: [u8; SECRET_LEN]) -> Key {
        Key {
            id,
            secret,
            cipher: XChaCha20Poly1305::new(&secret.into()),
        }
    }

    /// The key's public id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Parses the text of a key file: comment lines (`#`) and one line
    /// `ringmaster-key-v1 ID SECRET`, both in hex.
    pub fn parse(text: &str) -> Result<Key, String> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines.next().ok_or("it holds no key line")?;
        if lines.next().is_some() {
            return Err("it holds more than one key line".into());
        }
        let mut words = line.split_whitespace();
        let (Some(tag), Some(id), Some(secret), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(format!("expected '{KEY_FILE_TAG} ID SECRET'"));
        };
        if tag != KEY_FILE_TAG {
            return Err(format!(
                "unknown key format '{tag}', expected '{KEY_FILE_TAG}'"
            ));
        }
        let id = unhex::<KEY_ID_LEN>(id).ok_or("the key id is not 16 hex digits")?;
        let secret = unhex::<SECRET_LEN>(secret).ok_or("the secret is not 64 hex digits")?;
        Ok(Key::from_parts(KeyId(id), secret))
    }

    /// The text of this key's file.
    pub fn to_file_text(&self) -> String {
        format!(
            "# Ringmaster key {id}. Keep it secret: whoever holds it can do what the\n\
             # agents that name it allow (admin_key: everything; read_key: read).\n\
             {KEY_FILE_TAG} {id} {secret}\n",
            id = self.id,
            secret = hex(&self.secret)
        )
    }

    /// Reads a key file, refusing one that anyone but its owner may read or write.
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let read_error = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_error)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Loose {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Key::parse(&text).map_err(|reason| KeyError::Malformed {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Writes this key to a new file with mode 0600; an existing file is never
    /// overwritten.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                    path: path.to_path_buf(),
                },
                _ => KeyError::Write {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        file.write_all(self.to_file_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyError::Write {
                path: path.to_path_buf(),
                source,
            })
    }
}

/// The keys a client (or nodemeta) holds. Requests are sealed with the first;
/// frames are opened with whichever key they name; nodemeta seals what it
/// publishes with the last (list a read key last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A keyring of at least one key.
    pub fn new(first: Key, more: impl IntoIterator<Item = Key>) -> Keyring {
        let mut keys = vec![first];
        keys.extend(more);
        Keyring { keys }
    }

    /// Loads every file in `paths`; `None` when there are none.
    pub fn load(paths: &[PathBuf]) -> Result<Option<Keyring>, KeyError> {
        let mut keys = Vec::with_capacity(paths.len());
        for path in paths {
            keys.push(Key::load(path)?);
        }
        let mut keys = keys.into_iter();
        Ok(keys.next().map(|first| Keyring::new(first, keys)))
    }

    /// The key requests are sealed with.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// The key nodemeta seals its own publications with: the last one.
    pub fn publication_key(&self) -> &Key {
        self.keys.last().unwrap_or(&self.keys[0])
    }

    /// The key with this id.
    pub fn get(&self, id: KeyId) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The ids of every key, in order.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id).collect()
    }
}

/// Why a frame was refused before it was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A frame in clear where keys are required.
    #[error(
        "this agent requires a key and the frame is not sealed: pass --key FILE \
         (or $RINGMASTER_KEY), or name the pool's key in the pools file"
    )]
    Unsealed,
    /// A sealed frame where no keys are configured.
    #[error("the frame is sealed but this agent has no keys: drop --key, or give the agent an admin_key")]
    NoKeys,
    /// Too short or not a sealed frame at all.
    #[error("malformed sealed frame: {0}")]
    Malformed(String),
    /// A frame of another kind (e.g. a reply sent as a request).
    #[error("a sealed {got} where a {expected} was expected")]
    WrongKind {
        /// What was expected.
        expected: Kind,
        /// What came.
        got: Kind,
    },
    /// Sealed with a key this end does not hold.
    #[error("sealed with key {0}, which is not one of the keys here (wrong key file?)")]
    UnknownKey(KeyId),
    /// Failed authentication.
    #[error("frame sealed with key {0} failed authentication: it was altered, or sealed with another secret under the same id")]
    Tampered(KeyId),
    /// Timestamp outside the replay window.
    #[error(
        "frame is {:.1}s {} this host's clock, outside the {}s replay window (are the clocks in sync?)",
        skew_ms.unsigned_abs() as f64 / 1000.0,
        if *skew_ms < 0 { "behind" } else { "ahead of" },
        window.as_secs()
    )]
    Expired {
        /// Frame time minus local time, in milliseconds.
        skew_ms: i64,
        /// The window.
        window: Duration,
    },
    /// Sealed before this end started: it may have been seen by an earlier run
    /// whose memory of nonces is gone.
    #[error(
        "frame was sealed {:.1}s before this {} started: a frame from before a restart is a replay \
         (or this host's clock is ahead of the sender's)",
        *early_ms as f64 / 1000.0,
        if *agent { "agent" } else { "subscriber" }
    )]
    BeforeStart {
        /// How long before the start, in milliseconds.
        early_ms: u64,
        /// Whether the refusing end is an agent (else a subscriber).
        agent: bool,
    },
    /// A nonce seen within the window.
    #[error("frame repeats a nonce seen within the replay window: it is a replay")]
    Replayed,
    /// Too many frames within the window to remember them all.
    #[error(
        "more than {MAX_REMEMBERED} sealed frames within the replay window; try again shortly"
    )]
    Busy,
    /// A Circus JSON request on an agent with keys.
    #[error("Circus JSON requests cannot be sealed and this agent has keys: use nodectl with the pool's key")]
    CircusJson,
    /// A state-changing command sealed with a read key.
    #[error("key {key} is a read key: '{command}' changes state and needs the agent's admin key")]
    ReadOnly {
        /// The key used.
        key: KeyId,
        /// The command refused.
        command: &'static str,
    },
}

/// A frame that was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The body.
    pub body: Vec<u8>,
    /// The key that sealed it.
    pub key: KeyId,
    /// When it was sealed, in ms since the epoch.
    pub timestamp_ms: u64,
    /// Its nonce.
    pub nonce: Nonce,
}

/// A frame that was sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedFrame {
    /// The bytes to send.
    pub bytes: Vec<u8>,
    /// Its nonce (a reply to it is bound to it).
    pub nonce: Nonce,
}

/// True when `frame` starts like a sealed frame.
pub fn is_sealed(frame: &[u8]) -> bool {
    frame.starts_with(&MAGIC)
}

/// Seals `body` with `key`, now and with a fresh random nonce.
pub fn seal(key: &Key, kind: Kind, context: &[u8], body: &[u8]) -> Result<SealedFrame, String> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    Ok(SealedFrame {
        bytes: seal_at(key, kind, context, body, now_ms(), nonce),
        nonce,
    })
}

/// Seals `body` with an explicit timestamp and nonce. Use [`seal`]; this exists
/// for tests that need old or repeated frames.
pub fn seal_at(
    key: &Key,
    kind: Kind,
    context: &[u8],
    body: &[u8],
    timestamp_ms: u64,
    nonce: Nonce,
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(OVERHEAD + body.len());
    frame.extend_from_slice(&MAGIC);
    frame.push(kind.byte());
    frame.extend_from_slice(&key.id.0);
    frame.extend_from_slice(&timestamp_ms.to_be_bytes());
    frame.extend_from_slice(&nonce);
    let aad = associated_data(&frame[..HEADER_LEN], context);
    frame.extend_from_slice(body);
    let tag = key.cipher.encrypt_in_place_detached(
        XNonce::from_slice(&nonce),
        &aad,
        &mut frame[HEADER_LEN..],
    );
    match tag {
        Ok(tag) => frame.extend_from_slice(&tag),
        // Only possible for bodies beyond 256 GiB, far above any frame limit;
        // an empty tag makes the frame fail to open rather than travel in clear.
        Err(_) => frame.truncate(HEADER_LEN),
    }
    frame
}

/// The clear header of a sealed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame carries.
    pub kind: Kind,
    /// The key that sealed it.
    pub key: KeyId,
    /// When, in ms since the epoch.
    pub timestamp_ms: u64,
    /// Its nonce.
    pub nonce: Nonce,
}

/// Reads the clear header of a sealed frame.
pub fn header(frame: &[u8]) -> Result<Header, Refusal> {
    if !is_sealed(frame) {
        return Err(Refusal::Unsealed);
    }
    if frame.len() < OVERHEAD {
        return Err(Refusal::Malformed(format!(
            "{} bytes, shorter than the {OVERHEAD}-byte minimum",
            frame.len()
        )));
    }
    let kind = Kind::from_byte(frame[4])
        .ok_or_else(|| Refusal::Malformed(format!("unknown frame kind byte {:#04x}", frame[4])))?;
    let mut key = [0u8; KEY_ID_LEN];
    key.copy_from_slice(&frame[5..13]);
    let mut stamp = [0u8; 8];
    stamp.copy_from_slice(&frame[13..21]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&frame[21..HEADER_LEN]);
    Ok(Header {
        kind,
        key: KeyId(key),
        timestamp_ms: u64::from_be_bytes(stamp),
        nonce,
    })
}

/// Opens a sealed frame of `kind` with whichever of `keys` it names. Checks
/// authenticity only: freshness is the [`ReplayGuard`]'s job.
pub fn open(keys: &Keyring, kind: Kind, context: &[u8], frame: &[u8]) -> Result<Opened, Refusal> {
    let head = header(frame)?;
    let key = keys.get(head.key).ok_or(Refusal::UnknownKey(head.key))?;
    open_with(key, head, kind, context, frame)
}

fn open_with(
    key: &Key,
    head: Header,
    kind: Kind,
    context: &[u8],
    frame: &[u8],
) -> Result<Opened, Refusal> {
    if head.kind != kind {
        return Err(Refusal::WrongKind {
            expected: kind,
            got: head.kind,
        });
    }
    let aad = associated_data(&frame[..HEADER_LEN], context);
    let tag_at = frame.len() - TAG_LEN;
    let mut body = frame[HEADER_LEN..tag_at].to_vec();
    let tag = Tag::from_slice(&frame[tag_at..]);
    key.cipher
        .decrypt_in_place_detached(XNonce::from_slice(&head.nonce), &aad, &mut body, tag)
        .map_err(|_| Refusal::Tampered(head.key))?;
    Ok(Opened {
        body,
        key: head.key,
        timestamp_ms: head.timestamp_ms,
        nonce: head.nonce,
    })
}

fn associated_data(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

/// Refuses frames outside the replay window and nonces seen within it. Nonces are
/// remembered until their frame's timestamp leaves the window.
#[derive(Debug)]
pub struct ReplayGuard {
    window: Duration,
    not_before_ms: u64,
    agent: bool,
    seen: HashSet<u64>,
    expiry: BinaryHeap<Reverse<(u64, u64)>>,
}

impl ReplayGuard {
    /// A guard with this window (frames may be that far behind or ahead).
    pub fn new(window: Duration) -> ReplayGuard {
        ReplayGuard {
            window,
            not_before_ms: 0,
            agent: false,
            seen: HashSet::new(),
            expiry: BinaryHeap::new(),
        }
    }

    /// From now on, refuses every frame sealed before `start_ms`: the nonces a
    /// previous run of this end remembered are gone, so a frame it admitted must
    /// not be admitted again. `agent` says which end refuses, for the message.
    pub fn refusing_before(mut self, start_ms: u64, agent: bool) -> ReplayGuard {
        self.not_before_ms = start_ms;
        self.agent = agent;
        self
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Accepts a frame sealed at `timestamp_ms` with `nonce`, now.
    pub fn check(&mut self, timestamp_ms: u64, nonce: &Nonce) -> Result<(), Refusal> {
        self.check_at(now_ms(), timestamp_ms, nonce)
    }

    /// Accepts a frame sealed at `timestamp_ms` with `nonce` at time `now_ms`.
    pub fn check_at(
        &mut self,
        now_ms: u64,
        timestamp_ms: u64,
        nonce: &Nonce,
    ) -> Result<(), Refusal> {
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let skew_ms = i128::from(timestamp_ms) - i128::from(now_ms);
        if skew_ms.unsigned_abs() > u128::from(window_ms) {
            return Err(Refusal::Expired {
                skew_ms: i64::try_from(skew_ms).unwrap_or(i64::MAX),
                window: self.window,
            });
        }
        if timestamp_ms < self.not_before_ms {
            return Err(Refusal::BeforeStart {
                early_ms: self.not_before_ms - timestamp_ms,
                agent: self.agent,
            });
        }
        while let Some(Reverse((expires, fingerprint))) = self.expiry.peek().copied() {
            if expires > now_ms {
                break;
            }
            self.expiry.pop();
            self.seen.remove(&fingerprint);
        }
        // Nonces are random: their first 8 bytes name them well enough.
        let mut first = [0u8; 8];
        first.copy_from_slice(&nonce[..8]);
        let fingerprint = u64::from_le_bytes(first);
        if self.seen.contains(&fingerprint) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err(Refusal::Busy);
        }
        self.seen.insert(fingerprint);
        self.expiry.push(Reverse((
            timestamp_ms.saturating_add(window_ms),
            fingerprint,
        )));
        Ok(())
    }

    /// How many nonces are remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// What this guard remembers, for the next program image of the same agent
    /// (an upgrade in place): it goes on refusing what this one refused.
    pub fn memory(&self) -> ReplayMemory {
        ReplayMemory {
            not_before_ms: self.not_before_ms,
            seen: self.expiry.iter().map(|Reverse(entry)| *entry).collect(),
        }
    }

    /// Goes on from `memory` instead of refusing everything sealed before now:
    /// the frames it admitted stay refused until they expire.
    pub fn resuming(mut self, memory: &ReplayMemory) -> ReplayGuard {
        self.not_before_ms = memory.not_before_ms;
        self.seen.clear();
        self.expiry.clear();
        for (expires, fingerprint) in memory.seen.iter().take(MAX_REMEMBERED) {
            if self.seen.insert(*fingerprint) {
                self.expiry.push(Reverse((*expires, *fingerprint)));
            }
        }
        self
    }
}

/// A [`ReplayGuard`]'s memory, handed from one program image of an agent to the
/// next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayMemory {
    /// Frames sealed before this (milliseconds since the epoch) are refused.
    pub not_before_ms: u64,
    /// The nonces admitted and not expired: (expiry ms, fingerprint).
    pub seen: Vec<(u64, u64)>,
}

/// What a key may do on an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything (the agent's `admin_key`, or any client of an agent without keys).
    Admin,
    /// Reading only: status, list, stats, nodeinfo and the publish endpoint.
    Read,
}

/// Who sent a request that was let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key it was sealed with (none on an agent without keys).
    pub key: Option<KeyId>,
    /// What that key may do.
    pub role: Role,
    nonce: Option<Nonce>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(key) => write!(
                f,
                "key {key} ({})",
                match self.role {
                    Role::Admin => "admin",
                    Role::Read => "read",
                }
            ),
            None => f.write_str("no key"),
        }
    }
}

/// Frames an agent refused, by reason, since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefusalCounts {
    /// Frames in clear on an agent with keys.
    pub unsealed: u64,
    /// Frames sealed with a key the agent does not hold.
    pub unknown_key: u64,
    /// Frames that failed authentication, were malformed or of the wrong kind.
    pub tampered: u64,
    /// Frames outside the replay window.
    pub expired: u64,
    /// Frames that repeated a nonce.
    pub replayed: u64,
    /// Frames sealed before the agent started (replays of an earlier run's).
    pub before_start: u64,
    /// State-changing commands sealed with a read key.
    pub forbidden: u64,
    /// Circus JSON requests on an agent with keys.
    pub circus_json: u64,
    /// Frames refused because the replay guard was full.
    pub busy: u64,
}

impl RefusalCounts {
    /// Every refusal.
    pub fn total(&self) -> u64 {
        self.unsealed
            + self.unknown_key
            + self.tampered
            + self.expired
            + self.replayed
            + self.before_start
            + self.forbidden
            + self.circus_json
            + self.busy
    }

    fn count(&mut self, refusal: &Refusal) {
        let counter = match refusal {
            Refusal::Unsealed | Refusal::NoKeys => &mut self.unsealed,
            Refusal::UnknownKey(_) => &mut self.unknown_key,
            Refusal::Malformed(_) | Refusal::WrongKind { .. } | Refusal::Tampered(_) => {
                &mut self.tampered
            }
            Refusal::Expired { .. } => &mut self.expired,
            Refusal::Replayed => &mut self.replayed,
            Refusal::BeforeStart { .. } => &mut self.before_start,
            Refusal::Busy => &mut self.busy,
            Refusal::CircusJson => &mut self.circus_json,
            Refusal::ReadOnly { .. } => &mut self.forbidden,
        };
        *counter += 1;
    }
}

/// A request let in by the [`Gate`], with who sent it.
#[derive(Debug)]
pub struct Admitted {
    /// The request.
    pub request: Request,
    /// Who sent it; answer with [`Gate::answer`].
    pub caller: Caller,
}

/// A request the [`Gate`] refused: the frame to send back, and the reason when it
/// was a security refusal (worth logging) rather than a malformed request.
#[derive(Debug)]
pub struct Refused {
    /// The reply frame (sealed when the caller could be identified).
    pub reply: Vec<u8>,
    /// The security reason, counted in [`Gate::refusals`].
    pub refusal: Option<Refusal>,
}

/// The agent's side of the control endpoint: opens, checks and decodes every
/// request and seals every reply. Without keys it only decodes.
#[derive(Debug)]
pub struct Gate {
    codec: Codec,
    keys: Option<GateKeys>,
    refusals: RefusalCounts,
}

#[derive(Debug)]
struct GateKeys {
    admin: Key,
    read: Option<Key>,
    guard: ReplayGuard,
}

impl GateKeys {
    /// The key with this id, and what it may do.
    fn by_id(&self, id: KeyId) -> Option<(&Key, Role)> {
        if id == self.admin.id {
            return Some((&self.admin, Role::Admin));
        }
        self.read
            .as_ref()
            .filter(|read| read.id == id)
            .map(|read| (read, Role::Read))
    }
}

impl Gate {
    /// A gate without keys: every well-formed request is let in as admin.
    pub fn open(codec: Codec) -> Gate {
        Gate {
            codec,
            keys: None,
            refusals: RefusalCounts::default(),
        }
    }

    /// A gate that requires sealed requests: `admin` may do everything, `read`
    /// only read; frames outside `window`, and frames sealed before now (before
    /// this agent started), are refused.
    pub fn keyed(codec: Codec, admin: Key, read: Option<Key>, window: Duration) -> Gate {
        Gate {
            codec,
            keys: Some(GateKeys {
                admin,
                read,
                guard: ReplayGuard::new(window).refusing_before(now_ms(), true),
            }),
            refusals: RefusalCounts::default(),
        }
    }

    /// The replay memory of a keyed gate, for an upgrade in place.
    pub fn replay_memory(&self) -> Option<ReplayMemory> {
        self.keys.as_ref().map(|k| k.guard.memory())
    }

    /// Goes on from the replay memory of the previous program image (see
    /// [`ReplayGuard::resuming`]).
    pub fn resume_replay(&mut self, memory: &ReplayMemory) {
        if let Some(keys) = self.keys.as_mut() {
            let guard = std::mem::replace(&mut keys.guard, ReplayGuard::new(Duration::ZERO));
            keys.guard = guard.resuming(memory);
        }
    }

    /// True when requests must be sealed.
    pub fn is_keyed(&self) -> bool {
        self.keys.is_some()
    }

    /// The key published bodies are sealed with: the read key when there is one
    /// (so read-only subscribers can open them), else the admin key.
    pub fn publication_key(&self) -> Option<&Key> {
        self.keys
            .as_ref()
            .map(|keys| keys.read.as_ref().unwrap_or(&keys.admin))
    }

    /// Frames refused so far, by reason.
    pub fn refusals(&self) -> &RefusalCounts {
        &self.refusals
    }

    /// Opens, checks and decodes one request frame.
    pub fn admit(&mut self, frame: &[u8]) -> Result<Admitted, Refused> {
        let Some(keys) = self.keys.as_mut() else {
            if is_sealed(frame) {
                return Err(self.refuse_in_clear(0, Refusal::NoKeys));
            }
            return match self.codec.decode_request(frame) {
                Ok(request) => Ok(Admitted {
                    request,
                    caller: Caller {
                        key: None,
                        role: Role::Admin,
                        nonce: None,
                    },
                }),
                Err(reply) => Err(self.plain(&reply, None)),
            };
        };
        if frame.first() == Some(&b'{') {
            self.refusals.count(&Refusal::CircusJson);
            return Err(Refused {
                reply: circus_json_error(frame, &Refusal::CircusJson.to_string()),
                refusal: Some(Refusal::CircusJson),
            });
        }
        if !is_sealed(frame) {
            // Answer a plain client in its own terms, with its own request id.
            let id = self.codec.decode_request(frame).map_or(0, |r| r.id);
            return Err(self.refuse_in_clear(id, Refusal::Unsealed));
        }
        let opened = header(frame).and_then(|head| {
            let (key, role) = keys.by_id(head.key).ok_or(Refusal::UnknownKey(head.key))?;
            let opened = open_with(key, head, Kind::Request, &[], frame)?;
            keys.guard.check(opened.timestamp_ms, &opened.nonce)?;
            Ok((opened, role))
        });
        let (opened, role) = match opened {
            Ok(opened) => opened,
            Err(refusal) => return Err(self.refuse_in_clear(0, refusal)),
        };
        let caller = Caller {
            key: Some(opened.key),
            role,
            nonce: Some(opened.nonce),
        };
        let request = match self.codec.decode_request(&opened.body) {
            Ok(request) => request,
            Err(reply) => return Err(self.plain(&reply, Some(&caller))),
        };
        if role == Role::Read && request.command.changes_state() {
            let refusal = Refusal::ReadOnly {
                key: opened.key,
                command: request.command.name(),
            };
            self.refusals.count(&refusal);
            let reply = Reply {
                v: PROTOCOL_VERSION,
                id: request.id,
                result: Err(ErrorReply::new(ErrorKind::Forbidden, refusal.to_string())),
            };
            return Err(Refused {
                reply: self.answer(&caller, &reply),
                refusal: Some(refusal),
            });
        }
        Ok(Admitted { request, caller })
    }

    /// Encodes a reply for `caller`, sealed with the key of its request.
    pub fn answer(&self, caller: &Caller, reply: &Reply) -> Vec<u8> {
        let body = match self.codec.encode(reply) {
            Ok(body) => body,
            Err(e) => {
                let fallback = Reply {
                    v: PROTOCOL_VERSION,
                    id: reply.id,
                    result: Err(ErrorReply::new(ErrorKind::Internal, e.to_string())),
                };
                self.codec.encode(&fallback).unwrap_or_default()
            }
        };
        let key = match (&self.keys, caller.key) {
            (Some(keys), Some(id)) => keys.by_id(id).map(|(key, _)| key),
            _ => None,
        };
        match (key, caller.nonce) {
            (Some(key), Some(nonce)) => match seal(key, Kind::Reply, &nonce, &body) {
                Ok(sealed) => sealed.bytes,
                Err(_) => Vec::new(),
            },
            _ => body,
        }
    }

    fn plain(&self, reply: &Reply, caller: Option<&Caller>) -> Refused {
        Refused {
            reply: match caller {
                Some(caller) => self.answer(caller, reply),
                None => self.codec.encode(reply).unwrap_or_default(),
            },
            refusal: None,
        }
    }

    fn refuse_in_clear(&mut self, id: u64, refusal: Refusal) -> Refused {
        if self.keys.is_some() {
            self.refusals.count(&refusal);
        }
        let reply = Reply {
            v: PROTOCOL_VERSION,
            id,
            result: Err(ErrorReply::new(
                ErrorKind::Unauthorized,
                refusal.to_string(),
            )),
        };
        Refused {
            reply: self.codec.encode(&reply).unwrap_or_default(),
            refusal: Some(refusal),
        }
    }
}

/// A Circus-style error reply (`{"id", "status", "reason", "time"}`) to a JSON
/// request, echoing its id when one can be found.
fn circus_json_error(request: &[u8], reason: &str) -> Vec<u8> {
    let id = circus_request_id(request).unwrap_or_default();
    let time = now_ms() as f64 / 1000.0;
    format!(
        "{{\"id\": \"{}\", \"status\": \"error\", \"reason\": \"{}\", \"time\": {time:.3}}}",
        json_escape(&id),
        json_escape(reason)
    )
    .into_bytes()
}

/// The `"id"` string of a JSON request, found without a JSON parser: Circus ids
/// are hex strings.
fn circus_request_id(request: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(request).ok()?;
    let after = &text[text.find("\"id\"")? + 4..];
    let after = after.trim_start().strip_prefix(':')?.trim_start();
    let value = after.strip_prefix('"')?;
    let id = &value[..value.find('"')?];
    id.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
        .then(|| id.to_string())
}

fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds since the epoch, by this host's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn fill_random(buf: &mut [u8]) -> Result<(), String> {
    getrandom::getrandom(buf).map_err(|e| e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Command, Response};

    fn key() -> Key {
        Key::generate().unwrap()
    }

    fn request(command: Command) -> Vec<u8> {
        Codec::default()
            .encode(&Request {
                v: PROTOCOL_VERSION,
                id: 42,
                no_wait: false,
                command,
            })
            .unwrap()
    }

    fn refusal_of(gate: &mut Gate, frame: &[u8]) -> Refusal {
        gate.admit(frame).unwrap_err().refusal.unwrap()
    }

    #[test]
    fn key_text_round_trips_and_ids_differ() {
        let k = key();
        let parsed = Key::parse(&k.to_file_text()).unwrap();
        assert_eq!(parsed.id(), k.id());
        assert_eq!(parsed.secret, k.secret);
        assert_ne!(key().id(), k.id());
        assert!(!format!("{k:?}").contains(&hex(&k.secret)));
    }

    #[test]
    fn malformed_key_texts_are_refused() {
        for text in [
            "",
            "# only a comment\n",
            "ringmaster-key-v1 00",
            "ringmaster-key-v2 0011223344556677 00",
            "ringmaster-key-v1 zz11223344556677 0000000000000000000000000000000000000000000000000000000000000000",
            "ringmaster-key-v1 0011223344556677 00 extra",
        ] {
            assert!(Key::parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn key_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.key");
        let k = key();
        k.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Key::load(&path).unwrap().id(), k.id());
        assert!(matches!(
            key().write_new(&path),
            Err(KeyError::Exists { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Key::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Loose { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn sealed_frames_open_only_with_their_key_kind_and_context() {
        let k = key();
        let ring = Keyring::new(k.clone(), []);
        let sealed = seal(&k, Kind::Publication, b"stat.a", b"hello").unwrap();
        let opened = open(&ring, Kind::Publication, b"stat.a", &sealed.bytes).unwrap();
        assert_eq!(opened.body, b"hello");
        assert!(!sealed.bytes.windows(5).any(|w| w == b"hello"));
        assert_eq!(
            open(&ring, Kind::Publication, b"stat.b", &sealed.bytes),
            Err(Refusal::Tampered(k.id()))
        );
        assert!(matches!(
            open(&ring, Kind::Request, b"stat.a", &sealed.bytes),
            Err(Refusal::WrongKind { .. })
        ));
        let other = Keyring::new(key(), []);
        assert_eq!(
            open(&other, Kind::Publication, b"stat.a", &sealed.bytes),
            Err(Refusal::UnknownKey(k.id()))
        );
        for at in 0..sealed.bytes.len() {
            let mut bent = sealed.bytes.clone();
            bent[at] ^= 0x01;
            assert!(
                open(&ring, Kind::Publication, b"stat.a", &bent).is_err(),
                "a flipped bit at byte {at} went unnoticed"
            );
        }
    }

    #[test]
    fn replay_guard_refuses_old_future_and_repeated_frames() {
        let mut guard = ReplayGuard::new(Duration::from_secs(30));
        let now = 1_000_000_000;
        assert!(guard.check_at(now, now, &[1; NONCE_LEN]).is_ok());
        assert_eq!(
            guard.check_at(now + 5, now, &[1; NONCE_LEN]),
            Err(Refusal::Replayed)
        );
        assert!(matches!(
            guard.check_at(now, now - 31_000, &[2; NONCE_LEN]),
            Err(Refusal::Expired { .. })
        ));
        assert!(matches!(
            guard.check_at(now, now + 31_000, &[3; NONCE_LEN]),
            Err(Refusal::Expired { .. })
        ));
        // Once the first frame has left the window, its nonce is forgotten.
        assert!(guard
            .check_at(now + 30_001, now + 30_001, &[4; NONCE_LEN])
            .is_ok());
        assert_eq!(guard.remembered(), 1);
    }

    #[test]
    fn replay_guard_refuses_what_was_sealed_before_it_started() {
        let now = 1_000_000_000;
        let mut guard = ReplayGuard::new(Duration::from_secs(30)).refusing_before(now, true);
        assert_eq!(
            guard.check_at(now + 10, now - 1_500, &[1; NONCE_LEN]),
            Err(Refusal::BeforeStart {
                early_ms: 1_500,
                agent: true
            })
        );
        assert!(guard.check_at(now + 10, now, &[1; NONCE_LEN]).is_ok());
    }

    #[test]
    fn a_resumed_guard_refuses_what_its_predecessor_admitted_and_no_more() {
        let start = 1_000_000_000;
        let window = Duration::from_secs(30);
        let mut old = ReplayGuard::new(window).refusing_before(start, true);
        assert!(old
            .check_at(start + 100, start + 50, &[7; NONCE_LEN])
            .is_ok());
        let memory = old.memory();
        // The next image starts later: a frame sealed after the old start and
        // before the new one is still admitted (it was queued during the switch)...
        let mut new = ReplayGuard::new(window)
            .refusing_before(start + 5_000, true)
            .resuming(&memory);
        assert!(new
            .check_at(start + 5_100, start + 4_000, &[8; NONCE_LEN])
            .is_ok());
        // ... one the old image admitted is not, nor one sealed before it started.
        assert_eq!(
            new.check_at(start + 5_100, start + 50, &[7; NONCE_LEN]),
            Err(Refusal::Replayed)
        );
        assert!(matches!(
            new.check_at(start + 5_100, start - 10, &[9; NONCE_LEN]),
            Err(Refusal::BeforeStart { .. })
        ));
        assert_eq!(new.memory().seen.len(), 2);
    }

    /// Spins until the clock has passed `ms` (at most a millisecond).
    fn after(ms: u64) -> u64 {
        loop {
            let now = now_ms();
            if now > ms {
                return now;
            }
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_frame_admitted_before_a_restart_is_refused_after_it() {
        let admin = key();
        let body = request(Command::Incr {
            name: "w".into(),
            nb: 1,
        });
        let early = seal_at(&admin, Kind::Request, &[], &body, now_ms(), [7; NONCE_LEN]);
        let started = after(now_ms());
        let mut first = Gate::keyed(Codec::default(), admin.clone(), None, DEFAULT_REPLAY_WINDOW);
        // Sealed before this gate existed: refused by it.
        let refusal = refusal_of(&mut first, &early);
        assert!(
            matches!(refusal, Refusal::BeforeStart { agent: true, .. }),
            "{refusal}"
        );
        let sealed_at = after(started);
        let captured = seal_at(&admin, Kind::Request, &[], &body, sealed_at, [8; NONCE_LEN]);
        assert!(first.admit(&captured).is_ok());
        // The agent restarts: a new gate, which remembers no nonce, refuses it.
        after(sealed_at);
        let mut second = Gate::keyed(Codec::default(), admin, None, DEFAULT_REPLAY_WINDOW);
        let refusal = refusal_of(&mut second, &captured);
        assert!(matches!(refusal, Refusal::BeforeStart { .. }), "{refusal}");
        assert_eq!(second.refusals().before_start, 1);
    }

    #[test]
    fn gate_admits_sealed_requests_and_seals_the_reply_to_them() {
        let admin = key();
        let mut gate = Gate::keyed(Codec::default(), admin.clone(), None, DEFAULT_REPLAY_WINDOW);
        let sealed = seal(
            &admin,
            Kind::Request,
            &[],
            &request(Command::NumWatchers {}),
        )
        .unwrap();
        let admitted = gate.admit(&sealed.bytes).unwrap();
        assert_eq!(admitted.caller.role, Role::Admin);
        let reply = Reply {
            v: PROTOCOL_VERSION,
            id: 42,
            result: Ok(Response::Count(3)),
        };
        let frame = gate.answer(&admitted.caller, &reply);
        let ring = Keyring::new(admin, []);
        let opened = open(&ring, Kind::Reply, &sealed.nonce, &frame).unwrap();
        assert_eq!(
            Codec::default().decode::<Reply>(&opened.body).unwrap(),
            reply
        );
        // Bound to its request: it does not open as the reply to another one.
        assert!(open(&ring, Kind::Reply, &[0; NONCE_LEN], &frame).is_err());
        // The same frame again is a replay.
        assert_eq!(refusal_of(&mut gate, &sealed.bytes), Refusal::Replayed);
        assert_eq!(gate.refusals().replayed, 1);
    }

    #[test]
    fn gate_refuses_and_counts_every_bad_frame() {
        let admin = key();
        let read = key();
        let mut gate = Gate::keyed(
            Codec::default(),
            admin.clone(),
            Some(read.clone()),
            DEFAULT_REPLAY_WINDOW,
        );
        let body = request(Command::Quit {});
        assert_eq!(refusal_of(&mut gate, &body), Refusal::Unsealed);
        let stranger = seal(&key(), Kind::Request, &[], &body).unwrap();
        assert!(matches!(
            refusal_of(&mut gate, &stranger.bytes),
            Refusal::UnknownKey(_)
        ));
        let mut bent = seal(&admin, Kind::Request, &[], &body).unwrap().bytes;
        let last = bent.len() - 1;
        bent[last] ^= 0x80;
        assert_eq!(refusal_of(&mut gate, &bent), Refusal::Tampered(admin.id()));
        let old = seal_at(
            &admin,
            Kind::Request,
            &[],
            &body,
            now_ms() - 60_000,
            [9; NONCE_LEN],
        );
        assert!(matches!(
            refusal_of(&mut gate, &old),
            Refusal::Expired { .. }
        ));
        let by_reader = seal(&read, Kind::Request, &[], &body).unwrap();
        assert!(matches!(
            refusal_of(&mut gate, &by_reader.bytes),
            Refusal::ReadOnly {
                command: "quit",
                ..
            }
        ));
        let circus = br#"{"id": "abc123", "command": "list", "properties": {}}"#;
        let refused = gate.admit(circus).unwrap_err();
        let text = String::from_utf8(refused.reply).unwrap();
        assert!(
            text.contains("\"id\": \"abc123\"") && text.contains("\"status\": \"error\""),
            "{text}"
        );
        let counts = gate.refusals();
        assert_eq!(
            (
                counts.unsealed,
                counts.unknown_key,
                counts.tampered,
                counts.expired,
                counts.forbidden,
                counts.circus_json
            ),
            (1, 1, 1, 1, 1, 1)
        );
        // A read key may still read.
        let status = seal(
            &read,
            Kind::Request,
            &[],
            &request(Command::Status { name: None }),
        )
        .unwrap();
        assert_eq!(gate.admit(&status.bytes).unwrap().caller.role, Role::Read);
    }

    #[test]
    fn gate_without_keys_refuses_sealed_frames_and_admits_plain_ones() {
        let mut gate = Gate::open(Codec::default());
        let body = request(Command::NumWatchers {});
        assert!(gate.admit(&body).is_ok());
        let sealed = seal(&key(), Kind::Request, &[], &body).unwrap();
        assert_eq!(refusal_of(&mut gate, &sealed.bytes), Refusal::NoKeys);
        assert_eq!(gate.refusals().total(), 0);
    }

    /// Arbitrary bytes and bent frames never panic the gate, the decoder or the
    /// opener (a property test over a fixed set of seeds, run in every CI build).
    #[test]
    fn arbitrary_bytes_never_panic() {
        let admin = key();
        let read = key();
        let ring = Keyring::new(admin.clone(), [read.clone()]);
        let mut gate = Gate::keyed(
            Codec::default(),
            admin.clone(),
            Some(read),
            DEFAULT_REPLAY_WINDOW,
        );
        let mut plain_gate = Gate::open(Codec::default());
        let good = seal(
            &admin,
            Kind::Request,
            &[],
            &request(Command::Status { name: None }),
        )
        .unwrap()
        .bytes;
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for round in 0..20_000 {
            let frame: Vec<u8> = match round % 4 {
                0 => (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect(),
                1 => {
                    let mut f = good.clone();
                    for _ in 0..rng.usize(1..4) {
                        let at = rng.usize(..f.len());
                        f[at] = rng.u8(..);
                    }
                    f
                }
                2 => {
                    let mut f = MAGIC.to_vec();
                    f.extend((0..rng.usize(0..120)).map(|_| rng.u8(..)));
                    f
                }
                _ => {
                    let mut f = good.clone();
                    f.truncate(rng.usize(..f.len()));
                    f
                }
            };
            let _ = gate.admit(&frame);
            let _ = plain_gate.admit(&frame);
            let _ = open(&ring, Kind::Publication, b"stat.x", &frame);
            let _ = Codec::default().decode_request(&frame);
        }
    }
}
