//! The output thread, and the handle the supervisor holds to it.
//!
//! The thread runs a `current_thread` runtime of its own with one small task per
//! captured stream of a process (a pipe, its partial line, its pid and wid), and
//! one [`StreamSink`] per watcher stream that those tasks share (the file, the
//! copy to the agent's stream, the batch being published). The recent lines of
//! each watcher live in a [`WatcherLog`] behind a mutex, so that `logs` reads
//! them from the control thread without waiting for the output thread (which may
//! be busy with a slow file system). Nothing in here ever blocks the control
//! thread: requests go to the thread through a channel, and published batches
//! come back through a bounded queue the control thread drains at its own pace.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmaster_cli::clock::{TimeFormat, Zone};
use ringmaster_protocol::logs::{log_topic, LogBatch, LogCursor, LogLine, LogReport, LogStream};
use ringmaster_protocol::message::ChangeReport;
use ringmaster_protocol::Codec;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use super::file::{FileSink, Rotation};
use super::{CaptureEnd, Captured, StreamConfig};
use crate::config::Output;
use crate::supervisor::Outgoing;

/// Longest line kept whole; a longer one is cut into lines of this size.
pub const MAX_LINE: usize = 64 * 1024;
/// Bytes read from a pipe at once, into the one buffer all streams share.
const READ_CHUNK: usize = 64 * 1024;
/// Lines each watcher keeps for `logs`.
pub const RING_LINES: usize = 1000;
/// Bytes of text each watcher keeps for `logs`.
pub const RING_BYTES: usize = 256 * 1024;
/// Published batches waiting for the control thread; beyond this, batches are
/// dropped and counted.
pub const LOG_QUEUE: usize = 256;
/// What the agent publishes of its processes' output at most, in bytes of text
/// (plus [`LINE_COST`] per line) per second, over all watchers; a burst of one
/// second's worth passes at once.
pub const PUBLISH_BYTES_PER_SECOND: usize = 4 * 1024 * 1024;
/// What one watcher stream may publish at most, in the same units, so that one
/// process printing as fast as it can leaves room for the others.
pub const STREAM_PUBLISH_BYTES_PER_SECOND: usize = 512 * 1024;
/// What a line costs the budget besides its text (its fields on the wire).
const LINE_COST: usize = 48;
/// A batch is published when it has this many lines ...
const BATCH_LINES: usize = 256;
/// ... or this many bytes of text, or at the next flush.
const BATCH_BYTES: usize = 16 * 1024;
/// How often pending batches are published.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Flushes between two rounds of housekeeping (about a second).
const FLUSHES_PER_SECOND: u64 = 20;
/// Chunks waiting to be written to the agent's own stream (`capture`).
const ECHO_QUEUE: usize = 64;

fn unix_secs_f64(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: use it.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the agent keeps of one watcher's output.
#[derive(Debug)]
struct WatcherLog {
    lines: VecDeque<LogLine>,
    bytes: usize,
    next: LogCursor,
    dropped_bytes: u64,
}

impl Default for WatcherLog {
    fn default() -> Self {
        WatcherLog {
            lines: VecDeque::new(),
            bytes: 0,
            next: LogCursor {
                stdout: 1,
                stderr: 1,
            },
            dropped_bytes: 0,
        }
    }
}

impl WatcherLog {
    fn push(&mut self, line: LogLine) {
        self.bytes += line.text.len();
        self.lines.push_back(line);
        while self.lines.len() > RING_LINES || self.bytes > RING_BYTES {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.text.len(),
                None => break,
            }
        }
    }
}

/// Every watcher's log, shared by the control and the output thread.
#[derive(Debug, Default)]
struct Book {
    watchers: Mutex<HashMap<String, Arc<Mutex<WatcherLog>>>>,
}

impl Book {
    fn log_of(&self, watcher: &str) -> Arc<Mutex<WatcherLog>> {
        Arc::clone(lock(&self.watchers).entry(watcher.to_string()).or_default())
    }

    fn get(&self, watcher: &str) -> Option<Arc<Mutex<WatcherLog>>> {
        lock(&self.watchers).get(watcher).cloned()
    }
}

/// What `reopen` did to each open file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReopenReport {
    /// Every file the agent had open.
    pub files: Vec<ReopenedFile>,
}

/// One file `reopen` reopened, or could not.
#[derive(Debug, Clone, PartialEq)]
pub struct ReopenedFile {
    /// The file.
    pub path: PathBuf,
    /// The watcher streams writing to it (`web stdout`).
    pub users: Vec<(String, LogStream)>,
    /// Why it could not be reopened.
    pub error: Option<String>,
}

