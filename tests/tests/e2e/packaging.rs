//! Shell completions and man pages, as the real binaries generate them
//! (`nodectl completions SHELL`, `nodectl man`, and the hidden `--completions
//! SHELL` and `--man` flags of nodeagent, nodemeta and nodetop), and the copies
//! committed in `packaging/completions/` and `packaging/man/`, which must match
//! what the binaries generate today (`packaging/generate.sh` refreshes them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ringmaster_tests::bin_path;

/// Every binary, with an option (or sub-command) its completions and man page
/// must name.
const BINARIES: &[(&str, &[&str])] = &[
    ("nodeagent", &["--config", "--check-config"]),
    ("nodemeta", &["--pubsub", "--stale-after"]),
    ("nodectl", &["--endpoint", "status", "completions"]),
    ("nodetop", &["--refresh", "--pubsub"]),
];

/// The shells whose scripts are committed.
const SHELLS: &[&str] = &["bash", "zsh", "fish"];

/// Runs `bin` with `args` and no Ringmaster variables but those in `env`.
fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin_path(bin));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("RINGMASTER_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

/// The arguments that make `bin` print its completion script for `shell`.
fn completion_args(bin: &str, shell: &str) -> Vec<String> {
    if bin == "nodectl" {
        vec!["completions".into(), shell.into()]
    } else {
        vec!["--completions".into(), shell.into()]
    }
}

/// `bin`'s completion script for `shell`; fails the test if it is not printed.
fn completions(bin: &str, shell: &str) -> String {
    let args = completion_args(bin, shell);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(bin, &args, &[]);
    assert!(
        out.status.success(),
        "{bin} {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `bin`'s man page.
fn man_page(bin: &str) -> String {
    let args: &[&str] = if bin == "nodectl" {
        &["man"]
    } else {
        &["--man"]
    };
    let out = run(bin, args, &[]);
    assert!(
        out.status.success(),
        "{bin} {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The file a shell looks `bin`'s completion script up by (as clap_complete
/// names it).
fn completion_file(bin: &str, shell: &str) -> String {
    match shell {
        "zsh" => format!("_{bin}"),
        other => format!("{bin}.{other}"),
    }
}

/// The repository's `packaging/` directory.
fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("packaging")
}

/// Every file of `dir` by name (none when it does not exist).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

/// Whether a completion script for `shell` offers `word` (fish names a long option
/// `-l NAME`).
fn mentions(script: &str, shell: &str, word: &str) -> bool {
    match word.strip_prefix("--") {
        Some(long) if shell == "fish" => {
            script.contains(&format!("-l {long} ")) || script.contains(&format!("-l {long}\n"))
        }
        _ => script.contains(word),
    }
}

/// The roff `.TH` line of a page: the first line after clap_mangen's preamble
/// (which only defines a string).
fn title_line(page: &str) -> &str {
    let mut lines = page
        .lines()
        .skip_while(|line| line.starts_with(".ie ") || line.starts_with(".el "));
    lines.next().unwrap_or_default()
}

#[test]
fn every_binary_prints_completions_for_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().unwrap();
    for (bin, known) in BINARIES {
        for shell in SHELLS {
            let script = completions(bin, shell);
            assert!(!script.trim().is_empty(), "{bin}: empty {shell} script");
            assert!(
                script.contains(bin),
                "{bin}: the {shell} script does not name it:\n{script}"
            );
            for word in *known {
                assert!(
                    mentions(&script, shell, word),
                    "{bin}: the {shell} script does not mention {word}:\n{script}"
                );
            }
            // The generation flags themselves are hidden.
            assert!(
                !mentions(&script, shell, "--completions") && !mentions(&script, shell, "--man"),
                "{bin}: the {shell} script offers the hidden flags:\n{script}"
            );
            if *shell == "bash" {
                let path = dir.path().join(completion_file(bin, shell));
                std::fs::write(&path, &script).unwrap();
                let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
                assert!(
                    check.status.success(),
                    "bash -n rejects {bin}'s script: {}",
                    String::from_utf8_lossy(&check.stderr)
                );
            }
        }
    }
}

#[test]
fn bash_completes_nodectl_subcommands_and_shells() {
    // Load the script in a real bash and ask it, as a user's <Tab> would.
    let script = completions("nodectl", "bash");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodectl.bash");
    std::fs::write(&path, script).unwrap();
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {path}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
             COMP_POINT=${{#COMP_LINE}}; _nodectl nodectl \"${{COMP_WORDS[$COMP_CWORD]}}\" \
             \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path = path.display(),
            words = words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            cword = words.len() - 1,
        );
        let out = Command::new("bash")
            .arg("--norc")
            .arg("-c")
            .arg(program)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let subcommands = complete("nodectl ");
    for sub in ["status", "restart", "completions", "man"] {
        assert!(
            subcommands.lines().any(|l| l == sub),
            "no {sub} in:\n{subcommands}"
        );
    }
    let shells = complete("nodectl completions ");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        assert!(
            shells.lines().any(|l| l == shell),
            "no {shell} in:\n{shells}"
        );
    }
}

#[test]
fn generation_needs_no_configuration_and_contacts_no_agent() {
    // nodeagent without --config (which it otherwise requires), nodemeta without
    // --pool and --pubsub, even with variables naming what does not exist.
    let env = [
        ("RINGMASTER_CONFIG", "/nonexistent/agent.toml"),
        ("RINGMASTER_POOL", "nosuchpool"),
        ("RINGMASTER_POOLS", "/nonexistent/pools.toml"),
        ("RINGMASTER_ENDPOINT", "tcp://192.0.2.1:9"),
    ];
    for (bin, args) in [
        ("nodeagent", &["--completions", "bash"][..]),
        ("nodeagent", &["--man"][..]),
        ("nodemeta", &["--completions", "zsh"][..]),
        ("nodemeta", &["--man"][..]),
        ("nodetop", &["--completions", "fish"][..]),
        ("nodetop", &["--man"][..]),
        ("nodectl", &["completions", "bash"][..]),
        ("nodectl", &["man"][..]),
        ("nodectl", &["--pool", "nosuchpool", "man"][..]),
    ] {
        let out = run(bin, args, &env);
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{bin} {args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Without the flags, what is required still is.
    let out = run("nodeagent", &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--config"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("nodemeta", &["--pool", "prod"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--pubsub"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_binary_prints_its_man_page() {
    for (bin, known) in BINARIES {
        let page = man_page(bin);
        let title = title_line(&page);
        assert!(
            title.starts_with(&format!(".TH {bin} 1 ")),
            "{bin}: the page does not start with its .TH line:\n{page}"
        );
        assert!(
            page.contains(&format!(".SH NAME\n{bin} ")),
            "{bin}: no NAME:\n{page}"
        );
        for word in *known {
            // roff escapes every hyphen.
            let roff = word.replace('-', "\\-");
            assert!(
                page.contains(&roff),
                "{bin}: the page does not mention {word}:\n{page}"
            );
        }
        assert!(
            !page.contains("\\-\\-completions") && !page.contains("\\-\\-man"),
            "{bin}: the page shows the hidden flags:\n{page}"
        );
    }
    let page = man_page("nodectl");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    assert!(page.contains("nodectl\\-start(1)"), "{page}");
}

#[test]
fn nodectl_writes_one_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("man1");
    let out = run("nodectl", &["man", "--dir", target.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pages = files(&target);
    for name in [
        "nodectl.1",
        "nodectl-status.1",
        "nodectl-start.1",
        "nodectl-completions.1",
        "nodectl-man.1",
    ] {
        assert!(pages.contains_key(name), "no {name} in {:?}", pages.keys());
    }
    assert!(!pages.contains_key("nodectl-help.1"), "{:?}", pages.keys());
    let start = String::from_utf8(pages["nodectl-start.1"].clone()).unwrap();
    assert!(
        title_line(&start).starts_with(".TH nodectl-start 1 "),
        "{start}"
    );
    // The page of a sub-command shows the global options that apply to it.
    assert!(start.contains("\\-\\-endpoint"), "{start}");
    // The page nodectl prints is the one it writes.
    assert_eq!(man_page("nodectl").into_bytes(), pages["nodectl.1"]);
}

#[test]
fn an_unknown_shell_is_bad_usage_listing_the_valid_ones() {
    for (bin, args) in [
        ("nodectl", &["completions", "nosuchshell"][..]),
        ("nodeagent", &["--completions", "nosuchshell"][..]),
    ] {
        let out = run(bin, args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin}: {stderr}");
        assert!(out.stdout.is_empty(), "{bin}");
        assert!(stderr.contains("nosuchshell"), "{bin}: {stderr}");
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            assert!(
                stderr.contains(shell),
                "{bin}: {shell} not listed: {stderr}"
            );
        }
    }
}

#[test]
fn committed_completions_and_man_pages_are_up_to_date() {
    let packaging = packaging_dir();
    let mut stale = Vec::new();
    let mut compare = |dir: &str, expected: BTreeMap<String, Vec<u8>>| {
        let committed = files(&packaging.join(dir));
        for (name, text) in &expected {
            match committed.get(name) {
                None => stale.push(format!("packaging/{dir}/{name} is missing")),
                Some(old) if old != text => stale.push(format!(
                    "packaging/{dir}/{name} differs from what the binary generates"
                )),
                Some(_) => {}
            }
        }
        for name in committed.keys().filter(|n| !expected.contains_key(*n)) {
            stale.push(format!("packaging/{dir}/{name} is generated by nothing"));
        }
    };

    let mut scripts = BTreeMap::new();
    for (bin, _) in BINARIES {
        for shell in SHELLS {
            let script = completions(bin, shell);
            scripts.insert(completion_file(bin, shell), script.into_bytes());
        }
    }
    compare("completions", scripts);

    let dir = tempfile::tempdir().unwrap();
    let out = run(
        "nodectl",
        &["man", "--dir", dir.path().to_str().unwrap()],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages = files(dir.path());
    for (bin, _) in BINARIES.iter().filter(|(bin, _)| *bin != "nodectl") {
        pages.insert(format!("{bin}.1"), man_page(bin).into_bytes());
    }
    compare("man", pages);

    assert!(
        stale.is_empty(),
        "the generated packaging files are out of date; run packaging/generate.sh \
         (BIN_DIR=target/debug packaging/generate.sh to use the binaries built for \
         these tests):\n  {}",
        stale.join("\n  ")
    );
}
