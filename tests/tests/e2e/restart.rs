//! The restart policy (issue 14): `restart = "always" | "on-failure" | "never"`,
//! `success_exit_codes`, `min_uptime` (alias `healthy_after`), per-slot backoff of
//! quick crashes only, and flapping off by default (on with `check_flapping`, an
//! explicit `max_retry`, or a Circus `[plugin:flapping]`).
//!
//! What the tests read: `status` (`restarts`, `last_exit`, `backoff`, `exited`),
//! `list` (slots backing off as `state = "backoff"`, `pid = 0`, `retry_in`), the
//! agent's events, and `nodectl`'s text and `--json` output.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Command as Process;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmaster_protocol::message::{ProcessInfo, WatcherState, WatcherStatus};
use ringmaster_protocol::{Command, Event, EventKind, Response};
use ringmaster_tests::{bin_path, wait_for, TestAgent, DEADLINE};

// ----- helpers --------------------------------------------------------------------

/// The status line of watcher `name`.
async fn status_of(agent: &TestAgent, name: &str) -> WatcherStatus {
    match agent
        .call(Command::Status {
            name: Some(name.into()),
        })
        .await
    {
        Response::Status(mut list) if list.len() == 1 => list.remove(0),
        other => panic!("unexpected status reply {other:?}"),
    }
}

/// What `list NAME` says: processes and slots backing off.
async fn list_of(agent: &TestAgent, name: &str) -> Vec<ProcessInfo> {
    match agent
        .call(Command::List {
            name: Some(name.into()),
        })
        .await
    {
        Response::Processes(list) => list,
        other => panic!("unexpected list reply {other:?}"),
    }
}

/// Pid of the running process of each slot.
async fn running_by_wid(agent: &TestAgent, name: &str) -> BTreeMap<u32, u32> {
    list_of(agent, name)
        .await
        .into_iter()
        .filter(|p| p.state == "running")
        .map(|p| (p.wid, p.pid))
        .collect()
}

/// Panics when the watcher has been given up on or is being stopped by the agent.
fn assert_supervised(status: &WatcherStatus, when: &str) {
    assert!(
        matches!(status.state, WatcherState::Active | WatcherState::Starting),
        "{when}: watcher '{}' is {:?} (the agent gave up or paused it): {status:#?}",
        status.name,
        status.state
    );
}

/// Polls `status NAME` until `check` accepts it, failing at once if the watcher
/// stops being supervised, and after `timeout` naming `what` with the last status.
async fn wait_status(
    agent: &TestAgent,
    name: &str,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&WatcherStatus) -> bool,
) -> WatcherStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let status = status_of(agent, name).await;
        assert_supervised(&status, &format!("while waiting for {what}"));
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {:.1}s waiting for {what}; last status: {status:#?}",
            timeout.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
    }
}

/// Polls `probe` every 10 ms until it returns a value; panics naming `what` after
/// `timeout`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {:.1}s waiting for {what}",
            timeout.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
    }
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails the test on a `flapping` event (for `EventStream::wait` predicates).
fn no_flapping(event: &Event) {
    assert!(
        !matches!(event.kind, EventKind::Flapping { .. }),
        "the watcher was declared flapping: {event:?}"
    );
}

/// The `spawn` events of slot `wid` seen so far.
fn spawns_of(seen: &[Event], watcher: &str, wid: u32) -> usize {
    seen.iter()
        .filter(|e| e.watcher == watcher)
        .filter(|e| matches!(e.kind, EventKind::Spawn { wid: w, .. } if w == wid))
        .count()
}

// ----- 1. normal exits are replaced at once, forever -------------------------------

/// A worker that exits 0 after 0.2 to 2 s, a different time for each process
/// (derived from its pid: POSIX sh has no random numbers).
const BATCH_WORKER: &str = "n=$(( ($$ * 7919) % 181 + 20 ))\n\
                            sleep \"$(printf '%d.%02d' $((n / 100)) $((n % 100)))\"\n\
                            exit 0\n";

