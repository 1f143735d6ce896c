//! Listening sockets: bound once by the agent, handed to the processes of the
//! watchers that use them (`$(circus.sockets.NAME)`, `use_sockets` and systemd's
//! `LISTEN_*`), never closed by a restart or a reload (a client hammering the
//! port sees no failure), kept or rebound by `reloadconfig`, shown by
//! `nodectl listsockets`; TCP over IPv4 and IPv6, and unix sockets.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use ringmaster_protocol::message::SocketInfo;
use ringmaster_protocol::{Command, ErrorKind, EventKind, Response};
use ringmaster_tests::http::{assert_clean, request, Hammer};
use ringmaster_tests::{bin_path, wait_for, wait_for_blocking, TestAgent, DEADLINE};

fn worker() -> String {
    bin_path("ringmaster-http-worker").display().to_string()
}

async fn sockets(agent: &TestAgent) -> Vec<SocketInfo> {
    match agent.call(Command::ListSockets {}).await {
        Response::Sockets(list) => list,
        other => panic!("unexpected reply to listsockets: {other:?}"),
    }
}

async fn socket(agent: &TestAgent, name: &str) -> SocketInfo {
    let list = sockets(agent).await;
    list.iter()
        .find(|s| s.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no socket '{name}' in listsockets: {list:?}"))
}

fn tcp_addr(info: &SocketInfo) -> SocketAddr {
    info.address
        .parse()
        .unwrap_or_else(|e| panic!("socket address {:?}: {e}", info.address))
}

fn web_config(extra: &str) -> String {
    format!(
        "[sockets.web]\nhost = \"127.0.0.1\"\nport = 0\n\n\
         [watchers.web]\ncmd = \"{}\"\nnumprocesses = 2\nuse_sockets = true\n\
         graceful_timeout = 10\n{extra}",
        worker()
    )
}

#[tokio::test]
async fn reload_and_restart_never_refuse_a_connection() {
    let agent = TestAgent::start("zero-downtime", &web_config(""));
    let first = agent.wait_pids("web", 2).await;
    let addr = tcp_addr(&socket(&agent, "web").await);
    assert_ne!(addr.port(), 0, "port 0 shows the port the system picked");

    let hammer = Hammer::start(addr);
    hammer.wait_more(30, "requests served before the reload");
    let out = agent.nodectl(&["reload", "web"]);
    assert!(
        out.status.success(),
        "reload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = agent.wait_pids("web", 2).await;
    assert!(
        first.iter().all(|p| !second.contains(p)),
        "reload replaced the processes: {first:?} -> {second:?}"
    );
    hammer.wait_more(30, "requests served after the reload");

    let out = agent.nodectl(&["restart", "web"]);
    assert!(
        out.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let third = agent.wait_pids("web", 2).await;
    assert!(
        second.iter().all(|p| !third.contains(p)),
        "restart replaced the processes: {second:?} -> {third:?}"
    );
    hammer.wait_more(30, "requests served after the restart");
    let tally = hammer.finish();
    eprintln!(
        "{} request(s) served by {} process(es) across a reload and a restart",
        tally.ok,
        tally.pids.len()
    );
    assert_clean(&tally, 90);
    for (label, generation) in [("first", &first), ("second", &second), ("third", &third)] {
        assert!(
            generation.iter().any(|p| tally.pids.contains(p)),
            "no request was served by the {label} processes {generation:?}; served by {:?}",
            tally.pids
        );
    }
    // The agent's descriptor never changed.
    assert_eq!(tcp_addr(&socket(&agent, "web").await), addr);
}

#[tokio::test]
async fn reloadconfig_keeps_an_unchanged_socket_and_rebinds_a_changed_one() {
    let agent = TestAgent::start("sock-reloadconfig", &web_config(""));
    agent.wait_pids("web", 2).await;
    let before = socket(&agent, "web").await;
    let addr = tcp_addr(&before);
    let hammer = Hammer::start(addr);
    hammer.wait_more(20, "requests served before reloadconfig");

    // Unchanged socket, a new watcher and a new socket.
    agent.rewrite_config(&format!(
        "{}\n[sockets.admin]\nhost = \"127.0.0.1\"\nport = 0\n\n\
         [watchers.admin]\ncmd = \"{} --fd $(circus.sockets.admin)\"\n",
        web_config(""),
        worker()
    ));
    let out = agent.nodectl(&["reloadconfig"]);
    assert!(
        out.status.success(),
        "reloadconfig failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    hammer.wait_more(20, "requests served after reloadconfig");
    let tally = hammer.finish();
    assert_clean(&tally, 40);
    let after = socket(&agent, "web").await;
    assert_eq!(
        (after.fd, after.port),
        (before.fd, before.port),
        "an unchanged socket keeps its descriptor and port"
    );
    let admin = socket(&agent, "admin").await;
    // `web` has use_sockets: it gets (and so uses) every socket.
    assert_eq!(admin.watchers, vec!["admin", "web"]);
    agent.wait_pids("admin", 1).await;
    let admin_pid = request(tcp_addr(&admin)).unwrap();
    assert_eq!(agent.pids("admin").await, vec![admin_pid]);
    // `web` sorts after `admin`: its processes now get it on descriptor 4, and
    // the old ones keep serving on theirs.
    assert!(request(addr).is_ok());

    // A changed address: bound anew, the watcher reloaded onto it, the old
    // socket gone once its processes stopped; `admin` removed.
    let old_pids = agent.pids("web").await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    agent.rewrite_config(&web_config("").replace("port = 0", &format!("port = {port}")));
    let out = agent.nodectl(&["reloadconfig"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "reloadconfig failed: {text}");
    assert!(
        text.contains("[sockets.web]") && text.contains("rebound"),
        "the report names the rebound socket: {text}"
    );
    assert!(
        text.contains("[sockets.admin]") && text.contains("removed"),
        "{text}"
    );
    let rebound = socket(&agent, "web").await;
    assert_eq!(rebound.port, Some(port));
    let new_pids = agent.wait_pids("web", 2).await;
    assert!(
        old_pids.iter().all(|p| !new_pids.contains(p)),
        "web was reloaded"
    );
    let served_by = request(tcp_addr(&rebound)).unwrap();
    assert!(
        new_pids.contains(&served_by),
        "{served_by} not in {new_pids:?}"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "the old port is closed once its processes are gone"
    );
    assert_eq!(sockets(&agent).await.len(), 1, "admin was removed");
}

/// An agent with `body` whose config may name its own dir as `{dir}`.
fn start_in_own_dir(node: &str, body: &str) -> TestAgent {
    let mut agent = TestAgent::prepare(node, "", &[]);
    let dir = agent.dir().display().to_string();
    agent.rewrite_config(&body.replace("{dir}", &dir));
    agent.launch();
    agent
}

fn read_when_written(path: &std::path::Path) -> String {
    wait_for_blocking(
        &format!("{} to be written", path.display()),
        DEADLINE,
        || std::fs::read_to_string(path).is_ok_and(|t| t.ends_with('\n')),
    );
    std::fs::read_to_string(path).unwrap()
}

/// The socket behind descriptor `fd` of process `pid` (`socket:[INODE]`).
fn socket_of(pid: u32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("no descriptor {fd} in process {pid}: {e}"))
}

fn open_fds(pid: u32) -> BTreeSet<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn sockets_expand_to_descriptors_and_systemd_variables() {
    let body = format!(
        "[sockets.web]\nport = 0\n[sockets.alpha]\nport = 0\n\n\
         [watchers.sd]\ncmd = \"sh -c 'echo $LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES > {{dir}}/sd.txt; exec sleep 1000'\"\n\
         use_sockets = true\nenv = {{ LISTEN_PID = \"stale\" }}\n\n\
         [watchers.refs]\ncmd = \"sh -c 'echo $0 $1 $FD ${{LISTEN_FDS:-none}} > {{dir}}/refs.txt; exec sleep 1000' $(circus.sockets.web) $(sockets.alpha)\"\n\
         env = {{ FD = \"$(Circus.Sockets.WEB)\" }}\n\n\
         [watchers.plain]\ncmd = \"sleep 1000\"\n\n\
         [watchers.served]\ncmd = \"{} --fd $(circus.sockets.web)\"\n",
        worker()
    );
    let agent = start_in_own_dir("sock-vars", &body);
    let sd = agent.wait_pids("sd", 1).await[0];
    let refs = agent.wait_pids("refs", 1).await[0];
    let plain = agent.wait_pids("plain", 1).await[0];
    agent.wait_pids("served", 1).await;

    // systemd's variables: LISTEN_PID is the process itself (the configured
    // value is overridden), sockets in name order from descriptor 3.
    let text = read_when_written(&agent.dir().join("sd.txt"));
    assert_eq!(text, format!("{sd} {sd} 2 alpha:web\n"));
    // $(circus.sockets.NAME), $(sockets.NAME), any case, in cmd and env; no
    // LISTEN_* without use_sockets.
    let text = read_when_written(&agent.dir().join("refs.txt"));
    assert_eq!(text, "4 3 4 none\n");

    // The descriptors are the agent's sockets, and only socket users get them.
    let list = sockets(&agent).await;
    let alpha = list.iter().find(|s| s.name == "alpha").unwrap();
    let web = list.iter().find(|s| s.name == "web").unwrap();
    for pid in [sd, refs] {
        assert_eq!(socket_of(pid, 3), socket_of(agent.pid(), alpha.fd));
        assert_eq!(socket_of(pid, 4), socket_of(agent.pid(), web.fd));
    }
    assert_eq!(
        open_fds(plain),
        BTreeSet::from([0, 1, 2]),
        "a watcher without sockets inherits no descriptor"
    );
    let mut users = web.watchers.clone();
    users.sort();
    assert_eq!(users, vec!["refs", "sd", "served"]);
    assert_eq!(alpha.watchers, vec!["refs", "sd"]);

    // The worker given --fd $(circus.sockets.web) serves on it.
    let served_by = request(tcp_addr(web)).unwrap();
    assert_eq!(agent.pids("served").await, vec![served_by]);
}

#[tokio::test]
async fn an_unknown_socket_is_a_clear_spawn_error() {
    let agent = TestAgent::start(
        "sock-unknown",
        "[sockets.web]\nport = 0\n\n[watchers.bad]\ncmd = \"sleep 100 $(circus.sockets.nope)\"\nautostart = false\n",
    );
    let mut events = agent.events(&format!("event.{}.bad.", agent.node)).await;
    let err = agent
        .client()
        .call(Command::Start {
            name: Some("bad".into()),
        })
        .await
        .unwrap_err();
    let ringmaster_protocol::transport::ClientError::Remote(reply) = err else {
        panic!("expected an error reply, got {err}");
    };
    assert_eq!(reply.kind, ErrorKind::SpawnFailed);
    assert!(
        reply.message.contains("'nope'") && reply.message.contains("web"),
        "{}",
        reply.message
    );
    events
        .wait(
            "spawn_failed naming the socket",
            DEADLINE,
            |e| matches!(&e.kind, EventKind::SpawnFailed { error } if error.contains("nope")),
        )
        .await;
    // Still serving.
    assert_eq!(sockets(&agent).await.len(), 1);
}

#[tokio::test]
async fn ipv6_sockets_listen_on_v6_addresses() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this host has no IPv6 loopback");
        return;
    }
    let agent = TestAgent::start(
        "sock-v6",
        &format!(
            "[sockets.plain6]\nhost = \"::1\"\nport = 0\n\
             [sockets.bracket6]\nhost = \"[::1]\"\nport = 0\n\n\
             [watchers.web6]\ncmd = \"{} --fd $(circus.sockets.plain6)\"\n\
             [watchers.other6]\ncmd = \"{} --fd $(circus.sockets.bracket6)\"\n",
            worker(),
            worker()
        ),
    );
    agent.wait_pids("web6", 1).await;
    agent.wait_pids("other6", 1).await;
    for name in ["plain6", "bracket6"] {
        let info = socket(&agent, name).await;
        assert_eq!(info.family, "tcp6", "{info:?}");
        let addr = tcp_addr(&info);
        assert!(addr.is_ipv6() && addr.ip().is_loopback(), "{addr}");
        wait_for(&format!("an answer on {addr}"), DEADLINE, || async {
            request(addr).is_ok()
        })
        .await;
    }
}

#[tokio::test]
async fn unix_sockets_get_their_mode_and_are_removed_at_exit() {
    let mut agent = start_in_own_dir(
        "sock-unix",
        "[sockets.private]\npath = \"private.sock\"\numask = \"077\"\n\
         [sockets.shared]\npath = \"{dir}/shared.sock\"\nbacklog = 16\n",
    );
    let private = agent.dir().join("private.sock");
    let shared = agent.dir().join("shared.sock");
    for (path, mode) in [(&private, 0o700), (&shared, 0o767)] {
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert!(
            meta.file_type().is_socket(),
            "{} is a socket",
            path.display()
        );
        assert_eq!(
            meta.permissions().mode() & 0o777,
            mode,
            "mode of {}",
            path.display()
        );
        // Listening: a connection is queued even though nobody accepts it.
        std::os::unix::net::UnixStream::connect(path).unwrap();
    }
    let info = socket(&agent, "shared").await;
    assert_eq!(info.family, "unix");
    assert_eq!(info.backlog, 16);
    assert_eq!(info.path.as_deref(), Some(shared.to_str().unwrap()));
    let out = agent.nodectl(&["listsockets"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("unix:{}", shared.display())),
        "{text}"
    );
    agent.stop();
    assert!(
        !private.exists() && !shared.exists(),
        "socket files removed at exit"
    );
}

#[test]
fn an_existing_unix_socket_path_needs_replace() {
    let agent = TestAgent::prepare("sock-replace", "", &[]);
    let stale = agent.dir().join("stale.sock");
    std::fs::write(&stale, "left over").unwrap();
    agent.rewrite_config("[sockets.app]\npath = \"stale.sock\"\n");
    let out = std::process::Command::new(bin_path("nodeagent"))
        .arg("--config")
        .arg(agent.config_path())
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--check-config only checks the config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(bin_path("nodeagent"))
        .arg("--config")
        .arg(agent.config_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the agent must not start: {stderr}");
    assert!(
        stderr.contains("'app'")
            && stderr.contains("stale.sock")
            && stderr.contains("replace = true"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&stale).unwrap(), "left over");

    let mut agent = agent;
    agent.rewrite_config("[sockets.app]\npath = \"stale.sock\"\nreplace = true\n");
    agent.launch();
    let meta = std::fs::symlink_metadata(&stale).unwrap();
    assert!(meta.file_type().is_socket(), "replaced by the socket");
}

#[test]
fn a_port_in_use_stops_the_agent_naming_the_socket() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let agent = TestAgent::prepare(
        "sock-taken",
        &format!("[sockets.web]\nport = {port}\n"),
        &[],
    );
    let out = std::process::Command::new(bin_path("nodeagent"))
        .arg("--config")
        .arg(agent.config_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("'web'") && stderr.contains(&format!("127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn nodectl_listsockets_prints_a_table_and_json() {
    let agent = TestAgent::start(
        "sock-list",
        &format!(
            "[sockets.web]\nport = 0\nbacklog = 64\n[sockets.idle]\nport = 0\n\n\
             [watchers.web]\ncmd = \"{} --fd $(circus.sockets.web)\"\n",
            worker()
        ),
    );
    agent.wait_pids("web", 1).await;
    let web = socket(&agent, "web").await;
    let out = agent.nodectl(&["listsockets"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "FD", "ADDRESS", "BACKLOG", "WATCHERS"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let web_row = rows.iter().find(|r| r[0] == "web").unwrap();
    assert_eq!(
        web_row,
        &vec!["web", &web.fd.to_string(), &web.address, "64", "web"]
    );
    let idle_row = rows.iter().find(|r| r[0] == "idle").unwrap();
    assert_eq!(idle_row[4], "-");
    // Columns line up: every row starts its ADDRESS where the header does.
    let column = text.lines().next().unwrap().find("ADDRESS").unwrap();
    for line in text.lines().skip(1) {
        assert!(
            line[column..].starts_with("127.0.0.1:"),
            "misaligned: {line:?}"
        );
    }

    let out = agent.nodectl(&["listsockets", "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let web_json = list.iter().find(|s| s["name"] == "web").unwrap();
    assert_eq!(web_json["port"], serde_json::json!(web.port));
    assert_eq!(web_json["fd"], serde_json::json!(web.fd));
    assert_eq!(web_json["backlog"], 64);
    assert_eq!(web_json["family"], "tcp");
    assert_eq!(web_json["watchers"], serde_json::json!(["web"]));
}
