//! `nodectl logs`: a watcher's recent output lines, then (with `--follow`) new
//! ones as the agent publishes them on `log.<node>.<watcher>.<stream>`.
//!
//! Following neither loses nor repeats a line at the seam between the two: the
//! subscription is made first, then `logs` answers with the recent lines and,
//! for each stream, the number the next line will get ([`LogCursor`]). Published
//! lines below that number were printed already and are skipped. When the first
//! published batch of a stream starts above it (the subscription took effect a
//! moment after `logs` answered), the lines in between are asked for again and
//! printed from what the agent keeps. Any gap after that (lines the agent dropped
//! or pub/sub lost) is reported on stderr with its size, never silently.
//!
//! Only output that goes through the agent (a file, or `capture`) is seen.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use ringmaster_cli::clock::{TimeFormat, Zone};
use ringmaster_protocol::logs::{LogBatch, LogCursor, LogLine, LogReport, LogStream, LOG_PREFIX};
use ringmaster_protocol::seal::Keyring;
use ringmaster_protocol::transport::{Client, ClientError, Subscriber, TransportError};
use ringmaster_protocol::{Codec, Command, Response};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::runtime;

/// The most lines an agent keeps per watcher; asked for when filling a gap.
const KEPT_LINES: u32 = 1000;

/// `--stream` of `nodectl logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamArg {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl From<StreamArg> for LogStream {
    fn from(arg: StreamArg) -> LogStream {
        match arg {
            StreamArg::Stdout => LogStream::Stdout,
            StreamArg::Stderr => LogStream::Stderr,
        }
    }
}

/// What `nodectl logs` was asked.
#[derive(Debug, Clone)]
pub struct LogsRequest {
    /// The watcher.
    pub watcher: String,
    /// How many recent lines to print first.
    pub lines: u32,
    /// Keep printing new lines until interrupted.
    pub follow: bool,
    /// Only this stream.
    pub stream: Option<LogStream>,
    /// JSON: the report as a whole, or one object per line when following.
    pub json: bool,
}

/// Why printing stopped early.
enum Stop {
    /// stdout is closed (`| head`): not an error.
    Closed,
    /// An error, already reported, with the exit code to return.
    Failed(ExitCode),
}

/// Runs `nodectl logs` against the agent at `endpoint`.
pub fn run(
    endpoint: &str,
    keys: Option<Keyring>,
    timeout: Duration,
    request: LogsRequest,
) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let mut client = Client::new(endpoint, timeout).with_keys(keys.clone());
        let result = if request.follow {
            follow(&mut client, keys, timeout, &request).await
        } else {
            once(&mut client, &request).await
        };
        match result {
            Ok(()) | Err(Stop::Closed) => ExitCode::SUCCESS,
            Err(Stop::Failed(code)) => code,
        }
    })
}

/// Reports a failed call as `nodectl` does, with its exit code.
fn failed(error: ClientError, json: bool) -> Stop {
    let (code, value) = match &error {
        ClientError::Remote(e) => (3, serde_json::json!({ "error": e })),
        ClientError::Transport(e) => (
            1,
            serde_json::json!({ "error": { "kind": "unreachable", "message": e.to_string() } }),
        ),
    };
    if json {
        crate::output::print_json(&value);
    } else {
        match error {
            ClientError::Remote(e) => eprintln!("nodectl: {}", e.message),
            ClientError::Transport(e) => eprintln!("nodectl: {e}"),
        }
    }
    Stop::Failed(ExitCode::from(code))
}

async fn ask(
    client: &mut Client,
    request: &LogsRequest,
    lines: u32,
    stream: Option<LogStream>,
) -> Result<LogReport, Stop> {
    match client
        .call(Command::Logs {
            name: request.watcher.clone(),
            lines,
            stream,
        })
        .await
    {
        Ok(Response::Logs(report)) => Ok(report),
        Ok(other) => {
            eprintln!("nodectl: unexpected answer to logs: {other:?}");
            Err(Stop::Failed(ExitCode::from(3)))
        }
        Err(e) => Err(failed(e, request.json)),
    }
}

/// `logs` without `--follow`: the recent lines, once.
async fn once(client: &mut Client, request: &LogsRequest) -> Result<(), Stop> {
    let report = ask(client, request, request.lines, request.stream).await?;
    if request.json {
        crate::output::print_json(&report);
        return Ok(());
    }
    let mut printer = Printer::new(&request.watcher, false);
    printer.lines(&report.lines)?;
    note_dropped(&report);
    Ok(())
}

fn note_dropped(report: &LogReport) {
    if report.dropped_bytes > 0 {
        eprintln!(
            "nodectl: the agent dropped {} byte(s) of '{}' output since it started (it could \
             not publish or copy them fast enough; output files got everything)",
            report.dropped_bytes, report.watcher
        );
    }
}

