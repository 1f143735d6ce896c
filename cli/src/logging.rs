//! Log output for the Ringmaster daemons: one [`init`] call at start, with the
//! format chosen by `--log-format` ([`LogFormat`]) and the verbosity by `-v`.
//!
//! Every format writes to stderr, one line per event:
//!
//! - [`LogFormat::Human`]: a timestamp, the level and the message with its fields;
//!   colours only when stderr is a terminal.
//! - [`LogFormat::Journald`]: for systemd's journal, which timestamps lines itself
//!   and reads a syslog-style priority prefix (`<3>` error, `<4>` warning, `<6>`
//!   info, `<7>` debug and trace) from the start of each line, so that
//!   `journalctl -p warning` keeps working. No timestamp, no colours, no level word:
//!   `<6>nodeagent 0.1.0 listening node=web-1`. A multi-line message gets the
//!   prefix on every line, so the journal files each line at the right priority.
//! - [`LogFormat::Json`]: one JSON object per line (`timestamp`, `level`, `message`
//!   and the event's fields at the top level, `target`, and the current span), for
//!   log shippers.
//! - [`LogFormat::Auto`], the default: `Journald` when stderr *is* the journal, else
//!   `Human`. systemd sets `$JOURNAL_STREAM` to the `DEVICE:INODE` of the stream it
//!   connects to a service's stdout/stderr; the variable alone is not enough (it is
//!   inherited by processes whose stderr went elsewhere), so it must also name the
//!   file that stderr is, as `sd_journal_stream_fd(3)` recommends.
//!
//! What is logged is `$RUST_LOG` when set (an [`EnvFilter`] directive such as
//! `info,ringmaster_agent::supervisor=debug`), else `info`, `debug` with `-v` or
//! `trace` with `-vv`.

use std::fmt::{self, Write as _};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// The journald format when stderr is the journal ($JOURNAL_STREAM), else human.
    #[default]
    Auto,
    /// Timestamp, level and message; colours only on a terminal.
    Human,
    /// Syslog-style priority prefixes (<6>message), no timestamp: for systemd's
    /// journal.
    Journald,
    /// One JSON object per line: timestamp, level, message and fields.
    Json,
}

/// Installs the global logger: `format` on stderr, filtered by `$RUST_LOG` or else
/// by `verbose` (0: info, 1: debug, 2 or more: trace).
///
/// Call it once, first thing in `main`; a second call leaves the first logger in
/// place and says so on stderr.
pub fn init(format: LogFormat, verbose: u8) {
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    let format = resolve(format, journal_stream.as_deref(), stderr_id());
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_directive(verbose)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Auto | LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init(),
        LogFormat::Journald => builder
            .with_ansi(false)
            .event_format(JournaldFormat)
            .try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .try_init(),
    };
    if let Err(e) = installed {
        eprintln!("cannot install the logger: {e}");
    }
}

/// The filter when `$RUST_LOG` is not set.
fn default_directive(verbose: u8) -> &'static str {
    match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    }
}

/// The format to use: `format` unless it is [`LogFormat::Auto`], which is
/// [`LogFormat::Journald`] when `journal_stream` (`$JOURNAL_STREAM`, `DEV:INO` in
/// decimal) names `stderr_id` (stderr's device and inode), else [`LogFormat::Human`].
fn resolve(
    format: LogFormat,
    journal_stream: Option<&str>,
    stderr_id: Option<(u64, u64)>,
) -> LogFormat {
    if format != LogFormat::Auto {
        return format;
    }
    match (journal_stream.and_then(parse_journal_stream), stderr_id) {
        (Some(journal), Some(stderr)) if journal == stderr => LogFormat::Journald,
        _ => LogFormat::Human,
    }
}

/// `DEV:INO` (decimal) as `(dev, ino)`; `None` when malformed.
fn parse_journal_stream(text: &str) -> Option<(u64, u64)> {
    let (dev, ino) = text.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// Device and inode of stderr, as `$JOURNAL_STREAM` would name them; `None` when
/// stderr is closed.
fn stderr_id() -> Option<(u64, u64)> {
    let stat = nix::sys::stat::fstat(std::io::stderr()).ok()?;
    // `dev_t` and `ino_t` are u64 on Linux, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    let id = (stat.st_dev as u64, stat.st_ino as u64);
    Some(id)
}

/// The sd-daemon priority prefix of `level` (`sd-daemon(3)`): syslog's numbers.
fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// One event per line for journald: the priority prefix, then the spans
/// (`name{fields}: `) and the event's message and fields, with no timestamp, level
/// word or colours.
struct JournaldFormat;

impl<S, N> FormatEvent<S, N> for JournaldFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let prefix = priority(*event.metadata().level());
        writer.write_str(prefix)?;
        let mut lines = PrefixLines {
            inner: &mut writer,
            prefix,
        };
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                lines.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(lines, "{{{fields}}}")?;
                    }
                }
                lines.write_str(": ")?;
            }
        }
        ctx.format_fields(Writer::new(&mut lines), event)?;
        writer.write_char('\n')
    }
}

