//! `stdout` / `stderr` of a watcher in the config: where a stream goes, and for a
//! file, how it is rotated and stamped.
//!
//! ```toml
//! [watchers.web]
//! stdout = "logs/web.log"                  # short form: only where it goes
//! stderr = { to = "logs/web.err", max_bytes = 10_000_000, backup_count = 5, timestamp = true }
//! ```
//!
//! A stream is serialized back to the short form when only `to` differs from the
//! defaults, so that `nodectl options` stays readable; otherwise to a table of `to`
//! and the options that differ from their defaults.

use std::fmt;
use std::path::Path;

use ringmaster_cli::clock::TimeFormat;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Output;

/// The default `time_format` (as Circus).
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// Most backups a rotated file may keep.
pub const MAX_BACKUP_COUNT: u32 = 1000;

/// When a file is rotated by time (Circus's `rotate_when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateWhen {
    /// Every `rotate_interval` seconds (`S`).
    Seconds,
    /// Every `rotate_interval` minutes (`M`).
    Minutes,
    /// Every `rotate_interval` hours (`H`).
    Hours,
    /// Every `rotate_interval` days (`D`), counted from when the file was opened.
    Days,
    /// At midnight (every `rotate_interval` days).
    Midnight,
    /// At the midnight that ends this weekday (0 = Monday, `W0`..`W6`; `W6`
    /// rotates on Sunday night, so that a file holds Monday to Sunday), every
    /// `rotate_interval` weeks.
    Weekday(u8),
}

impl RotateWhen {
    /// Parses Circus's spelling (`S`, `M`, `H`, `D`, `midnight`, `W0`..`W6`, any
    /// case); `None` for an empty string (no time rotation).
    pub fn parse(text: &str) -> Result<Option<RotateWhen>, String> {
        let upper = text.trim().to_ascii_uppercase();
        Ok(Some(match upper.as_str() {
            "" => return Ok(None),
            "S" => RotateWhen::Seconds,
            "M" => RotateWhen::Minutes,
            "H" => RotateWhen::Hours,
            "D" => RotateWhen::Days,
            "MIDNIGHT" => RotateWhen::Midnight,
            w if w.len() == 2 && w.starts_with('W') && (b'0'..=b'6').contains(&w.as_bytes()[1]) => {
                RotateWhen::Weekday(w.as_bytes()[1] - b'0')
            }
            _ => {
                return Err(format!(
                    "unknown rotate_when {text:?}: use S, M, H, D (every rotate_interval \
                     seconds, minutes, hours, days), midnight, W0-W6 (at the end of a weekday, \
                     W0 = Monday), or \"\" for no time rotation"
                ))
            }
        }))
    }
}

impl fmt::Display for RotateWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotateWhen::Seconds => f.write_str("S"),
            RotateWhen::Minutes => f.write_str("M"),
            RotateWhen::Hours => f.write_str("H"),
            RotateWhen::Days => f.write_str("D"),
            RotateWhen::Midnight => f.write_str("midnight"),
            RotateWhen::Weekday(day) => write!(f, "W{day}"),
        }
    }
}

/// One output stream of a watcher's processes (`stdout` or `stderr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Where it goes: `inherit` (the agent's own stream, not seen by the agent),
    /// `null`, `capture` (through the agent to its own stream, kept for `logs`
    /// and published), or a file (through the agent, kept and published too).
    pub to: Output,
    /// Rotate the file when it would grow past this many bytes (0: never).
    pub max_bytes: u64,
    /// Rotated files kept: `FILE.1` (newest) .. `FILE.N`. With 0, a rotation
    /// empties the file instead.
    pub backup_count: u32,
    /// Rotate the file by time as well (`None`: only by size, if at all).
    pub rotate_when: Option<RotateWhen>,
    /// How many `rotate_when` units between two time rotations.
    pub rotate_interval: u32,
    /// Timestamps and rotation times in UTC instead of the host's local time.
    pub utc: bool,
    /// Prefix every line written with `TIME [PID] | `.
    pub timestamp: bool,
    /// Format of that time (`%Y %m %d %H %M %S %f %z %Z %F %T %%`).
    pub time_format: String,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            to: Output::Inherit,
            max_bytes: 0,
            backup_count: 0,
            rotate_when: None,
            rotate_interval: 1,
            utc: false,
            timestamp: false,
            time_format: DEFAULT_TIME_FORMAT.to_string(),
        }
    }
}

impl StreamConfig {
    /// A stream going to `to`, with every option at its default.
    pub fn to(to: Output) -> Self {
        StreamConfig {
            to,
            ..StreamConfig::default()
        }
    }

    /// True when the output goes through the agent (a file or `capture`).
    pub fn through_agent(&self) -> bool {
        matches!(self.to, Output::File(_) | Output::Capture)
    }

