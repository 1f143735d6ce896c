//! The one place where message bodies are encoded and decoded.
//!
//! Bodies are MessagePack maps (rmp-serde with field names), so that fields can be
//! added without breaking older peers. Decoding is defensive: the size is checked
//! first, and a request that does not decode is decoded again loosely to tell a frame
//! that is not a request at all, a request from another protocol version, an unknown
//! command, and bad arguments to a known command apart, so that each gets its own
//! clear error reply. Sealing with keys wraps these bodies and lives in
//! [`crate::seal`].

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::message::{Command, ErrorKind, ErrorReply, Reply, Request};
use crate::PROTOCOL_VERSION;

/// Largest body accepted, in bytes (1 MiB). Bigger frames are refused unread.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is bigger than the codec accepts.
    #[error("frame of {size} bytes is larger than the {max}-byte limit")]
    TooLarge {
        /// Size of the body.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not what was expected.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode message: {0}")]
pub struct EncodeError(String);

/// Encodes and decodes bodies. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Codec {
    max_frame: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            max_frame: MAX_FRAME_BYTES,
        }
    }
}

impl Codec {
    /// A codec with another size limit.
    pub fn with_max_frame(max_frame: usize) -> Self {
        Codec { max_frame }
    }

    /// The size limit in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Encodes any message.
    pub fn encode<T: Serialize>(&self, message: &T) -> Result<Vec<u8>, EncodeError> {
        rmp_serde::to_vec_named(message).map_err(|e| EncodeError(e.to_string()))
    }

    /// Decodes any message, checking the size first.
    pub fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, DecodeError> {
        if body.len() > self.max_frame {
            return Err(DecodeError::TooLarge {
                size: body.len(),
                max: self.max_frame,
            });
        }
        rmp_serde::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))
    }

    /// Decodes a request on the server side. On failure, returns the reply to send:
    /// it carries the request id when one could be read, and an error that says
    /// whether the frame was too large, not a request, from another protocol version,
    /// an unknown command, or a known command with bad arguments.
    pub fn decode_request(&self, body: &[u8]) -> Result<Request, Box<Reply>> {
        let strict_error = match self.decode::<Request>(body) {
            Ok(request) if request.v == PROTOCOL_VERSION => return Ok(request),
            Ok(request) => {
                return Err(Box::new(version_mismatch(request.id, request.v)));
            }
            Err(DecodeError::TooLarge { size, max }) => {
                return Err(Box::new(error_reply(
                    0,
                    ErrorKind::BadFrame,
                    format!("request of {size} bytes is larger than the {max}-byte limit"),
                )));
            }
            Err(DecodeError::Malformed(e)) => e,
        };
        let Ok(head) = rmp_serde::from_slice::<LooseRequest>(body) else {
            return Err(Box::new(error_reply(
                0,
                ErrorKind::BadFrame,
                format!("frame is not a Ringmaster request ({strict_error})"),
            )));
        };
        let id = head.id.unwrap_or(0);
        match head.v {
            Some(v) if v != PROTOCOL_VERSION => return Err(Box::new(version_mismatch(id, v))),
            None => {
                return Err(Box::new(error_reply(
                    id,
                    ErrorKind::BadFrame,
                    "request has no protocol version field 'v'",
                )))
            }
            Some(_) => {}
        }
        let name = head.command.as_ref().and_then(|c| c.keys().next().cloned());
        let reply = match name {
            None => error_reply(
                id,
                ErrorKind::BadFrame,
                format!("request has no command ({strict_error})"),
            ),
            Some(name) if Command::NAMES.contains(&name.as_str()) => error_reply(
                id,
                ErrorKind::BadArguments,
                format!("bad arguments for '{name}': {strict_error}"),
            ),
            Some(name) => error_reply(
                id,
                ErrorKind::UnknownCommand,
                format!(
                    "unknown command '{name}' (known commands: {})",
                    Command::NAMES.join(", ")
                ),
            ),
        };
        Err(Box::new(reply))
    }
}

/// The loosest shape of a request, used only to explain why a request was refused.
#[derive(Deserialize)]
struct LooseRequest {
    v: Option<u16>,
    id: Option<u64>,
    command: Option<BTreeMap<String, IgnoredAny>>,
}

fn error_reply(id: u64, kind: ErrorKind, message: impl Into<String>) -> Reply {
    Reply {
        v: PROTOCOL_VERSION,
        id,
        result: Err(ErrorReply::new(kind, message)),
    }
}