/// 60 s, as the issue asks: with 20 workers living 1.1 s on average, some 1000
/// normal exits, while the old policy flapped within the first second.
const BATCH_WINDOW: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_batch_of_workers_exiting_0_stays_at_numprocesses() {
    let mut agent = TestAgent::prepare("batch", "", &[]);
    let script = agent.dir().join("worker.sh");
    std::fs::write(&script, BATCH_WORKER).unwrap();
    agent.rewrite_config(&format!(
        "\n[watchers.batch]\ncmd = \"sh {}\"\nnumprocesses = 20\n",
        script.display()
    ));
    agent.launch();
    let first = wait_status(&agent, "batch", "20 workers", DEADLINE, |s| {
        s.processes == 20
    })
    .await;
    let started = Instant::now();
    let mut checkpoint = (started, first.restarts);
    let mut fewest = u32::MAX;
    let mut samples = 0u32;
    let mut last = first.clone();
    while started.elapsed() < BATCH_WINDOW {
        let s = status_of(&agent, "batch").await;
        let at = format!("{:.1}s into the window", started.elapsed().as_secs_f64());
        assert_supervised(&s, &at);
        assert_eq!(s.numprocesses, 20, "{at}: {s:#?}");
        assert!(
            s.processes >= 16,
            "{at}: only {} of 20 workers alive: {s:#?}",
            s.processes
        );
        assert!(
            s.backoff.is_empty(),
            "{at}: an exit with code 0 never backs off: {s:#?}"
        );
        assert!(
            s.restarts >= last.restarts,
            "{at}: restarts went down from {} to {}",
            last.restarts,
            s.restarts
        );
        if checkpoint.0.elapsed() >= Duration::from_secs(5) {
            assert!(
                s.restarts > checkpoint.1,
                "{at}: no restart counted in 5 s (still {}): {s:#?}",
                s.restarts
            );
            checkpoint = (Instant::now(), s.restarts);
        }
        fewest = fewest.min(s.processes);
        samples += 1;
        last = s;
        // Sampling interval over a fixed window (not a wait for a condition).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replaced = last.restarts - first.restarts;
    assert!(
        replaced >= 200,
        "only {replaced} restarts in {}s of workers living 0.2-2 s: {last:#?}",
        BATCH_WINDOW.as_secs()
    );
    let exit = last.last_exit.expect("a last exit after hundreds of exits");
    assert_eq!(exit.exit.code, Some(0), "{exit:?}");
    eprintln!(
        "{samples} samples, fewest alive {fewest}/20, {replaced} restarts in {}s",
        BATCH_WINDOW.as_secs()
    );
}

// ----- 2. exits of other slots never pause the watcher ------------------------------

#[tokio::test]
async fn slots_killed_together_do_not_delay_a_third() {
    // `healthy_after` is the old name of `min_uptime`, which stays accepted.
    let agent = TestAgent::start(
        "together",
        "\n[watchers.five]\ncmd = \"sleep 1000\"\nnumprocesses = 5\nhealthy_after = 0.5\n",
    );
    let mut events = agent.events("event.together.five.").await;
    let procs = poll(
        "5 processes that ran longer than min_uptime (0.5 s)",
        DEADLINE,
        || async {
            let procs = list_of(&agent, "five").await;
            let ready = procs.len() == 5
                && procs
                    .iter()
                    .all(|p| p.state == "running" && now_secs() - p.started > 0.7);
            ready.then_some(procs)
        },
    )
    .await;
    let before = running_by_wid(&agent, "five").await;
    let (a, b, c) = (&procs[0], &procs[1], &procs[2]);
    let killed_at = Instant::now();
    kill9(a.pid);
    kill9(b.pid);
    // The two reaps come in either order.
    let mut unreaped = vec![a.pid, b.pid];
    while !unreaped.is_empty() {
        let event = events
            .wait(&format!("the reaps of {unreaped:?}"), DEADLINE, |e| {
                no_flapping(e);
                matches!(e.kind, EventKind::Reap { pid, .. } if unreaped.contains(&pid))
            })
            .await;
        if let EventKind::Reap { pid, .. } = event.kind {
            unreaped.retain(|p| *p != pid);
        }
    }
    kill9(c.pid);
    let third_killed = Instant::now();
    let deadline = Duration::from_secs(1);
    for wid in [a.wid, b.wid, c.wid] {
        if spawns_of(&events.seen, "five", wid) > 0 {
            continue;
        }
        let left = deadline.saturating_sub(killed_at.elapsed());
        events
            .wait(
                &format!("the replacement in slot {wid} within 1 s of the kills"),
                left,
                |e| {
                    no_flapping(e);
                    matches!(e.kind, EventKind::Spawn { wid: w, .. } if w == wid)
                },
            )
            .await;
    }
    let took = killed_at.elapsed();
    eprintln!(
        "three slots replaced {took:?} after the first kill, {:?} after the third",
        third_killed.elapsed()
    );
    let status = status_of(&agent, "five").await;
    assert_eq!(status.state, WatcherState::Active, "{status:#?}");
    assert!(status.backoff.is_empty(), "nobody backs off: {status:#?}");
    let after = running_by_wid(&agent, "five").await;
    assert_eq!(after.len(), 5, "{after:?}");
    for (wid, pid) in &before {
        if [a.wid, b.wid, c.wid].contains(wid) {
            assert_ne!(after.get(wid), Some(pid), "slot {wid} was replaced");
        } else {
            assert_eq!(after.get(wid), Some(pid), "slot {wid} was left alone");
        }
    }
}

// ----- 3. a quick-crash loop backs off its own slot only ----------------------------

#[tokio::test]
async fn a_slot_crashing_in_a_loop_backs_off_alone() {
    let agent = TestAgent::start(
        "backoff",
        "\n[watchers.mixed]\ncmd = \"sh -c 'if [ $(wid) = 1 ]; then exit 3; fi; exec sleep 1000'\"\n\
         numprocesses = 3\n",
    );
    let healthy = poll("slots 2 and 3 running", DEADLINE, || async {
        let mut healthy = running_by_wid(&agent, "mixed").await;
        healthy.remove(&1);
        (healthy.len() == 2).then_some(healthy)
    })
    .await;
    let untouched = |now: &BTreeMap<u32, u32>, when: &str| {
        for (wid, pid) in &healthy {
            assert_eq!(
                now.get(wid),
                Some(pid),
                "{when}: slot {wid} (healthy) was touched: {now:?}"
            );
        }
    };

    // Its backoff shows in status, with the count of quick crashes rising.
    let mut seen = 0;
    for (round, what) in [(0, "a first backoff"), (1, "more crashes")] {
        let status = wait_status(
            &agent,
            "mixed",
            &format!("{what} of slot 1 in status"),
            DEADLINE,
            |s| {
                s.backoff
                    .iter()
                    .any(|b| b.wid == 1 && b.remaining > 0.0 && b.crashes > seen.max(2))
            },
        )
        .await;
        let slot = status.backoff.iter().find(|b| b.wid == 1).unwrap();
        assert!(
            status.backoff.iter().all(|b| b.wid == 1),
            "only slot 1 backs off: {status:#?}"
        );
        assert!(slot.remaining <= 30.0, "capped at backoff_max: {slot:?}");
        if round == 1 {
            assert!(slot.crashes > seen, "{slot:?} after {seen} crashes");
        }
        seen = slot.crashes;
        let exit = status.last_exit.expect("the last exit");
        assert_eq!((exit.wid, exit.exit.code), (1, Some(3)), "{exit:?}");
        untouched(&running_by_wid(&agent, "mixed").await, what);
    }

    // `list` shows the slot waiting, as a line of its own.
    let waiting = poll("slot 1 as a backoff line in list", DEADLINE, || async {
        let list = list_of(&agent, "mixed").await;
        list.into_iter()
            .find(|p| p.wid == 1 && p.state == "backoff")
    })
    .await;
    assert_eq!(waiting.pid, 0, "{waiting:?}");
    assert!(
        waiting.retry_in.is_some_and(|r| r > 0.0 && r <= 30.0),
        "{waiting:?}"
    );
    assert!(waiting.restarts >= 2, "{waiting:?}");

    // nodectl shows it, in words and in JSON.
    wait_for("nodectl status saying 'backing off'", DEADLINE, || async {
        stdout(&agent.nodectl(&["status", "mixed"])).contains("backing off")
    })
    .await;
    wait_for(
        "nodectl --json list with a backoff line",
        DEADLINE,
        || async {
            let out = agent.nodectl(&["--json", "list", "mixed"]);
            let json: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("nodectl --json list: {e}: {}", stdout(&out)));
            json.as_array().unwrap().iter().any(|p| {
                p["state"] == "backoff" && p["pid"] == 0 && p["retry_in"].as_f64().is_some()
            })
        },
    )
    .await;
    untouched(&running_by_wid(&agent, "mixed").await, "at the end");
    assert_supervised(&status_of(&agent, "mixed").await, "at the end");
}