impl ReopenReport {
    /// Files that could not be reopened, as one message.
    pub fn failures(&self) -> Option<String> {
        let failed: Vec<&str> = self
            .files
            .iter()
            .filter_map(|f| f.error.as_deref())
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }

    /// The report as `reopen` answers it: per watcher, what happened to its files.
    pub fn into_changes(self) -> ChangeReport {
        let mut watchers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for file in self.files {
            let what = match &file.error {
                None => format!("reopened {}", file.path.display()),
                Some(error) => format!("failed: {error}"),
            };
            for (watcher, stream) in file.users {
                watchers
                    .entry(watcher)
                    .or_default()
                    .push(format!("{stream} {what}"));
            }
        }
        ChangeReport {
            watchers: watchers
                .into_iter()
                .map(|(watcher, list)| (watcher, list.join("; ")))
                .collect(),
            done: true,
            ..ChangeReport::default()
        }
    }
}

enum Request {
    Attach {
        watcher: String,
        pid: u32,
        wid: u32,
        end: CaptureEnd,
    },
    Reopen {
        reply: oneshot::Sender<ReopenReport>,
    },
    Forget {
        watcher: String,
    },
    Drain {
        reply: oneshot::Sender<()>,
    },
    HandOver {
        reply: oneshot::Sender<Vec<HandedPipe>>,
    },
}

/// The read end of one captured stream, duplicated for an upgrade in place.
#[derive(Debug)]
pub struct HandedPipe {
    /// The process.
    pub pid: u32,
    /// Which of its streams.
    pub stream: LogStream,
    /// A duplicate of the agent's read end (close-on-exec).
    pub fd: std::os::fd::OwnedFd,
}

/// The supervisor's handle to the output thread.
pub struct OutputService {
    requests: Option<mpsc::UnboundedSender<Request>>,
    book: Arc<Book>,
    log_queue: RefCell<Option<mpsc::Receiver<Outgoing>>>,
    run: u64,
    /// The thread is gone; said once.
    reported_gone: Cell<bool>,
}

impl OutputService {
    /// Starts the output thread for node `node`. If the thread cannot start, the
    /// error is logged and output that should go through the agent is lost (each
    /// spawn logs it).
    pub fn start(node: &str) -> OutputService {
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let book = Arc::new(Book::default());
        let (log_tx, log_rx) = mpsc::channel(LOG_QUEUE);
        let (tx, rx) = mpsc::unbounded_channel();
        let context = Context {
            node: node.to_string(),
            run,
            book: Arc::clone(&book),
            log_queue: log_tx,
        };
        let started = std::thread::Builder::new()
            .name("ringmaster-output".into())
            .spawn(move || thread_main(rx, context));
        let requests = match started {
            Ok(_) => Some(tx),
            Err(e) => {
                error!("cannot start the output thread: {e}; output that goes through the agent (files, capture) will be lost");
                None
            }
        };
        OutputService {
            requests,
            book,
            log_queue: RefCell::new(Some(log_rx)),
            run,
            reported_gone: Cell::new(false),
        }
    }

    /// The queue of published batches (topic, body), for the publisher; `None`
    /// after the first call.
    pub fn take_log_queue(&self) -> Option<mpsc::Receiver<Outgoing>> {
        self.log_queue.borrow_mut().take()
    }