fn version_mismatch(id: u64, theirs: u16) -> Reply {
    error_reply(
        id,
        ErrorKind::VersionMismatch,
        format!(
            "client speaks protocol version {theirs}, this agent speaks {PROTOCOL_VERSION}; \
             use a nodectl of the same Ringmaster release as the agent"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{OptionValue, Response, Signal};

    fn request(command: Command) -> Request {
        Request {
            v: PROTOCOL_VERSION,
            id: 7,
            no_wait: false,
            command,
        }
    }

    #[test]
    fn every_command_round_trips() {
        let codec = Codec::default();
        let mut options = crate::OptionMap::new();
        options.insert("numprocesses".into(), OptionValue::Int(3));
        options.insert("env".into(), OptionValue::Table(Default::default()));
        let commands = vec![
            Command::Status { name: None },
            Command::Incr {
                name: "w".into(),
                nb: 2,
            },
            Command::Signal {
                name: "w".into(),
                pid: Some(12),
                signal: Signal::Usr1,
                children: true,
            },
            Command::Add {
                name: "w".into(),
                cmd: "sleep 10".into(),
                args: vec![],
                options,
                start: true,
            },
            Command::NumWatchers {},
            Command::Quit {},
        ];
        for command in commands {
            let req = request(command);
            let body = codec.encode(&req).unwrap();
            assert_eq!(codec.decode_request(&body).unwrap(), req);
        }
    }

    #[test]
    fn unknown_command_is_named() {
        #[derive(Serialize)]
        struct Fake {
            v: u16,
            id: u64,
            command: BTreeMap<String, BTreeMap<String, u32>>,
        }
        let mut command = BTreeMap::new();
        command.insert("explode".to_string(), BTreeMap::new());
        let body = rmp_serde::to_vec_named(&Fake {
            v: PROTOCOL_VERSION,
            id: 9,
            command,
        })
        .unwrap();
        let reply = Codec::default().decode_request(&body).unwrap_err();
        assert_eq!(reply.id, 9);
        let err = reply.result.unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnknownCommand);
        assert!(err.message.contains("'explode'"), "{}", err.message);
    }

    #[test]
    fn wrong_argument_type_is_bad_arguments() {
        #[derive(Serialize)]
        struct Incr {
            name: String,
            nb: String,
        }
        #[derive(Serialize)]
        struct Fake {
            v: u16,
            id: u64,
            command: BTreeMap<String, Incr>,
        }
        let mut command = BTreeMap::new();
        command.insert(
            "incr".to_string(),
            Incr {
                name: "w".into(),
                nb: "three".into(),
            },
        );
        let body = rmp_serde::to_vec_named(&Fake {
            v: PROTOCOL_VERSION,
            id: 3,
            command,
        })
        .unwrap();
        let err = Codec::default()
            .decode_request(&body)
            .unwrap_err()
            .result
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadArguments);
        assert!(err.message.contains("'incr'"), "{}", err.message);
    }

    #[test]
    fn garbage_and_oversize_are_bad_frames() {
        let codec = Codec::with_max_frame(16);
        for body in [&b"\xc1\xc1\xc1"[..], b"not msgpack at all", &[0u8; 17][..]] {
            let reply = codec.decode_request(body).unwrap_err();
            assert_eq!(reply.result.unwrap_err().kind, ErrorKind::BadFrame);
        }
    }

    #[test]
    fn other_version_is_refused_with_both_versions() {
        let mut req = request(Command::NumWatchers {});
        req.v = PROTOCOL_VERSION + 1;
        let body = Codec::default().encode(&req).unwrap();
        let err = Codec::default()
            .decode_request(&body)
            .unwrap_err()
            .result
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::VersionMismatch);
        assert!(err.message.contains(&(PROTOCOL_VERSION + 1).to_string()));
    }

    #[test]
    fn replies_round_trip() {
        let codec = Codec::default();
        for result in [
            Ok(Response::Count(4)),
            Ok(Response::Watchers(vec!["a".into()])),
            Err(ErrorReply::new(ErrorKind::NotFound, "no watcher 'x'")),
        ] {
            let reply = Reply {
                v: PROTOCOL_VERSION,
                id: 1,
                result,
            };
            let body = codec.encode(&reply).unwrap();
            assert_eq!(codec.decode::<Reply>(&body).unwrap(), reply);
        }
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!("SIGTERM".parse::<Signal>().unwrap(), Signal::Term);
        assert_eq!("term".parse::<Signal>().unwrap(), Signal::Term);
        assert_eq!("9".parse::<Signal>().unwrap(), Signal::Kill);
        assert!("SIGNOPE".parse::<Signal>().is_err());
    }
}