    /// The file, when it goes to one.
    pub fn file(&self) -> Option<&Path> {
        match &self.to {
            Output::File(path) => Some(path),
            _ => None,
        }
    }

    /// The parsed `time_format` (checked when the config was read; the default
    /// format otherwise).
    pub fn time_format(&self) -> TimeFormat {
        TimeFormat::parse(&self.time_format).unwrap_or_default()
    }

    /// Resolves a relative file path against `base`.
    pub fn resolve_path(&mut self, base: &Path) {
        if let Output::File(path) = &mut self.to {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    fn only_to(&self) -> bool {
        self == &StreamConfig::to(self.to.clone())
    }

    /// Checks the options together (the single values are checked when parsed).
    fn check(&self) -> Result<(), String> {
        let rotates = self.max_bytes > 0 || self.rotate_when.is_some();
        if rotates && self.file().is_none() {
            return Err(format!(
                "max_bytes and rotate_when rotate a file, but this stream goes to \"{}\": \
                 give a file path in `to`, or drop them",
                self.to
            ));
        }
        if self.timestamp && !self.through_agent() {
            return Err(format!(
                "timestamp applies to output that goes through the agent (a file or \
                 \"capture\"), not to \"{}\"",
                self.to
            ));
        }
        TimeFormat::parse(&self.time_format)?;
        Ok(())
    }
}

impl Serialize for StreamConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.only_to() {
            return self.to.serialize(s);
        }
        let default = StreamConfig::default();
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("to", &self.to)?;
        if self.max_bytes != default.max_bytes {
            map.serialize_entry("max_bytes", &self.max_bytes)?;
        }
        if self.backup_count != default.backup_count {
            map.serialize_entry("backup_count", &self.backup_count)?;
        }
        if let Some(when) = self.rotate_when {
            map.serialize_entry("rotate_when", &when.to_string())?;
        }
        if self.rotate_interval != default.rotate_interval {
            map.serialize_entry("rotate_interval", &self.rotate_interval)?;
        }
        if self.utc != default.utc {
            map.serialize_entry("utc", &self.utc)?;
        }
        if self.timestamp != default.timestamp {
            map.serialize_entry("timestamp", &self.timestamp)?;
        }
        if self.time_format != default.time_format {
            map.serialize_entry("time_format", &self.time_format)?;
        }
        map.end()
    }
}

/// The table form as written, before its values are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    to: Option<Output>,
    file: Option<Output>,
    max_bytes: Option<i64>,
    backup_count: Option<i64>,
    rotate_when: Option<String>,
    rotate_interval: Option<i64>,
    utc: Option<bool>,
    timestamp: Option<bool>,
    time_format: Option<String>,
}

impl Table {
    fn check(self) -> Result<StreamConfig, String> {
        let to = match (self.to, self.file) {
            (Some(to), None) | (None, Some(to)) => to,
            (Some(_), Some(_)) => {
                return Err("give `to` or `file` (the same thing), not both".into());
            }
            (None, None) => {
                return Err(
                    "a stream table needs `to`: \"inherit\", \"null\", \"capture\" \
                            or a file path"
                        .into(),
                )
            }
        };
        let default = StreamConfig::default();
        let max_bytes = match self.max_bytes {
            None => default.max_bytes,
            Some(n) => u64::try_from(n).map_err(|_| {
                format!("max_bytes must be a number of bytes >= 0 (0: no size rotation), not {n}")
            })?,
        };
        let backup_count = match self.backup_count {
            None => default.backup_count,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_BACKUP_COUNT)
                .ok_or_else(|| {
                    format!("backup_count must be from 0 to {MAX_BACKUP_COUNT}, not {n}")
                })?,
        };
        let rotate_interval = match self.rotate_interval {
            None => default.rotate_interval,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| format!("rotate_interval must be from 1 to 1000000, not {n}"))?,
        };
        let rotate_when = match &self.rotate_when {
            None => None,
            Some(text) => RotateWhen::parse(text)?,
        };
        let config = StreamConfig {
            to,
            max_bytes,
            backup_count,
            rotate_when,
            rotate_interval,
            utc: self.utc.unwrap_or(default.utc),
            timestamp: self.timestamp.unwrap_or(default.timestamp),
            time_format: self.time_format.unwrap_or(default.time_format),
        };
        config.check()?;
        Ok(config)
    }
}

