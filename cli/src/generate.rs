//! Shell completions and man pages generated from each binary's clap definition.
//!
//! Nothing here is written by hand: the completion scripts and the roff pages come
//! from the same [`clap::Command`] that parses the command line, so they say what
//! the binary accepts today. `packaging/generate.sh` runs the binaries to refresh
//! `packaging/completions/` and `packaging/man/`, and an end-to-end test fails when
//! those files no longer match.
//!
//! How each binary exposes it:
//!
//! - `nodectl completions SHELL` and `nodectl man [--dir DIR]`, ordinary
//!   sub-commands (they never contact an agent);
//! - `nodeagent`, `nodemeta` and `nodetop`: the hidden flags `--completions SHELL`
//!   and `--man` ([`GenerateFlags`]), which print and exit before anything else
//!   happens, even when the arguments the binary otherwise requires (such as
//!   `nodeagent --config`) are missing. A binary opts in by parsing its command
//!   line with [`parse`] or [`get_matches`] instead of clap's own.
//!
//! Man pages: [`man_page`] renders one page for a command, its sub-commands listed
//! as `nodectl-start(1)` and so on; [`man_pages`] adds one page per sub-command,
//! named the way git names them (`nodectl-start.1`), so that `man nodectl-start`
//! works once they are installed. Pages carry no date, so that they only change
//! when the command line does.
//!
//! Completion scripts are named as each shell looks them up ([`completion_file_name`]):
//! `nodectl.bash`, `_nodectl` (zsh), `nodectl.fish`, `nodectl.elv`, `_nodectl.ps1`.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches, Command};
use clap_complete::Generator;

/// The shells completion scripts are generated for (a clap `ValueEnum`: bash, zsh,
/// fish, elvish, powershell), re-exported for the binaries' own arguments.
pub use clap_complete::Shell;

/// The manual every page says it belongs to (the centre of its footer).
const MANUAL: &str = "Ringmaster Manual";

/// Writes the completion script of `cmd` for `shell` to `out`.
///
/// The script completes the binary named `cmd.get_name()` (`#[command(name = ...)]`).
pub fn completions(cmd: Command, shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = cmd;
    let name = cmd.get_name().to_string();
    // clap_complete panics when its writer fails: let it write to memory, and
    // report a failure to write `out` as an error.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// The file name `shell` looks the completion script of `bin` up by: `bin.bash`,
/// `_bin` (zsh), `bin.fish`, `bin.elv`, `_bin.ps1`.
pub fn completion_file_name(shell: Shell, bin: &str) -> String {
    shell.file_name(bin)
}

/// Writes the man page (roff, section 1) of `cmd` to `out`: name, synopsis,
/// description, options, then its sub-commands (each a `CMD-SUB(1)` reference, see
/// [`man_pages`]), the text after its help, and its version.
pub fn man_page(cmd: Command, out: &mut dyn Write) -> io::Result<()> {
    let cmd = for_man(cmd);
    let source = source(&cmd);
    render(cmd, &source, out)
}

/// Every man page of `cmd`, as (file name, roff text): first `CMD.1` (the page of
/// [`man_page`]), then one `CMD-SUB.1` per visible sub-command (and
/// `CMD-SUB-SUBSUB.1` for theirs), with the global options that apply to it.
pub fn man_pages(cmd: Command) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = for_man(cmd);
    let source = source(&cmd);
    // Built, each sub-command knows its display name (`nodectl-start`), its usage
    // line (`nodectl start`) and the global options it inherits.
    cmd.build();
    let mut pages = Vec::new();
    collect_pages(cmd, &source, &mut pages)?;
    Ok(pages)
}

/// Writes every page of [`man_pages`] into `dir` (created if missing) and returns
/// their paths.
pub fn write_man_pages(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, text) in man_pages(cmd)? {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

/// A command as its man pages show it: without the `help` sub-command, which has no
/// page of its own (`--help` is listed with the options).
fn for_man(cmd: Command) -> Command {
    cmd.disable_help_subcommand(true)
}

/// What the pages' footers name as their source: `Ringmaster VERSION`.
fn source(cmd: &Command) -> String {
    match cmd.get_version() {
        Some(version) => format!("Ringmaster {version}"),
        None => "Ringmaster".to_string(),
    }
}

/// Renders the page of `cmd` with the footer of the whole suite.
fn render(cmd: Command, source: &str, out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(cmd)
        .source(source)
        .manual(MANUAL)
        .render(out)
}

/// Appends the page of `cmd` (built), then those of its visible sub-commands.
fn collect_pages(cmd: Command, source: &str, pages: &mut Vec<(String, Vec<u8>)>) -> io::Result<()> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let subcommands: Vec<Command> = cmd
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned()
        .collect();
    let mut text = Vec::new();
    render(cmd, source, &mut text)?;
    pages.push((format!("{name}.1"), text));
    for sub in subcommands {
        collect_pages(sub, source, pages)?;
    }
    Ok(())
}