// ----- 4. by default the agent never gives up -------------------------------------

const NEVER_GIVE_UP_WINDOW: Duration = Duration::from_secs(20);

#[tokio::test]
async fn by_default_a_crashing_process_is_retried_forever() {
    // backoff_max = 1 keeps the retries coming every second within the 20 s (the
    // default cap, 30 s, would space them 13 s apart by then); what is tested is
    // that nothing gives up, which backoff_max has no part in.
    let agent = TestAgent::start(
        "forever",
        "\n[watchers.doomed]\ncmd = \"sh -c 'exit 1'\"\nbackoff_max = 1\n",
    );
    let first = wait_status(&agent, "doomed", "a first restart", DEADLINE, |s| {
        s.restarts > 0
    })
    .await;
    let started = Instant::now();
    let mut checkpoint = (started, first.restarts);
    let mut last = first.clone();
    while started.elapsed() < NEVER_GIVE_UP_WINDOW {
        let s = status_of(&agent, "doomed").await;
        let at = format!("{:.1}s into the window", started.elapsed().as_secs_f64());
        assert_supervised(&s, &at);
        assert_eq!(s.numprocesses, 1, "{at}: {s:#?}");
        let exit = s
            .last_exit
            .unwrap_or_else(|| panic!("{at}: no last exit: {s:#?}"));
        assert_eq!(exit.exit.code, Some(1), "{at}: {exit:?}");
        if checkpoint.0.elapsed() >= Duration::from_secs(4) {
            assert!(
                s.restarts > checkpoint.1,
                "{at}: no retry in 4 s (restarts still {}): {s:#?}",
                s.restarts
            );
            checkpoint = (Instant::now(), s.restarts);
        }
        last = s;
        // Sampling interval over a fixed window (not a wait for a condition).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last.restarts >= first.restarts + 10,
        "only {} retries in {}s: {last:#?}",
        last.restarts - first.restarts,
        NEVER_GIVE_UP_WINDOW.as_secs()
    );
    assert!(
        !last.last_error.as_deref().unwrap_or("").contains("gave up"),
        "{last:#?}"
    );
}