    fn send(&self, request: Request) -> bool {
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|tx| tx.send(request).is_ok());
        if !sent && !self.reported_gone.replace(true) {
            error!("the output thread is not running: output that goes through the agent (files, capture) is lost");
        }
        sent
    }

    /// Hands the captured streams of a process that just started to the output
    /// thread. The request channel is unbounded on purpose: each request holds
    /// the pipe of a live process, so there are never more than the processes
    /// started, and dropping one would kill its process with SIGPIPE.
    pub fn attach(&self, watcher: &str, pid: u32, wid: u32, captured: Captured) {
        for end in [captured.stdout, captured.stderr].into_iter().flatten() {
            self.send(Request::Attach {
                watcher: watcher.to_string(),
                pid,
                wid,
                end,
            });
        }
    }

    /// The last `lines` lines of `watcher` (of one stream, or both), oldest
    /// first, with what was dropped. Reads what the output thread keeps without
    /// waiting for it.
    pub fn logs(&self, watcher: &str, lines: u32, stream: Option<LogStream>) -> LogReport {
        let mut report = LogReport {
            watcher: watcher.to_string(),
            run: self.run,
            next: LogCursor {
                stdout: 1,
                stderr: 1,
            },
            ..LogReport::default()
        };
        let Some(log) = self.book.get(watcher) else {
            return report;
        };
        let log = lock(&log);
        report.dropped_bytes = log.dropped_bytes;
        report.next = log.next;
        let wanted = |line: &&LogLine| stream.is_none_or(|s| s == line.stream);
        let mut recent: Vec<LogLine> = log
            .lines
            .iter()
            .rev()
            .filter(wanted)
            .take(lines as usize)
            .cloned()
            .collect();
        recent.reverse();
        report.lines = recent;
        report
    }

    /// Reopens every output file (after an external rotation) and re-reads the
    /// host's time zone. Waits at most `timeout` for the output thread.
    pub async fn reopen(&self, timeout: Duration) -> Result<ReopenReport, String> {
        let (reply, answer) = oneshot::channel();
        if !self.send(Request::Reopen { reply }) {
            return Err("the output thread is not running".into());
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(_)) => Err("the output thread stopped".into()),
            Err(_) => Err(format!(
                "the output thread did not answer within {:.0}s (a slow file system?); \
                 the files will be reopened when it gets to it",
                timeout.as_secs_f64()
            )),
        }
    }

    /// Forgets what was kept of a removed watcher.
    pub fn forget(&self, watcher: &str) {
        lock(&self.book.watchers).remove(watcher);
        self.send(Request::Forget {
            watcher: watcher.to_string(),
        });
    }

    /// Duplicates of the read end of every captured stream, for an upgrade in
    /// place, once what was read so far is written out. The output thread goes on
    /// reading until the `exec`; what it has not read yet stays in the pipes for
    /// the next program image.
    pub async fn hand_over(&self, timeout: Duration) -> Result<Vec<HandedPipe>, String> {
        let (reply, answer) = oneshot::channel();
        if !self.send(Request::HandOver { reply }) {
            return Err("the output thread is not running".into());
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(pipes)) => Ok(pipes),
            Ok(Err(_)) => Err("the output thread stopped".into()),
            Err(_) => Err(format!(
                "the output thread did not answer within {:.0}s (a slow file system?)",
                timeout.as_secs_f64()
            )),
        }
    }

    /// Waits until every captured pipe has been read to its end (every process
    /// gone), at most `timeout`. True when everything was drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let (reply, answer) = oneshot::channel();
        if !self.send(Request::Drain { reply }) {
            return false;
        }
        matches!(tokio::time::timeout(timeout, answer).await, Ok(Ok(())))
    }
}

/// What the output thread is given at start.
struct Context {
    node: String,
    run: u64,
    book: Arc<Book>,
    log_queue: mpsc::Sender<Outgoing>,
}

fn thread_main(requests: mpsc::UnboundedReceiver<Request>, context: Context) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the output thread's runtime: {e}; output that goes through the agent is lost");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(requests, context));
}

async fn serve(mut requests: mpsc::UnboundedReceiver<Request>, context: Context) {
    let service = Rc::new(Service::new(context));
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flushes = 0u64;
    loop {
        let busy = service.busy();
        tokio::select! {
            request = requests.recv() => match request {
                Some(request) => service.handle(request),
                None => break,
            },
            // Lines came (or drops): start the timer.
            _ = service.wake.notified(), if !busy => {}
            _ = tick.tick(), if busy => {
                service.flush_all();
                flushes += 1;
                if flushes % FLUSHES_PER_SECOND == 0 {
                    service.report_drops();
                }
            }
        }
    }
}

/// One watcher stream (`web` stdout): where its lines go. Shared by the pumps of
/// every process of the watcher.
struct StreamSink {
    watcher: String,
    stream: LogStream,
    spec: StreamConfig,
    format: TimeFormat,
    file: Option<Rc<RefCell<FileSink>>>,
    echo: bool,
    log: Arc<Mutex<WatcherLog>>,
    /// Lines waiting to be published, and their bytes of text.
    pending: RefCell<(Vec<LogLine>, usize)>,
    /// This stream's share of what may be published.
    budget: RefCell<Budget>,
}

/// One process's end of a stream: who it is and its line so far.
struct ProcessStream {
    pid: u32,
    wid: u32,
    partial: Vec<u8>,
}