/// `logs --follow`: subscribe, print the recent lines, then every new one.
async fn follow(
    client: &mut Client,
    keys: Option<Keyring>,
    timeout: Duration,
    request: &LogsRequest,
) -> Result<(), Stop> {
    let (node, pubsub) = match client.call(Command::NodeInfo {}).await {
        Ok(Response::NodeInfo(info)) => (info.node, info.pubsub),
        Ok(other) => {
            eprintln!("nodectl: unexpected answer to nodeinfo: {other:?}");
            return Err(Stop::Failed(ExitCode::from(3)));
        }
        Err(e) => return Err(failed(e, request.json)),
    };
    let topic = match request.stream {
        Some(stream) => format!("{LOG_PREFIX}.{node}.{}.{stream}", request.watcher),
        None => format!("{LOG_PREFIX}.{node}.{}.", request.watcher),
    };
    let subscriber = match Subscriber::connect(&pubsub, &[&topic], timeout).await {
        Ok(subscriber) => subscriber.with_keys(keys),
        Err(e) => {
            eprintln!("nodectl: {e}");
            return Err(Stop::Failed(ExitCode::from(1)));
        }
    };
    let (tx, mut batches) = mpsc::channel(1024);
    tokio::spawn(forward(subscriber, tx));

    let report = ask(client, request, request.lines, request.stream).await?;
    let mut printer = Printer::new(&request.watcher, request.json);
    printer.lines(&report.lines)?;
    note_dropped(&report);
    let mut follower = Follower {
        run: report.run,
        cursor: report.next,
        synced: [false, false],
    };
    loop {
        let batch = tokio::select! {
            batch = batches.recv() => batch,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(batch) = batch else {
            eprintln!("nodectl: the subscription to {pubsub} ended");
            return Err(Stop::Failed(ExitCode::from(1)));
        };
        if batch.watcher != request.watcher {
            continue;
        }
        follower.take(batch, client, request, &mut printer).await?;
    }
}

/// Where following stands: the agent's run, the next line expected of each
/// stream, and whether each stream's first batch has been seen.
struct Follower {
    run: u64,
    cursor: LogCursor,
    synced: [bool; 2],
}

fn index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

impl Follower {
    async fn take(
        &mut self,
        batch: LogBatch,
        client: &mut Client,
        request: &LogsRequest,
        printer: &mut Printer,
    ) -> Result<(), Stop> {
        let stream = batch.stream;
        if batch.run != self.run {
            eprintln!("nodectl: the agent restarted; its lines are numbered afresh");
            self.run = batch.run;
            self.cursor = LogCursor {
                stdout: 1,
                stderr: 1,
            };
            self.synced = [true, true];
        }
        let expected = self.cursor.get(stream);
        let fresh: Vec<LogLine> = batch
            .lines
            .into_iter()
            .filter(|l| l.seq >= expected)
            .collect();
        let Some(first) = fresh.first().map(|l| l.seq) else {
            return Ok(());
        };
        let mut missing = first - expected;
        if missing > 0 && !self.synced[index(stream)] {
            // Published before the subscription took effect: the agent still
            // has them.
            let kept = ask(client, request, KEPT_LINES, Some(stream)).await?;
            let between: Vec<LogLine> = kept
                .lines
                .into_iter()
                .filter(|l| (expected..first).contains(&l.seq))
                .collect();
            missing -= between.len() as u64;
            printer.lines(&between)?;
        }
        self.synced[index(stream)] = true;
        if missing > 0 {
            eprintln!(
                "nodectl: {missing} line(s) of {} {stream} not received (dropped by the agent, \
                 which publishes a bounded rate, or lost by pub/sub)",
                request.watcher
            );
        }
        if let Some(last) = fresh.last() {
            self.cursor.set(stream, last.seq + 1);
        }
        printer.lines(&fresh)
    }
}

/// Passes published batches on until the subscriber fails or the printer is
/// gone. A body that cannot be read is reported once per reason.
async fn forward(mut subscriber: Subscriber, tx: mpsc::Sender<LogBatch>) {
    let codec = Codec::default();
    let mut reported = std::collections::HashSet::new();
    loop {
        let problem = match subscriber.recv().await {
            Ok((topic, body)) => match codec.decode::<LogBatch>(&body) {
                Ok(batch) => {
                    if tx.send(batch).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => format!("{topic}: {e}"),
            },
            Err(TransportError::Refused { reason, .. }) => reason,
            Err(e) => {
                eprintln!("nodectl: {e}");
                return;
            }
        };
        if reported.len() < 100 && reported.insert(problem.clone()) {
            eprintln!("nodectl: {problem}");
        }
    }
}

/// A line as `--json --follow` prints it.
#[derive(Serialize)]
struct JsonLine<'a> {
    watcher: &'a str,
    #[serde(flatten)]
    line: &'a LogLine,
}

/// Prints lines as `TIME WATCHER.WID STREAM | text`, the watcher column as wide
/// as the widest so far; or one JSON object per line.
struct Printer {
    watcher: String,
    json: bool,
    width: usize,
    zone: Zone,
    format: TimeFormat,
}

impl Printer {
    fn new(watcher: &str, json: bool) -> Printer {
        Printer {
            watcher: watcher.to_string(),
            json,
            width: 0,
            zone: Zone::local(),
            format: TimeFormat::parse("%F %T").unwrap_or_default(),
        }
    }

    fn time(&self, time: f64) -> String {
        let at = Duration::try_from_secs_f64(time.max(0.0)).unwrap_or_default();
        let mut text = self.format.format(UNIX_EPOCH + at, &self.zone);
        text.push_str(&format!(".{:03}", at.subsec_millis()));
        text
    }

    fn lines(&mut self, lines: &[LogLine]) -> Result<(), Stop> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        for line in lines {
            let text = if self.json {
                serde_json::to_string(&JsonLine {
                    watcher: &self.watcher,
                    line,
                })
                .unwrap_or_default()
            } else {
                let who = format!("{}.{}", self.watcher, line.wid);
                self.width = self.width.max(who.chars().count());
                format!(
                    "{} {who:<width$} {} | {}",
                    self.time(line.time),
                    line.stream,
                    line.text,
                    width = self.width
                )
            };
            if writeln!(out, "{text}").is_err() {
                return Err(Stop::Closed);
            }
        }
        out.flush().map_err(|_| Stop::Closed)
    }
}