// ----- 5. flapping, when asked for, still gives up --------------------------------

/// Starts `name` (its first spawn may flap before `start` replies), then waits for
/// a flapping retry and for the agent giving up; returns the final status.
async fn flaps_then_gives_up(
    agent: &TestAgent,
    events: &mut ringmaster_tests::EventStream,
    name: &str,
) -> WatcherStatus {
    let _ = agent
        .client()
        .call(Command::Start {
            name: Some(name.into()),
        })
        .await;
    let first = events
        .wait("a first flapping event", DEADLINE, |e| {
            matches!(e.kind, EventKind::Flapping { .. })
        })
        .await;
    assert!(
        matches!(first.kind, EventKind::Flapping { attempt: 1, retry_in: Some(r) } if (r - 0.3).abs() < 1e-6),
        "a retry in 0.3 s: {first:?}"
    );
    let second = events
        .wait("the flapping event that gives up", DEADLINE, |e| {
            matches!(e.kind, EventKind::Flapping { .. })
        })
        .await;
    assert!(
        matches!(
            second.kind,
            EventKind::Flapping {
                attempt: 2,
                retry_in: None
            }
        ),
        "gives up after max_retry = 1: {second:?}"
    );
    let status = poll("the watcher stopped for good", DEADLINE, || async {
        let s = status_of(agent, name).await;
        (s.state == WatcherState::Stopped).then_some(s)
    })
    .await;
    let error = status.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("flapping") && error.contains("gave up"),
        "the reason is in last_error: {status:#?}"
    );
    status
}