/// A token bucket that bounds what is published: `rate` per second, up to one
/// second's worth at once.
struct Budget {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Budget {
    fn new(rate: usize) -> Budget {
        Budget {
            rate: rate as f64,
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
    }

    fn has(&self, cost: usize) -> bool {
        self.tokens >= cost as f64
    }

    fn take(&mut self, cost: usize) {
        self.tokens -= cost as f64;
    }
}

enum Echo {
    NotStarted,
    Running(std::sync::mpsc::SyncSender<(LogStream, Vec<u8>)>),
    Failed,
}

/// Starts the thread that copies captured output to the agent's own stdout and
/// stderr (duplicates of them, so that a slow reader never holds a lock the
/// agent's own logging needs).
fn start_echo() -> std::io::Result<std::sync::mpsc::SyncSender<(LogStream, Vec<u8>)>> {
    let mut out = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let mut err = File::from(std::io::stderr().as_fd().try_clone_to_owned()?);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(LogStream, Vec<u8>)>(ECHO_QUEUE);
    std::thread::Builder::new()
        .name("ringmaster-echo".into())
        .spawn(move || {
            for (stream, bytes) in rx {
                let target = match stream {
                    LogStream::Stdout => &mut out,
                    LogStream::Stderr => &mut err,
                };
                // Nowhere to report a failure to write to our own stream.
                let _ = target.write_all(&bytes);
            }
        })?;
    Ok(tx)
}

/// The output thread's state.
struct Service {
    node: String,
    run: u64,
    codec: Codec,
    book: Arc<Book>,
    log_queue: mpsc::Sender<Outgoing>,
    buffer: RefCell<Vec<u8>>,
    scratch: RefCell<Vec<u8>>,
    sinks: RefCell<HashMap<(String, LogStream), Rc<StreamSink>>>,
    /// Sinks replaced by a new config while processes still write to them.
    retired: RefCell<Vec<Rc<StreamSink>>>,
    files: RefCell<HashMap<PathBuf, Rc<RefCell<FileSink>>>>,
    local_zone: RefCell<Rc<Zone>>,
    utc_zone: Rc<Zone>,
    budget: RefCell<Budget>,
    echo: RefCell<Echo>,
    open_streams: Cell<usize>,
    /// The pipe each pump reads, by process and stream (for a handover).
    readers: RefCell<HashMap<(u32, LogStream), Rc<pipe::Receiver>>>,
    /// Some sink has lines waiting to be published.
    pending_lines: Cell<bool>,
    /// Told when the service becomes busy (see [`Service::busy`]).
    wake: tokio::sync::Notify,
    drain_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Bytes dropped per watcher since the last warning.
    unreported_drops: RefCell<BTreeMap<String, u64>>,
}

impl Service {
    fn new(context: Context) -> Service {
        Service {
            node: context.node,
            run: context.run,
            codec: Codec::default(),
            book: context.book,
            log_queue: context.log_queue,
            buffer: RefCell::new(vec![0; READ_CHUNK]),
            scratch: RefCell::new(Vec::new()),
            sinks: RefCell::new(HashMap::new()),
            retired: RefCell::new(Vec::new()),
            files: RefCell::new(HashMap::new()),
            local_zone: RefCell::new(Rc::new(Zone::local())),
            utc_zone: Rc::new(Zone::utc()),
            budget: RefCell::new(Budget::new(PUBLISH_BYTES_PER_SECOND)),
            echo: RefCell::new(Echo::NotStarted),
            open_streams: Cell::new(0),
            readers: RefCell::new(HashMap::new()),
            pending_lines: Cell::new(false),
            wake: tokio::sync::Notify::new(),
            drain_waiters: RefCell::new(Vec::new()),
            unreported_drops: RefCell::new(BTreeMap::new()),
        }
    }

    fn zone(&self, utc: bool) -> Rc<Zone> {
        if utc {
            Rc::clone(&self.utc_zone)
        } else {
            Rc::clone(&self.local_zone.borrow())
        }
    }

    /// Whether there is anything to flush or tidy up.
    /// Whether there are lines to publish or drops to report (the flush timer
    /// only runs then, so that an idle agent does not wake up for nothing).
    fn busy(&self) -> bool {
        self.pending_lines.get() || !self.unreported_drops.borrow().is_empty()
    }

    fn handle(self: &Rc<Self>, request: Request) {
        match request {
            Request::Attach {
                watcher,
                pid,
                wid,
                end,
            } => self.attach(watcher, pid, wid, end),
            Request::Reopen { reply } => {
                let _ = reply.send(self.reopen());
            }
            Request::Forget { watcher } => {
                // Processes left running (`rm --nostop`) write on, but a watcher
                // added again under the name starts afresh.
                let mut sinks = self.sinks.borrow_mut();
                let gone: Vec<(String, LogStream)> = sinks
                    .keys()
                    .filter(|(name, _)| *name == watcher)
                    .cloned()
                    .collect();
                for key in gone {
                    if let Some(sink) = sinks.remove(&key) {
                        self.retire(sink);
                    }
                }
            }
            Request::HandOver { reply } => {
                self.flush_all();
                let mut pipes = Vec::new();
                for ((pid, stream), receiver) in self.readers.borrow().iter() {
                    match receiver.as_fd().try_clone_to_owned() {
                        Ok(fd) => pipes.push(HandedPipe {
                            pid: *pid,
                            stream: *stream,
                            fd,
                        }),
                        Err(e) => warn!(pid, "cannot hand over the {stream} of process {pid}: {e}"),
                    }
                }
                let _ = reply.send(pipes);
            }
            Request::Drain { reply } => {
                if self.open_streams.get() == 0 {
                    self.flush_all();
                    let _ = reply.send(());
                } else {
                    self.drain_waiters.borrow_mut().push(reply);
                }
            }
        }
    }