/// The hidden `--completions SHELL` and `--man` flags of `nodeagent`, `nodemeta`
/// and `nodetop`, as given.
///
/// [`parse`] and [`get_matches`] add them to the binary's command ([`add_flags`])
/// and answer them, so that the binary's own `Parser` needs no field for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerateFlags {
    /// `--completions SHELL`: print the completion script for SHELL and exit.
    pub completions: Option<Shell>,
    /// `--man`: print the man page (roff) and exit.
    pub man: bool,
}

/// Id (and long name) of the `--completions` flag.
const COMPLETIONS: &str = "completions";
/// Id (and long name) of the `--man` flag.
const MAN: &str = "man";

/// `cmd` with the hidden `--completions SHELL` and `--man` flags.
pub fn add_flags(cmd: Command) -> Command {
    cmd.arg(
        Arg::new(COMPLETIONS)
            .long(COMPLETIONS)
            .value_name("SHELL")
            .value_parser(clap::value_parser!(Shell))
            .help("Print the completion script for SHELL and exit")
            .hide(true),
    )
    .arg(
        Arg::new(MAN)
            .long(MAN)
            .action(ArgAction::SetTrue)
            .help("Print the man page (roff) and exit")
            .hide(true),
    )
}

impl GenerateFlags {
    /// The flags given in `matches` (of a command that went through [`add_flags`]).
    pub fn from_matches(matches: &ArgMatches) -> GenerateFlags {
        GenerateFlags {
            completions: matches
                .try_get_one::<Shell>(COMPLETIONS)
                .ok()
                .flatten()
                .copied(),
            man: matches
                .try_get_one::<bool>(MAN)
                .ok()
                .flatten()
                .copied()
                .unwrap_or(false),
        }
    }

    /// Whether either flag was given.
    pub fn requested(&self) -> bool {
        self.completions.is_some() || self.man
    }

    /// Prints what the flags ask for about `cmd` to stdout, and returns the exit
    /// status to exit with (see [`exit_status`]); None when no flag was given.
    pub fn run(&self, cmd: Command) -> Option<u8> {
        let name = cmd.get_name().to_string();
        let mut stdout = io::stdout().lock();
        let result = match (self.completions, self.man) {
            (Some(shell), _) => completions(cmd, shell, &mut stdout),
            (None, true) => man_page(cmd, &mut stdout),
            (None, false) => return None,
        };
        Some(exit_status(&name, result))
    }
}

/// The exit status after writing generated text for binary `bin`: 0 when it was
/// written, or when the reader went away (`nodectl man | head`); else 1, after
/// saying why on stderr.
pub fn exit_status(bin: &str, result: io::Result<()>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("{bin}: cannot write: {e}");
            1
        }
    }
}

/// Parses the process's command line with `cmd` as [`Command::get_matches`] does,
/// but first answers [`GenerateFlags`] (added to `cmd`, hidden): prints the
/// completion script or the man page of `cmd` and exits the process.
///
/// The flags work without the arguments `cmd` otherwise requires: when those are
/// missing, the command line is parsed again with nothing required, only to look
/// for the flags; without them, clap's usual error is printed.
pub fn get_matches(cmd: Command) -> ArgMatches {
    match get_matches_from(cmd, std::env::args_os()) {
        Ok(matches) => matches,
        Err(status) => {
            let _ = io::stdout().flush();
            let _ = io::stderr().flush();
            std::process::exit(i32::from(status))
        }
    }
}

/// Parses the process's command line into `P`, as `P::parse()` does, answering
/// [`GenerateFlags`] first (see [`get_matches`]).
pub fn parse<P: clap::Parser>() -> P {
    let matches = get_matches(P::command());
    P::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// [`get_matches`] on the given arguments (the first is the binary's name),
/// without exiting: the matches, or the exit status once the flags were answered
/// (or clap's error, help or version printed).
pub fn get_matches_from<I, T>(cmd: Command, args: I) -> Result<ArgMatches, u8>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match parse_args(cmd.clone(), args.into_iter().map(Into::into).collect()) {
        Parsed::Matches(matches) => Ok(matches),
        Parsed::Generate(flags) => Err(flags.run(cmd).unwrap_or(0)),
        Parsed::Error(error) => {
            // What clap's own exit prints: help and version on stdout, errors on
            // stderr.
            let _ = error.print();
            Err(u8::try_from(error.exit_code()).unwrap_or(2))
        }
    }
}

/// What a command line asks for.
#[derive(Debug)]
enum Parsed {
    /// The binary's own work.
    Matches(ArgMatches),
    /// A completion script or a man page.
    Generate(GenerateFlags),
    /// Bad usage, or --help or --version.
    Error(clap::Error),
}