/// Repeats the priority prefix after every newline written through it, so that
/// each line of a multi-line message reaches the journal at the event's priority.
struct PrefixLines<'a, 'w> {
    inner: &'a mut Writer<'w>,
    prefix: &'static str,
}

impl fmt::Write for PrefixLines<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut parts = s.split('\n');
        if let Some(first) = parts.next() {
            self.inner.write_str(first)?;
        }
        for part in parts {
            self.inner.write_char('\n')?;
            self.inner.write_str(self.prefix)?;
            self.inner.write_str(part)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    const STDERR: Option<(u64, u64)> = Some((64769, 1234567));

    #[test]
    fn auto_is_journald_when_journal_stream_names_stderr() {
        assert_eq!(
            resolve(LogFormat::Auto, Some("64769:1234567"), STDERR),
            LogFormat::Journald
        );
    }

    #[test]
    fn auto_is_human_when_journal_stream_names_another_file() {
        for other in ["64769:1234568", "1:1234567", "1:1"] {
            assert_eq!(
                resolve(LogFormat::Auto, Some(other), STDERR),
                LogFormat::Human,
                "JOURNAL_STREAM={other}"
            );
        }
    }

    #[test]
    fn auto_is_human_without_journal_stream_or_stderr() {
        assert_eq!(resolve(LogFormat::Auto, None, STDERR), LogFormat::Human);
        assert_eq!(
            resolve(LogFormat::Auto, Some("64769:1234567"), None),
            LogFormat::Human
        );
    }

    #[test]
    fn auto_is_human_when_journal_stream_is_malformed() {
        for bad in [
            "",
            ":",
            "64769",
            "64769:",
            ":1234567",
            "64769:1234567:1",
            "0x fd01:1234567",
            "-1:1234567",
            "64769;1234567",
            "dev:ino",
        ] {
            assert_eq!(
                resolve(LogFormat::Auto, Some(bad), STDERR),
                LogFormat::Human,
                "JOURNAL_STREAM={bad:?}"
            );
        }
    }

    #[test]
    fn explicit_formats_win_over_journal_stream() {
        for format in [LogFormat::Human, LogFormat::Journald, LogFormat::Json] {
            assert_eq!(resolve(format, Some("64769:1234567"), STDERR), format);
            assert_eq!(resolve(format, Some("1:1"), STDERR), format);
            assert_eq!(resolve(format, None, None), format);
        }
    }

    #[test]
    fn verbosity_sets_the_default_filter() {
        assert_eq!(default_directive(0), "info");
        assert_eq!(default_directive(1), "debug");
        assert_eq!(default_directive(2), "trace");
        assert_eq!(default_directive(9), "trace");
    }

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(priority(Level::ERROR), "<3>");
        assert_eq!(priority(Level::WARN), "<4>");
        assert_eq!(priority(Level::INFO), "<6>");
        assert_eq!(priority(Level::DEBUG), "<7>");
        assert_eq!(priority(Level::TRACE), "<7>");
    }

    #[test]
    fn the_format_is_a_value_enum_with_auto_by_default() {
        use clap::ValueEnum;
        let names: Vec<String> = LogFormat::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(names, ["auto", "human", "journald", "json"]);
        assert_eq!(LogFormat::default(), LogFormat::Auto);
    }

    /// A `MakeWriter` that keeps everything written, for the format tests.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn journald_lines(log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("trace"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(JournaldFormat)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        captured.text()
    }

    #[test]
    fn journald_lines_are_priority_then_message_and_fields() {
        let text = journald_lines(|| {
            tracing::error!("boom");
            tracing::warn!(watcher = "w", "flapping");
            tracing::info!(node = "n1", pid = 42, "listening");
            tracing::debug!("details");
            tracing::trace!("more details");
        });
        assert_eq!(
            text,
            "<3>boom\n<4>flapping watcher=\"w\"\n<6>listening node=\"n1\" pid=42\n\
             <7>details\n<7>more details\n"
        );
    }

    #[test]
    fn journald_lines_show_spans_and_prefix_every_line_of_a_message() {
        let text = journald_lines(|| {
            let span = tracing::info_span!("watcher", name = "w");
            let _entered = span.enter();
            tracing::warn!("first line\nsecond line");
        });
        assert_eq!(text, "<4>watcher{name=\"w\"}: first line\n<4>second line\n");
    }
}