    fn attach(self: &Rc<Self>, watcher: String, pid: u32, wid: u32, end: CaptureEnd) {
        let CaptureEnd {
            stream,
            reader,
            spec,
            file,
        } = end;
        let receiver = match pipe::Receiver::from_owned_fd(reader) {
            Ok(receiver) => receiver,
            Err(e) => {
                error!(
                    watcher = %watcher,
                    pid,
                    "cannot read the {stream} of process {pid}: {e}; its output is lost"
                );
                return;
            }
        };
        let sink = self.sink(watcher, stream, spec, file);
        self.open_streams.set(self.open_streams.get() + 1);
        let receiver = Rc::new(receiver);
        self.readers
            .borrow_mut()
            .insert((pid, stream), Rc::clone(&receiver));
        let service = Rc::clone(self);
        tokio::task::spawn_local(async move {
            service.pump(receiver, sink, pid, wid).await;
        });
    }

    /// The sink of a watcher stream, made (or replaced, when its config changed)
    /// as needed.
    fn sink(
        &self,
        watcher: String,
        stream: LogStream,
        spec: StreamConfig,
        given: Option<File>,
    ) -> Rc<StreamSink> {
        let key = (watcher, stream);
        if let Some(existing) = self.sinks.borrow().get(&key) {
            if existing.spec == spec {
                return Rc::clone(existing);
            }
        }
        let file = spec.file().map(|path| self.file_sink(path, &spec, given));
        let sink = Rc::new(StreamSink {
            log: self.book.log_of(&key.0),
            watcher: key.0.clone(),
            stream,
            format: spec.time_format(),
            file,
            echo: spec.to == Output::Capture,
            spec,
            pending: RefCell::new((Vec::new(), 0)),
            budget: RefCell::new(Budget::new(STREAM_PUBLISH_BYTES_PER_SECOND)),
        });
        let replaced = self.sinks.borrow_mut().insert(key, Rc::clone(&sink));
        if let Some(old) = replaced {
            self.retire(old);
        }
        sink
    }

    /// Keeps a replaced sink while processes still write to it.
    fn retire(&self, sink: Rc<StreamSink>) {
        if Rc::strong_count(&sink) > 1 {
            self.retired.borrow_mut().push(sink);
        } else {
            self.flush(&sink);
        }
    }

    fn file_sink(
        &self,
        path: &Path,
        spec: &StreamConfig,
        given: Option<File>,
    ) -> Rc<RefCell<FileSink>> {
        let rotation = Rotation::of(spec);
        let zone = self.zone(false);
        let now = SystemTime::now();
        if let Some(existing) = self.files.borrow().get(path) {
            existing.borrow_mut().set_rotation(rotation, &zone, now);
            return Rc::clone(existing);
        }
        let sink = Rc::new(RefCell::new(FileSink::new(
            path.to_path_buf(),
            rotation,
            given,
            &zone,
            now,
        )));
        self.files
            .borrow_mut()
            .insert(path.to_path_buf(), Rc::clone(&sink));
        sink
    }