#[tokio::test]
async fn a_circus_flapping_plugin_still_gives_up() {
    let mut agent = TestAgent::prepare("circusflap", "", &[]);
    let ini = agent.dir().join("circus.ini");
    std::fs::write(
        &ini,
        format!(
            "[circus]\nendpoint = {}\npubsub_endpoint = {}\n\n\
             [watcher:crashy]\ncmd = sh -c 'exit 1'\nautostart = False\n\n\
             [plugin:flapping]\nuse = circus.plugins.flapping.Flapping\n\
             attempts = 2\nwindow = 2\nretry_in = 0.3\nmax_retry = 1\n\n\
             [agent]\nnode = circusflap\nstate_dir = state\n",
            agent.control, agent.pubsub
        ),
    )
    .unwrap();
    agent.use_config_file(ini, "circusflap", &[]);
    agent.launch();
    let mut events = agent.events("event.circusflap.crashy.").await;
    flaps_then_gives_up(&agent, &mut events, "crashy").await;
}

#[tokio::test]
async fn check_flapping_with_max_retry_gives_up_with_the_reason() {
    let agent = TestAgent::start(
        "tomlflap",
        "\n[watchers.flappy]\ncmd = \"sh -c 'exit 1'\"\ncheck_flapping = true\n\
         flapping_attempts = 2\nflapping_window = 3\nretry_in = 0.3\nmax_retry = 1\n\
         autostart = false\n",
    );
    let mut events = agent.events("event.tomlflap.flappy.").await;
    let status = flaps_then_gives_up(&agent, &mut events, "flappy").await;
    assert!(
        status.backoff.is_empty(),
        "a stopped watcher waits for nothing: {status:#?}"
    );
}

// ----- 6. on-failure and never -----------------------------------------------------

/// Slot 1 exits 0 at once, slot 2 exits 2 at once, slot 3 runs.
const JOBS: &str = "sh -c 'case $(wid) in 1) exit 0;; 2) exit 2;; esac; exec sleep 1000'";