impl<'de> Deserialize<'de> for StreamConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StreamVisitor;

        impl<'de> Visitor<'de> for StreamVisitor {
            type Value = StreamConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"inherit\", \"null\", \"capture\", a file path, or a table \
                     { to = ..., max_bytes = 0, backup_count = 0, rotate_when = \"\", \
                     rotate_interval = 1, utc = false, timestamp = false, time_format = \"...\" }",
                )
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<StreamConfig, E> {
                let to = Output::deserialize(de::value::StrDeserializer::<E>::new(text))?;
                Ok(StreamConfig::to(to))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StreamConfig, A::Error> {
                let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                table.check().map_err(de::Error::custom)
            }
        }

        d.deserialize_any(StreamVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Holder {
        stdout: StreamConfig,
    }

    fn parse(text: &str) -> Result<StreamConfig, String> {
        toml::from_str::<Holder>(text)
            .map(|h| h.stdout)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn short_and_table_forms() {
        assert_eq!(parse("stdout = \"capture\"").unwrap().to, Output::Capture);
        assert_eq!(parse("stdout = \"/dev/null\"").unwrap().to, Output::Null);
        let s = parse(
            "stdout = { file = \"a.log\", max_bytes = 100, backup_count = 3, rotate_when = \"w6\", \
             rotate_interval = 2, utc = true, timestamp = true, time_format = \"%T\" }",
        )
        .unwrap();
        assert_eq!(s.to, Output::File("a.log".into()));
        assert_eq!((s.max_bytes, s.backup_count), (100, 3));
        assert_eq!(s.rotate_when, Some(RotateWhen::Weekday(6)));
        assert_eq!(s.rotate_interval, 2);
        assert!(s.utc && s.timestamp);
    }

    #[test]
    fn serializes_short_when_only_to_is_set() {
        let text = toml::to_string(&Holder {
            stdout: StreamConfig::to(Output::File("/x.log".into())),
        })
        .unwrap();
        assert_eq!(text.trim(), "stdout = \"/x.log\"");
        let mut full = StreamConfig::to(Output::File("/x.log".into()));
        full.max_bytes = 5;
        full.rotate_when = Some(RotateWhen::Midnight);
        let text = toml::to_string(&Holder {
            stdout: full.clone(),
        })
        .unwrap();
        assert!(text.contains("max_bytes = 5"), "{text}");
        assert!(!text.contains("backup_count"), "{text}");
        assert_eq!(parse(&text).unwrap(), full);
    }

    #[test]
    fn watcher_options_round_trip_with_stream_tables() {
        use crate::config::{Config, WatcherConfig};
        use ringmaster_protocol::OptionValue;
        let config = Config::parse(
            "[watchers.w]\ncmd = \"x\"\n\
             stdout = { to = \"out.log\", max_bytes = 1000, backup_count = 2, rotate_when = \"midnight\", timestamp = true }\n\
             stderr = \"capture\"\n",
            Some(Path::new("agent.toml")),
            Path::new("/srv"),
        )
        .unwrap();
        let w = &config.watchers["w"];
        assert_eq!(w.stdout.to, Output::File("/srv/out.log".into()));
        assert_eq!(w.stdout.rotate_when, Some(RotateWhen::Midnight));
        let options = w.to_options();
        assert_eq!(options["stderr"], OptionValue::Str("capture".into()));
        assert!(matches!(options["stdout"], OptionValue::Table(_)));
        assert_eq!(&WatcherConfig::from_options(&options).unwrap(), w);
        // The state file keeps watchers as JSON.
        let json = serde_json::to_string(w).unwrap();
        assert_eq!(&serde_json::from_str::<WatcherConfig>(&json).unwrap(), w);
        let plain = WatcherConfig::with_cmd("x").unwrap();
        assert_eq!(
            plain.to_options()["stdout"],
            OptionValue::Str("inherit".into())
        );

        let err = Config::parse(
            "[watchers.w]\ncmd = \"x\"\nstdout = { to = \"a\", max_bytes = -1 }\n",
            Some(Path::new("agent.toml")),
            Path::new("/srv"),
        )
        .unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().contains("max_bytes must be"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse("stdout = { to = \"a\", max_bytes = -1 }").unwrap_err();
        assert!(err.contains("max_bytes must be"), "{err}");
        let err = parse("stdout = { to = \"a\", rotate_when = \"fortnight\" }").unwrap_err();
        assert!(err.contains("unknown rotate_when \"fortnight\""), "{err}");
        let err = parse("stdout = { to = \"a\", rotate_interval = 0 }").unwrap_err();
        assert!(err.contains("rotate_interval"), "{err}");
        let err = parse("stdout = { to = \"a\", time_format = \"%Q\" }").unwrap_err();
        assert!(err.contains("%Q"), "{err}");
        let err = parse("stdout = { to = \"capture\", max_bytes = 10 }").unwrap_err();
        assert!(err.contains("rotate a file"), "{err}");
        let err = parse("stdout = { to = \"inherit\", timestamp = true }").unwrap_err();
        assert!(err.contains("through the agent"), "{err}");
        let err = parse("stdout = { max_bytes = 10 }").unwrap_err();
        assert!(err.contains("needs `to`"), "{err}");
        let err = parse("stdout = { to = \"a\", colour = true }").unwrap_err();
        assert!(err.contains("colour"), "{err}");
        let err = parse("stdout = \"\"").unwrap_err();
        assert!(err.contains("empty output"), "{err}");
    }
}