    /// Reads one process's stream to its end.
    async fn pump(
        self: Rc<Self>,
        receiver: Rc<pipe::Receiver>,
        sink: Rc<StreamSink>,
        pid: u32,
        wid: u32,
    ) {
        enum Read {
            Some,
            Full,
            End,
        }
        let mut process = ProcessStream {
            pid,
            wid,
            partial: Vec::new(),
        };
        loop {
            if let Err(e) = receiver.readable().await {
                debug!(pid, "{} pipe: {e}", sink.stream);
                break;
            }
            let read = {
                let mut buffer = self.buffer.borrow_mut();
                match receiver.try_read(&mut buffer) {
                    Ok(0) => Read::End,
                    Ok(n) => {
                        self.take(&sink, &mut process, &buffer[..n], SystemTime::now());
                        if n == buffer.len() {
                            Read::Full
                        } else {
                            Read::Some
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        Read::Some
                    }
                    Err(e) => {
                        debug!(pid, "{} pipe: {e}", sink.stream);
                        Read::End
                    }
                }
            };
            match read {
                Read::End => break,
                // More is waiting: let the other streams have their turn first.
                Read::Full => tokio::task::yield_now().await,
                Read::Some => {}
            }
        }
        if !process.partial.is_empty() {
            let rest = std::mem::take(&mut process.partial);
            self.emit(&sink, &process, &rest, SystemTime::now());
        }
        {
            let mut readers = self.readers.borrow_mut();
            let key = (pid, sink.stream);
            if readers.get(&key).is_some_and(|r| Rc::ptr_eq(r, &receiver)) {
                readers.remove(&key);
            }
        }
        drop(receiver);
        self.stream_closed(sink);
    }

    /// A pump is done with `sink`: its last lines are published, and a sink (and
    /// file) no process writes to any more is let go.
    fn stream_closed(&self, sink: Rc<StreamSink>) {
        self.flush(&sink);
        // Held by this pump and by the map (or the retired list) only.
        if Rc::strong_count(&sink) <= 2 {
            self.sinks
                .borrow_mut()
                .retain(|_, kept| !Rc::ptr_eq(kept, &sink));
            self.retired
                .borrow_mut()
                .retain(|kept| !Rc::ptr_eq(kept, &sink));
            drop(sink);
            self.files
                .borrow_mut()
                .retain(|_, file| Rc::strong_count(file) > 1);
        }
        let open = self.open_streams.get().saturating_sub(1);
        self.open_streams.set(open);
        if open == 0 && !self.drain_waiters.borrow().is_empty() {
            self.flush_all();
            for waiter in self.drain_waiters.borrow_mut().drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Takes what one read returned: complete lines are emitted, the rest waits
    /// for its newline (or is cut at [`MAX_LINE`]).
    fn take(&self, sink: &StreamSink, process: &mut ProcessStream, data: &[u8], now: SystemTime) {
        let mut rest = data;
        if !process.partial.is_empty() {
            match rest.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    let mut line = std::mem::take(&mut process.partial);
                    line.extend_from_slice(&rest[..=end]);
                    rest = &rest[end + 1..];
                    self.emit(sink, process, &line, now);
                    if line.capacity() <= 4096 {
                        line.clear();
                        process.partial = line;
                    }
                }
                None => {
                    process.partial.extend_from_slice(rest);
                    self.cut_long_line(sink, process, now);
                    return;
                }
            }
        }
        if let Some(last) = rest.iter().rposition(|b| *b == b'\n') {
            self.emit(sink, process, &rest[..=last], now);
            rest = &rest[last + 1..];
        }
        if !rest.is_empty() {
            process.partial.extend_from_slice(rest);
            self.cut_long_line(sink, process, now);
        }
    }

    fn cut_long_line(&self, sink: &StreamSink, process: &mut ProcessStream, now: SystemTime) {
        while process.partial.len() >= MAX_LINE {
            let head: Vec<u8> = process.partial.drain(..MAX_LINE).collect();
            self.emit(sink, process, &head, now);
        }
    }

    /// Sends complete lines everywhere they go. `block` is one or more lines; the
    /// last may lack its newline (a cut line, or the end of a stream).
    fn emit(&self, sink: &StreamSink, process: &ProcessStream, block: &[u8], now: SystemTime) {
        let terminated = block.last() == Some(&b'\n');
        let body = if terminated {
            &block[..block.len() - 1]
        } else {
            block
        };
        let count = body.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let stamp = sink
            .spec
            .timestamp
            .then(|| sink.format.format(now, &self.zone(sink.spec.utc)));
        let mut dropped = 0u64;

        if let Some(file) = &sink.file {
            let zone = self.zone(false);
            let mut file = file.borrow_mut();
            if stamp.is_none() && terminated {
                dropped += file.write(block, &zone, now);
            } else {
                let mut out = self.scratch.borrow_mut();
                out.clear();
                let prefix = stamp
                    .as_ref()
                    .map(|s| format!("{s} [{}] | ", process.pid))
                    .unwrap_or_default();
                prefix_lines(&mut out, prefix.as_bytes(), body);
                dropped += file.write(&out, &zone, now);
                if out.capacity() > 4 * READ_CHUNK {
                    *out = Vec::new();
                }
            }
        }

        if sink.echo {
            let prefix = match &stamp {
                Some(stamp) => format!("{stamp} {}.{} | ", sink.watcher, process.wid),
                None => format!("{}.{} | ", sink.watcher, process.wid),
            };
            let mut out = Vec::with_capacity(body.len() + 1 + prefix.len() * count as usize);
            prefix_lines(&mut out, prefix.as_bytes(), body);
            dropped += self.echo(sink.stream, out);
        }

        let time = unix_secs_f64(now);
        let line = |text: &[u8], seq: u64| LogLine {
            time,
            pid: process.pid,
            wid: process.wid,
            stream: sink.stream,
            text: String::from_utf8_lossy(text.strip_suffix(b"\r").unwrap_or(text)).into_owned(),
            seq,
        };
        let mut full_batches = Vec::new();
        {
            let mut log = lock(&sink.log);
            let first = log.next.get(sink.stream);
            log.next.set(sink.stream, first + count);

            // Published: the oldest lines first, within the stream's and the
            // agent's budgets.
            let mut budget = self.budget.borrow_mut();
            let mut own = sink.budget.borrow_mut();
            let instant = Instant::now();
            budget.refill(instant);
            own.refill(instant);
            let mut pending = sink.pending.borrow_mut();
            let mut consumed = 0usize;
            for (i, text) in body.split(|b| *b == b'\n').enumerate() {
                let cost = text.len() + LINE_COST;
                if !(budget.has(cost) && own.has(cost)) {
                    dropped += body.len().saturating_sub(consumed) as u64;
                    break;
                }
                budget.take(cost);
                own.take(cost);
                consumed += text.len() + 1;
                pending.0.push(line(text, first + i as u64));
                pending.1 += text.len();
                if pending.0.len() >= BATCH_LINES || pending.1 >= BATCH_BYTES {
                    full_batches.push(std::mem::take(&mut pending.0));
                    pending.1 = 0;
                }
            }
            if !pending.0.is_empty() && !self.pending_lines.replace(true) {
                self.wake.notify_one();
            }

            // Kept: the newest lines.
            let mut kept_bytes = 0;
            let newest: Vec<(u64, &[u8])> = body
                .rsplit(|b| *b == b'\n')
                .take(RING_LINES)
                .enumerate()
                .take_while(|(_, text)| {
                    kept_bytes += text.len();
                    kept_bytes <= RING_BYTES
                })
                .map(|(i, text)| (first + count - 1 - i as u64, text))
                .collect();
            for (seq, text) in newest.into_iter().rev() {
                log.push(line(text, seq));
            }
            log.dropped_bytes += dropped;
        }
        for lines in full_batches {
            self.publish(sink, lines);
        }
        if dropped > 0 {
            self.note_dropped(&sink.watcher, dropped);
        }
    }

    /// Queues `bytes` for the agent's own stream; returns what had to be dropped.
    fn echo(&self, stream: LogStream, bytes: Vec<u8>) -> u64 {
        let mut echo = self.echo.borrow_mut();
        if matches!(*echo, Echo::NotStarted) {
            *echo = match start_echo() {
                Ok(tx) => Echo::Running(tx),
                Err(e) => {
                    error!("cannot start copying captured output to the agent's own stream: {e}; it is dropped (and counted)");
                    Echo::Failed
                }
            };
        }
        let len = bytes.len() as u64;
        match &*echo {
            Echo::Running(tx) => match tx.try_send((stream, bytes)) {
                Ok(()) => 0,
                Err(_) => len,
            },
            _ => len,
        }
    }

    /// Encodes and queues one batch; a full queue drops it (counted).
    fn publish(&self, sink: &StreamSink, lines: Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        let bytes: u64 = lines.iter().map(|l| l.text.len() as u64 + 1).sum();
        let batch = LogBatch {
            node: self.node.clone(),
            run: self.run,
            watcher: sink.watcher.clone(),
            stream: sink.stream,
            lines,
        };
        let queued = match self.codec.encode(&batch) {
            Ok(body) => self
                .log_queue
                .try_send((log_topic(&self.node, &sink.watcher, sink.stream), body))
                .is_ok(),
            Err(e) => {
                error!("cannot encode output lines of '{}': {e}", sink.watcher);
                false
            }
        };
        if !queued {
            lock(&sink.log).dropped_bytes += bytes;
            self.note_dropped(&sink.watcher, bytes);
        }
    }

    fn flush(&self, sink: &StreamSink) {
        let lines = {
            let mut pending = sink.pending.borrow_mut();
            pending.1 = 0;
            std::mem::take(&mut pending.0)
        };
        self.publish(sink, lines);
    }

    fn flush_all(&self) {
        self.pending_lines.set(false);
        let sinks: Vec<Rc<StreamSink>> = self
            .sinks
            .borrow()
            .values()
            .chain(self.retired.borrow().iter())
            .filter(|s| !s.pending.borrow().0.is_empty())
            .cloned()
            .collect();
        for sink in sinks {
            self.flush(&sink);
        }
    }

    fn note_dropped(&self, watcher: &str, bytes: u64) {
        if self.unreported_drops.borrow().is_empty() {
            self.wake.notify_one();
        }
        *self
            .unreported_drops
            .borrow_mut()
            .entry(watcher.to_string())
            .or_default() += bytes;
    }

    /// About once a second while there is any: says what was dropped.
    fn report_drops(&self) {
        for (watcher, bytes) in std::mem::take(&mut *self.unreported_drops.borrow_mut()) {
            warn!(
                watcher = %watcher,
                "dropped {bytes} bytes of output in the last second: the agent publishes at \
                 most {} KiB/s of each stream ({} KiB/s in all) and copies captured output \
                 through a bounded queue (files get everything); `nodectl logs {watcher}` \
                 shows the total",
                STREAM_PUBLISH_BYTES_PER_SECOND / 1024,
                PUBLISH_BYTES_PER_SECOND / 1024
            );
        }
    }

    fn reopen(&self) -> ReopenReport {
        *self.local_zone.borrow_mut() = Rc::new(Zone::local());
        let mut users: BTreeMap<PathBuf, Vec<(String, LogStream)>> = BTreeMap::new();
        for sink in self
            .sinks
            .borrow()
            .values()
            .chain(self.retired.borrow().iter())
        {
            if let Some(file) = &sink.file {
                let list = users.entry(file.borrow().path().to_path_buf()).or_default();
                let user = (sink.watcher.clone(), sink.stream);
                if !list.contains(&user) {
                    list.push(user);
                }
            }
        }
        let files: Vec<(PathBuf, Rc<RefCell<FileSink>>)> = self
            .files
            .borrow()
            .iter()
            .map(|(path, file)| (path.clone(), Rc::clone(file)))
            .collect();
        let mut report = ReopenReport::default();
        for (path, file) in files {
            let error = file.borrow_mut().reopen().err();
            report.files.push(ReopenedFile {
                users: users.remove(&path).unwrap_or_default(),
                path,
                error,
            });
        }
        report.files.sort_by(|a, b| a.path.cmp(&b.path));
        report
    }
}

/// Appends every line of `body` (lines without their final newline) to `out`,
/// each with `prefix` before it and a newline after it.
fn prefix_lines(out: &mut Vec<u8>, prefix: &[u8], body: &[u8]) {
    for text in body.split(|b| *b == b'\n') {
        out.extend_from_slice(prefix);
        out.extend_from_slice(text);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, text: &str) -> LogLine {
        LogLine {
            time: 0.0,
            pid: 1,
            wid: 1,
            stream: LogStream::Stdout,
            text: text.into(),
            seq,
        }
    }

    #[test]
    fn the_ring_is_bounded_by_lines_and_bytes() {
        let mut log = WatcherLog::default();
        for i in 0..(RING_LINES as u64 + 10) {
            log.push(line(i, "x"));
        }
        assert_eq!(log.lines.len(), RING_LINES);
        assert_eq!(log.lines.front().map(|l| l.seq), Some(10));
        let big = "y".repeat(RING_BYTES / 4 + 1);
        for i in 0..4 {
            log.push(line(i, &big));
        }
        assert!(log.bytes <= RING_BYTES, "{}", log.bytes);
        assert_eq!(log.lines.back().map(|l| l.text.len()), Some(big.len()));
    }

    #[test]
    fn lines_are_prefixed() {
        let mut out = Vec::new();
        prefix_lines(&mut out, b"> ", b"a\n\nb");
        assert_eq!(out, b"> a\n> \n> b\n");
    }

    #[test]
    fn the_budget_refills_up_to_one_second() {
        let mut budget = Budget::new(1000);
        let start = budget.last;
        budget.take(1000);
        assert!(!budget.has(1));
        budget.refill(start + Duration::from_millis(500));
        assert!(budget.has(500) && !budget.has(501));
        budget.refill(start + Duration::from_secs(10));
        assert!(budget.has(1000) && !budget.has(1001));
    }

    #[test]
    fn reopen_reports_per_watcher() {
        let report = ReopenReport {
            files: vec![
                ReopenedFile {
                    path: "/a.log".into(),
                    users: vec![
                        ("web".into(), LogStream::Stdout),
                        ("web".into(), LogStream::Stderr),
                    ],
                    error: None,
                },
                ReopenedFile {
                    path: "/b.log".into(),
                    users: vec![("db".into(), LogStream::Stdout)],
                    error: Some("cannot open /b.log: denied".into()),
                },
            ],
        };
        assert_eq!(
            report.failures().as_deref(),
            Some("cannot open /b.log: denied")
        );
        let changes = report.into_changes();
        assert_eq!(
            changes.watchers["web"],
            "stdout reopened /a.log; stderr reopened /a.log"
        );
        assert_eq!(
            changes.watchers["db"],
            "stdout failed: cannot open /b.log: denied"
        );
    }
}