#[tokio::test]
async fn on_failure_replaces_failures_only() {
    let agent = TestAgent::start(
        "onfail",
        &format!(
            "\n[watchers.jobs]\ncmd = \"{JOBS}\"\nnumprocesses = 3\nrestart = \"on-failure\"\n\
             min_uptime = 5\nautostart = false\n\
             \n[watchers.twook]\ncmd = \"{JOBS}\"\nnumprocesses = 3\nrestart = \"on-failure\"\n\
             success_exit_codes = [0, 2]\nautostart = false\n"
        ),
    );
    let mut events = agent.events("event.onfail.").await;
    for name in ["jobs", "twook"] {
        agent
            .call(Command::Start {
                name: Some(name.into()),
            })
            .await;
    }
    // `jobs`: slot 2 fails and is replaced (at once, then after a backoff) ...
    while spawns_of(&events.seen, "jobs", 2) < 3 {
        events
            .wait("a respawn of slot 2 of jobs", DEADLINE, |e| {
                no_flapping(e);
                e.watcher == "jobs" && matches!(e.kind, EventKind::Spawn { wid: 2, .. })
            })
            .await;
    }
    // ... while slot 1, which exited 0, stays empty (its respawn would have come
    // at once, before slot 2's backoff).
    assert_eq!(
        spawns_of(&events.seen, "jobs", 1),
        1,
        "slot 1 exited 0 and is not replaced: {:#?}",
        events.seen
    );
    let jobs = status_of(&agent, "jobs").await;
    assert_eq!(jobs.state, WatcherState::Active, "{jobs:#?}");
    assert_eq!(jobs.numprocesses, 3, "numprocesses unchanged: {jobs:#?}");
    let exited: Vec<(u32, Option<i32>)> =
        jobs.exited.iter().map(|e| (e.wid, e.exit.code)).collect();
    assert_eq!(exited, vec![(1, Some(0))], "{jobs:#?}");
    let running = running_by_wid(&agent, "jobs").await;
    assert!(!running.contains_key(&1), "{running:?}");
    assert!(running.contains_key(&3), "{running:?}");

    // `twook`: exit code 2 is a success too: neither slot 1 nor 2 is replaced.
    let twook = wait_status(
        &agent,
        "twook",
        "two exited slots of twook",
        DEADLINE,
        |s| s.exited.len() == 2,
    )
    .await;
    let mut exited: Vec<(u32, Option<i32>)> =
        twook.exited.iter().map(|e| (e.wid, e.exit.code)).collect();
    exited.sort();
    assert_eq!(exited, vec![(1, Some(0)), (2, Some(2))], "{twook:#?}");
    assert_eq!(twook.numprocesses, 3, "{twook:#?}");
    assert_eq!(spawns_of(&events.seen, "twook", 2), 1, "{:#?}", events.seen);

    // nodectl shows the exited slot, in words and in JSON.
    let text = stdout(&agent.nodectl(&["status", "jobs"]));
    assert!(text.contains("exited"), "{text}");
    let out = agent.nodectl(&["--json", "status", "jobs"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("nodectl --json status: {e}: {}", stdout(&out)));
    let line = &json[0];
    assert_eq!(line["exited"][0]["wid"], 1, "{json:#}");
    assert_eq!(line["exited"][0]["exit"]["code"], 0, "{json:#}");
    assert!(line["restarts"].as_u64().unwrap_or(0) >= 2, "{json:#}");
}

#[tokio::test]
async fn never_replaces_nothing() {
    let agent = TestAgent::start(
        "never",
        &format!(
            "\n[watchers.jobs]\ncmd = \"{JOBS}\"\nnumprocesses = 3\nrestart = \"never\"\n\
             autostart = false\n\
             \n[watchers.clock]\ncmd = \"sleep 0.5\"\nautostart = false\n"
        ),
    );
    let mut events = agent.events("event.never.").await;
    agent
        .call(Command::Start {
            name: Some("jobs".into()),
        })
        .await;
    // The two exits come in either order.
    let mut running = vec![1, 2];
    while !running.is_empty() {
        let event = events
            .wait(&format!("the exits of slots {running:?}"), DEADLINE, |e| {
                e.watcher == "jobs"
                    && matches!(e.kind, EventKind::Reap { wid, .. } if running.contains(&wid))
            })
            .await;
        if let EventKind::Reap { wid, .. } = event.kind {
            running.retain(|w| *w != wid);
        }
    }
    // A replacement would come at once: the exit of a process started after both
    // exits, 0.5 s later, comes after it.
    agent
        .call(Command::Start {
            name: Some("clock".into()),
        })
        .await;
    events
        .wait("the exit of the clock", DEADLINE, |e| {
            e.watcher == "clock" && matches!(e.kind, EventKind::Reap { .. })
        })
        .await;
    for wid in [1, 2, 3] {
        assert_eq!(
            spawns_of(&events.seen, "jobs", wid),
            1,
            "slot {wid} spawned once: {:#?}",
            events.seen
        );
    }
    let jobs = status_of(&agent, "jobs").await;
    assert_eq!(
        jobs.state,
        WatcherState::Active,
        "slot 3 still runs: {jobs:#?}"
    );
    assert_eq!((jobs.processes, jobs.numprocesses), (1, 3), "{jobs:#?}");
    let mut exited: Vec<(u32, Option<i32>)> =
        jobs.exited.iter().map(|e| (e.wid, e.exit.code)).collect();
    exited.sort();
    assert_eq!(exited, vec![(1, Some(0)), (2, Some(2))], "{jobs:#?}");
    assert!(jobs.backoff.is_empty(), "{jobs:#?}");
    assert_eq!(jobs.restarts, 0, "{jobs:#?}");
}

// ----- 7. bad values are refused clearly --------------------------------------------

/// `nodeagent --check-config FILE` on `body` written to `bad.toml`: exit code,
/// stderr.
fn check_config(body: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, body).unwrap();
    let out = Process::new(bin_path("nodeagent"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), stderr(&out))
}

