//! Runtime changes survive an agent restart.

use ringmaster_protocol::{Command, OptionMap, Response};
use ringmaster_tests::{wait_for, TestAgent, DEADLINE};

#[tokio::test]
async fn runtime_changes_survive_a_restart() {
    let mut agent = TestAgent::start(
        "persist",
        "\n[watchers.base]\ncmd = \"sleep 1000\"\n\n[watchers.dropped]\ncmd = \"sleep 1000\"\n",
    );
    agent.wait_pids("base", 1).await;
    agent
        .call(Command::Incr {
            name: "base".into(),
            nb: 2,
        })
        .await;
    agent
        .call(Command::Add {
            name: "extra".into(),
            cmd: "sleep 1000".into(),
            args: vec![],
            options: OptionMap::new(),
            start: true,
        })
        .await;
    agent
        .call(Command::Rm {
            name: "dropped".into(),
            nostop: false,
        })
        .await;

    assert!(agent.stop().success());
    agent.launch();
    wait_for("3 base and 1 extra after restart", DEADLINE, || async {
        agent.pids("base").await.len() == 3 && agent.pids("extra").await.len() == 1
    })
    .await;
    let Response::Watchers(names) = agent.call(Command::List { name: None }).await else {
        panic!()
    };
    assert_eq!(names, vec!["base".to_string(), "extra".to_string()]);

    // A change in the config file wins over the runtime change it touches.
    agent.rewrite_config(
        "\n[watchers.base]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n\n[watchers.dropped]\ncmd = \"sleep 1000\"\n",
    );
    assert!(agent.stop().success());
    agent.launch();
    wait_for("the file's numprocesses", DEADLINE, || async {
        agent.pids("base").await.len() == 2 && agent.pids("extra").await.len() == 1
    })
    .await;
    let Response::Watchers(names) = agent.call(Command::List { name: None }).await else {
        panic!()
    };
    assert_eq!(
        names,
        vec!["base".to_string(), "extra".to_string()],
        "dropped stays removed: the file did not change it"
    );
}

#[tokio::test]
async fn a_corrupt_state_file_is_set_aside() {
    let mut agent = TestAgent::start("corrupt", "\n[watchers.w]\ncmd = \"sleep 1000\"\n");
    agent
        .call(Command::Incr {
            name: "w".into(),
            nb: 1,
        })
        .await;
    assert!(agent.stop().success());
    // `<node>-<hash of the config path>.state.json`
    let state = std::fs::read_dir(agent.dir().join("state"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("corrupt-") && name.ends_with(".state.json")
        })
        .expect("the state file");
    std::fs::write(&state, "{ broken").unwrap();
    // Its journal holds the incr; without the snapshot it is of no use.
    agent.launch();
    agent.wait_pids("w", 1).await;
    assert!(std::path::PathBuf::from(format!("{}.corrupt", state.display())).exists());
    assert!(agent.log().contains("not a valid state file"));
}