/// Parses `args` with `cmd` and the generation flags; when arguments `cmd` requires
/// are missing, looks for the flags with nothing required.
fn parse_args(cmd: Command, args: Vec<OsString>) -> Parsed {
    let error = match add_flags(cmd.clone()).try_get_matches_from(&args) {
        Ok(matches) => {
            return match flags(&matches) {
                Some(flags) => Parsed::Generate(flags),
                None => Parsed::Matches(matches),
            }
        }
        Err(error) => error,
    };
    if error.kind() == ErrorKind::MissingRequiredArgument {
        let relaxed = add_flags(cmd).mut_args(|arg| arg.required(false));
        if let Some(flags) = relaxed
            .try_get_matches_from(&args)
            .ok()
            .as_ref()
            .and_then(flags)
        {
            return Parsed::Generate(flags);
        }
    }
    Parsed::Error(error)
}

/// The generation flags of `matches`, when one was given.
fn flags(matches: &ArgMatches) -> Option<GenerateFlags> {
    Some(GenerateFlags::from_matches(matches)).filter(GenerateFlags::requested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

    /// A daemon with a required option.
    #[derive(Debug, Parser)]
    #[command(name = "demod", version)]
    struct Daemon {
        /// The config file.
        #[arg(long, value_name = "FILE", env = "RINGMASTER_TEST_DEMOD_CONFIG")]
        config: String,
        /// Be loud.
        #[arg(long)]
        loud: bool,
    }

    /// A client with sub-commands.
    #[derive(Debug, Parser)]
    #[command(name = "democtl", version)]
    struct Ctl {
        /// Where.
        #[arg(long, global = true)]
        endpoint: Option<String>,
        #[command(subcommand)]
        sub: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        /// Start something.
        Start {
            /// Its name.
            name: String,
        },
        /// Stop everything.
        Stop,
        /// Not for people.
        #[command(hide = true)]
        Secret,
    }

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn flags_work_without_required_arguments() {
        let parsed = parse_args(Daemon::command(), args("demod --completions bash"));
        let Parsed::Generate(flags) = parsed else {
            panic!("not generated: {parsed:?}");
        };
        assert_eq!(flags.completions, Some(Shell::Bash));
        let parsed = parse_args(Daemon::command(), args("demod --man --loud"));
        assert!(matches!(
            parsed,
            Parsed::Generate(GenerateFlags { man: true, .. })
        ));
        let parsed = parse_args(Daemon::command(), args("demod --config x --man"));
        assert!(matches!(
            parsed,
            Parsed::Generate(GenerateFlags { man: true, .. })
        ));
    }

    #[test]
    fn without_flags_the_command_line_is_the_binarys() {
        let parsed = parse_args(Daemon::command(), args("demod --loud"));
        let Parsed::Error(error) = parsed else {
            panic!("accepted without --config: {parsed:?}");
        };
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        let parsed = parse_args(Daemon::command(), args("demod --completions nosuchshell"));
        let Parsed::Error(error) = parsed else {
            panic!("accepted a bad shell: {parsed:?}");
        };
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
        let Parsed::Matches(matches) = parse_args(Daemon::command(), args("demod --config x"))
        else {
            panic!("rejected a good command line");
        };
        let daemon = Daemon::from_arg_matches(&matches).unwrap();
        assert_eq!(daemon.config, "x");
    }

    #[test]
    fn flags_are_hidden() {
        let mut out = Vec::new();
        man_page(add_flags(Daemon::command()), &mut out).unwrap();
        let page = text(out);
        assert!(page.contains("loud"), "{page}");
        assert!(!page.contains("completions"), "{page}");
    }

    #[test]
    fn completions_name_the_binary() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let mut out = Vec::new();
            completions(Ctl::command(), shell, &mut out).unwrap();
            let script = text(out);
            assert!(script.contains("democtl"), "{shell}: {script}");
            assert!(script.contains("start"), "{shell}: {script}");
        }
        assert_eq!(completion_file_name(Shell::Zsh, "democtl"), "_democtl");
        assert_eq!(completion_file_name(Shell::Bash, "democtl"), "democtl.bash");
    }

    #[test]
    fn one_page_per_visible_subcommand() {
        let pages = man_pages(Ctl::command()).unwrap();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["democtl.1", "democtl-start.1", "democtl-stop.1"]);
        let main = text(pages[0].1.clone());
        assert!(main.contains("\n.TH democtl 1 "), "{main}");
        assert!(main.contains(r"democtl\-start(1)"), "{main}");
        assert!(!main.contains("help(1)"), "{main}");
        let start = text(pages[1].1.clone());
        assert!(start.contains("\n.TH democtl-start 1 "), "{start}");
        assert!(start.contains("endpoint"), "global options apply: {start}");
        let mut single = Vec::new();
        man_page(Ctl::command(), &mut single).unwrap();
        assert_eq!(text(single), main);
    }

    #[test]
    fn pages_are_written_into_a_directory() {
        let dir = std::env::temp_dir().join(format!("ringmaster-cli-man-{}", std::process::id()));
        let written = write_man_pages(Ctl::command(), &dir).unwrap();
        assert_eq!(written.len(), 3);
        assert!(dir.join("democtl-stop.1").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