#[test]
fn bad_restart_options_are_refused_naming_file_line_and_key() {
    let (code, err) = check_config(
        "[watchers.w]\ncmd = \"a\"\nrestart = \"on-failure\"\nsuccess_exit_codes = [0, 3, 255]\n\
         min_uptime = 0.5\n\n[watchers.v]\ncmd = \"b\"\nrestart = \"never\"\nhealthy_after = 2\n",
    );
    assert_eq!(code, 0, "valid restart options are accepted: {err}");
    let cases = [
        (
            "[watchers.w]\ncmd = \"a\"\nsuccess_exit_codes = [0, 256]\n",
            "bad.toml:3",
            "success_exit_codes",
        ),
        (
            "[watchers.w]\ncmd = \"a\"\nsuccess_exit_codes = [-1]\n",
            "bad.toml:3",
            "success_exit_codes",
        ),
        (
            "[watchers.w]\ncmd = \"a\"\nmin_uptime = -1\n",
            "bad.toml:3",
            "min_uptime",
        ),
        (
            "[watchers.w]\ncmd = \"a\"\nrestart = \"sometimes\"\n",
            "bad.toml:3",
            "restart",
        ),
    ];
    for (body, place, key) in cases {
        let (code, err) = check_config(body);
        assert_eq!(code, 2, "{body}\n{err}");
        assert!(err.contains(place), "{place:?} not in {err:?}");
        assert!(err.contains(key), "{key:?} not in {err:?}");
    }
}

#[tokio::test]
async fn nodectl_add_refuses_bad_restart_options() {
    let agent = TestAgent::start("addbad", "");
    let out = agent.nodectl(&[
        "add",
        "good",
        "-o",
        "restart=on-failure",
        "-o",
        "success_exit_codes=[0,3]",
        "-o",
        "min_uptime=0.5",
        "--",
        "sleep",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "valid restart options are accepted: {}",
        stderr(&out)
    );
    let text = stdout(&agent.nodectl(&["get", "good", "restart", "min_uptime"]));
    assert!(
        text.contains("on-failure") && text.contains("0.5"),
        "{text}"
    );
    for (name, option, key, value) in [
        (
            "bad1",
            "success_exit_codes=[0,256]",
            "success_exit_codes",
            "256",
        ),
        ("bad2", "min_uptime=-1", "min_uptime", "-1"),
        ("bad3", "restart=sometimes", "restart", "sometimes"),
    ] {
        let out = agent.nodectl(&["add", name, "-o", option, "--", "sleep", "1000"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{option} accepted: {}", stdout(&out));
        assert!(
            err.contains(key) && err.contains(value),
            "the error of {option} names the key and the value: {err}"
        );
    }
    match agent.call(Command::NumWatchers {}).await {
        Response::Count(n) => assert_eq!(n, 1, "only 'good' was added"),
        other => panic!("{other:?}"),
    }
}
