//! Circus INI config files: `nodeagent --config circus.ini`.
//!
//! People who run Circus can point the agent at their existing `circus.ini` and get
//! the same behaviour. The file is read the way Circus reads it (its own variant of
//! Python's `RawConfigParser`, §2 of the Circus reference):
//!
//! - `[section]` headers, `key = value` or `key: value` options, indented
//!   continuation lines, `#`/`;` (and `rem`) comment lines in the first column, a
//!   `;` after a space starts an inline comment, `""` is the empty string;
//! - option names keep their case (Circus does not lower-case them, which matters
//!   for environment variables); a repeated option keeps its first value and a
//!   repeated section is merged into the first one, as in Circus, each with a
//!   warning;
//! - `[DEFAULT]` options apply to every section that does not set them;
//! - `[circus] include` / `include_dir` (space-separated globs, relative to the
//!   main file) pull in more files, read after the main one;
//! - `$(circus.env.NAME)` and `((circus.env.NAME))` expand at load time against the
//!   agent's environment plus `[env]` (for a watcher: plus its `[env:…]` sections);
//!   `$VAR` in environment values expands from the agent's environment; spawn-time
//!   variables (`$(circus.wid)`, `$(circus.sockets.NAME)`) are left for the agent
//!   (`((circus.X))` is rewritten to `$(circus.X)` so one expander handles both).
//!
//! The sections are then translated into a TOML table shaped exactly like
//! Ringmaster's own config file (`[agent]`, `[env]`, `[sockets.NAME]`,
//! `[watchers.NAME]`), which goes through the same deserialization and checks as a
//! TOML file ([`Config::parse`]). Every translated key remembers the INI file, line
//! and option it came from, so errors still point at the INI file.
//!
//! Options Ringmaster does not need (Circus's polling delay, statsd, multicast, its
//! own logging…) load with a warning saying what Ringmaster does instead; options
//! whose absence would change what runs (`executable`, `virtualenv`,
//! `stdin_socket`, Python hooks, `QueueStream`) are errors that say what to write
//! instead. Unsupported plugins are reported as warnings and the config loads.
//!
//! Ringmaster-only settings can live in the same file without disturbing circusd
//! (which ignores unknown sections and free-form keys): an `[agent]` section takes
//! the keys of the TOML `[agent]` table (`node`, `state_dir`, `insecure`,
//! `admin_key`, `labels.NAME`, …), and `ringmaster.OPTION = value` in a watcher
//! section sets a Ringmaster watcher option (`ringmaster.backoff_max = 60`).
//!
//! Relative paths (`working_dir`, stream files, unix sockets) are relative to the
//! agent's working directory, as they are to circusd's; include globs are relative
//! to the main file, as in Circus.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use crate::config::{Config, ConfigError, ConfigWarning, RLIMIT_NAMES};
use crate::fnmatch::fnmatch;

/// Circus's default `check_delay`, seconds (used to translate the Flapping
/// plugin's `window`).
const CIRCUS_CHECK_DELAY: f64 = 5.0;

/// The Flapping plugin's class, as `use` names it.
const FLAPPING_PLUGIN: &str = "circus.plugins.flapping.Flapping";

/// Circus's hook points that Ringmaster runs.
const HOOK_NAMES: &[&str] = &[
    "before_start",
    "after_start",
    "before_spawn",
    "after_spawn",
    "before_stop",
    "after_stop",
    "before_signal",
    "after_signal",
    "before_reap",
    "after_reap",
];

/// Hooks whose failures Circus always ignores.
const HOOKS_IGNORING_ERRORS: &[&str] =
    &["before_stop", "after_stop", "before_signal", "after_signal"];

/// True when `path` (whose text is `source`) is a Circus INI file rather than a
/// TOML one: a `.ini` extension, or (without a `.toml` extension) a section header
/// only Circus uses: `[circus]`, `[watcher:…]`, `[socket:…]`, `[plugin:…]`,
/// `[env:…]`.
pub fn is_circus_ini(path: &Path, source: &str) -> bool {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("ini") => return true,
        Some("toml") => return false,
        _ => {}
    }
    source.lines().any(|line| {
        header_of(line).is_some_and(|name| {
            name == "circus"
                || ["watcher:", "socket:", "plugin:", "env:"]
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
        })
    })
}

/// Reads the Circus INI file `path` (whose text is `source`) with its includes,
/// translates it and checks it as the agent checks a TOML file. Expands variables
/// against the agent's environment; relative paths are relative to the agent's
/// working directory.
pub fn load(path: &Path, source: &str) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let base = std::env::current_dir().map_err(|e| ConfigError {
        file: Some(path.to_path_buf()),
        line: None,
        key: None,
        message: format!(
            "cannot tell the working directory, which relative paths of a Circus config are relative to: {e}"
        ),
    })?;
    load_with(path, source, &env, &base)
}

/// [`load`] with an explicit environment and base directory.
fn load_with(
    path: &Path,
    source: &str,
    env: &[(String, String)],
    base: &Path,
) -> Result<Config, ConfigError> {
    let translated = translate(path, source, env)?;
    let mut config =
        Config::parse(&translated.toml, None, base).map_err(|e| translated.remap(e))?;
    config.path = Some(path.to_path_buf());
    config.warnings = translated.warnings;
    Ok(config)
}

/// A Circus config translated into Ringmaster's TOML, with where each key came from.
#[derive(Debug)]
struct Translated {
    /// The config as TOML text.
    toml: String,
    /// For each line of `toml` (0-based), the dotted key it sets.
    lines: Vec<String>,
    /// Where each dotted key came from.
    origins: BTreeMap<String, Origin>,
    /// The files read (main file first).
    files: Vec<PathBuf>,
    /// What loads but not quite as written.
    warnings: Vec<ConfigWarning>,
}

impl Translated {
    /// Points an error about the translated TOML at the INI file, line and option.
    fn remap(&self, err: ConfigError) -> ConfigError {
        let path = match (&err.key, err.line) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(line)) => line
                .checked_sub(1)
                .and_then(|index| self.lines.get(index))
                .cloned(),
            (None, None) => None,
        };
        match path.as_deref().and_then(|p| self.origin_of(p)) {
            Some(origin) => ConfigError {
                file: self.files.get(origin.pos.file).cloned(),
                line: Some(origin.pos.line),
                key: Some(origin.key.clone()),
                message: err.message,
            },
            None => ConfigError {
                file: self.files.first().cloned(),
                line: None,
                key: err.key,
                message: err.message,
            },
        }
    }

    fn origin_of(&self, path: &str) -> Option<&Origin> {
        let mut path = path;
        loop {
            if let Some(origin) = self.origins.get(path) {
                return Some(origin);
            }
            path = &path[..path.rfind('.')?];
        }
    }
}

// ---------------------------------------------------------------------------
// Reading: the INI syntax as Circus reads it.
// ---------------------------------------------------------------------------

/// A place in one of the files read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    /// Index into the list of files read (0: the main file).
    file: usize,
    /// 1-based line.
    line: usize,
}

/// One `key = value` option.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: String,
    pos: Pos,
}

/// One section, merged over every place it appears.
#[derive(Debug, Clone)]
struct Section {
    name: String,
    pos: Pos,
    entries: Vec<Entry>,
}

impl Section {
    fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// Every file read, merged as Circus merges them.
#[derive(Debug, Default)]
struct Ini {
    files: Vec<PathBuf>,
    /// Sections in order of first appearance (without `[DEFAULT]`).
    sections: Vec<Section>,
    /// `[DEFAULT]` options.
    defaults: Vec<Entry>,
    warnings: Vec<ConfigWarning>,
}

/// Where the next continuation line goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    Defaults,
    Section(usize),
}

/// The name inside a `[section]` header line, if `line` is one (Circus: from the
/// first `[`, in the first column, to the last `]`).
fn header_of(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    (end > 0).then(|| &inner[..end])
}

impl Ini {
    fn error(&self, pos: Pos, key: Option<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.files.get(pos.file).cloned(),
            line: Some(pos.line),
            key,
            message: message.into(),
        }
    }

    fn warn(&mut self, pos: Pos, key: Option<String>, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            file: self.files.get(pos.file).cloned(),
            line: Some(pos.line),
            key,
            message: message.into(),
        });
    }

    /// Reads the main file and the files it includes.
    fn read(path: &Path, source: &str, env: &Env) -> Result<Ini, ConfigError> {
        let mut ini = Ini {
            files: vec![path.to_path_buf()],
            ..Ini::default()
        };
        ini.parse(0, source)?;
        ini.read_includes(path, env)?;
        Ok(ini)
    }

    /// Parses the text of file number `file` into the sections read so far.
    fn parse(&mut self, file: usize, source: &str) -> Result<(), ConfigError> {
        let mut target: Option<Target> = None;
        // The option that continuation lines extend: (target, entry index).
        let mut last: Option<(Target, usize)> = None;
        for (index, line) in source.lines().enumerate() {
            let pos = Pos {
                file,
                line: index + 1,
            };
            if line.trim().is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with(['r', 'R'])
                && line
                    .split_whitespace()
                    .next()
                    .is_some_and(|word| word.eq_ignore_ascii_case("rem"))
            {
                continue;
            }
            if line.starts_with(char::is_whitespace) && target.is_some() {
                if let Some((at, entry)) = last {
                    let value = line.trim();
                    if value.starts_with(['#', ';']) {
                        self.warn(
                            pos,
                            None,
                            "an indented line that starts with a comment character continues the \
                             option above (Circus reads it as part of the value); put comments in \
                             the first column",
                        );
                    }
                    let entries = match at {
                        Target::Defaults => &mut self.defaults,
                        Target::Section(s) => &mut self.sections[s].entries,
                    };
                    if let Some(entry) = entries.get_mut(entry) {
                        entry.value.push('\n');
                        entry.value.push_str(value);
                    }
                    continue;
                }
            }
            if let Some(name) = header_of(line) {
                last = None;
                if name == "DEFAULT" {
                    target = Some(Target::Defaults);
                    continue;
                }
                match self.sections.iter().position(|s| s.name == name) {
                    Some(existing) => {
                        let first = self.sections[existing].pos;
                        let first_place = self.place(first);
                        self.warn(
                            pos,
                            Some(format!("[{name}]")),
                            format!(
                                "section repeated (first at {first_place}): its options are merged \
                                 into the first one, and an option set in both keeps its first \
                                 value, as in Circus"
                            ),
                        );
                        target = Some(Target::Section(existing));
                    }
                    None => {
                        self.sections.push(Section {
                            name: name.to_string(),
                            pos,
                            entries: Vec::new(),
                        });
                        target = Some(Target::Section(self.sections.len() - 1));
                    }
                }
                continue;
            }
            let Some(at) = target else {
                return Err(self.error(
                    pos,
                    None,
                    "an option before any [section]: a Circus config starts with a section \
                     header such as [circus] or [watcher:NAME]",
                ));
            };
            let Some(split) = line.find(['=', ':']) else {
                return Err(self.error(
                    pos,
                    None,
                    format!(
                        "cannot read {:?}: a line is a [section] header, an option \
                         (key = value or key: value), an indented continuation of the option \
                         above, or a comment (# or ; in the first column)",
                        line.trim()
                    ),
                ));
            };
            let key = line[..split].trim();
            if key.is_empty() {
                return Err(self.error(
                    pos,
                    None,
                    format!(
                        "{:?} has no option name before '{}'",
                        line.trim(),
                        &line[split..=split]
                    ),
                ));
            }
            let value = option_value(&line[split + 1..]);
            if value.contains(" #") || value.contains("\t#") {
                self.warn(
                    pos,
                    Some(key.to_string()),
                    "'#' after a value is not a comment in a Circus config: it stays part of \
                     the value (start an inline comment with ' ;')",
                );
            }
            let entries = match at {
                Target::Defaults => &mut self.defaults,
                Target::Section(s) => &mut self.sections[s].entries,
            };
            if let Some(first) = entries.iter().find(|e| e.key == key) {
                let first = first.pos;
                let index = entries.iter().position(|e| e.key == key);
                let first_place = self.place(first);
                self.warn(
                    pos,
                    Some(key.to_string()),
                    format!(
                        "option repeated in its section: the first value (at {first_place}) is \
                         kept and this one ignored, as in Circus (which also adds this one's \
                         continuation lines to the first value)"
                    ),
                );
                last = index.map(|i| (at, i));
                continue;
            }
            entries.push(Entry {
                key: key.to_string(),
                value,
                pos,
            });
            last = Some((at, entries.len() - 1));
        }
        Ok(())
    }

    /// `file:line` of `pos`, for messages.
    fn place(&self, pos: Pos) -> String {
        match self.files.get(pos.file) {
            Some(file) => format!("{}:{}", file.display(), pos.line),
            None => format!("line {}", pos.line),
        }
    }

    /// Reads the files named by `[circus] include` and `include_dir` of the main
    /// file (only the main file's: Circus does not follow includes of included
    /// files).
    fn read_includes(&mut self, main: &Path, env: &Env) -> Result<(), ConfigError> {
        let Some(circus) = self.sections.iter().find(|s| s.name == "circus") else {
            return Ok(());
        };
        let mut patterns: Vec<(PathBuf, Entry)> = Vec::new();
        for key in ["include", "include_dir"] {
            let Some(entry) = circus.get(key) else {
                continue;
            };
            let value = expand_circus(&entry.value, |k, orig| env_var(env, k, orig));
            for word in value.split_whitespace() {
                let pattern = if key == "include_dir" {
                    Path::new(word).join("*.ini")
                } else {
                    PathBuf::from(word)
                };
                patterns.push((pattern, entry.clone()));
            }
        }
        let dir = main
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
        seen.insert(std::fs::canonicalize(main).unwrap_or_else(|_| main.to_path_buf()));
        for (pattern, entry) in patterns {
            let full = if pattern.is_absolute() {
                pattern.clone()
            } else {
                dir.join(&pattern)
            };
            let found = glob(&full);
            if found.is_empty() {
                self.warn(
                    entry.pos,
                    Some(format!("[circus] {}", entry.key)),
                    format!(
                        "{} does not match any file (include paths are relative to the main \
                         config file); nothing included",
                        full.display()
                    ),
                );
            }
            for file in found {
                let canonical = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
                if !seen.insert(canonical) {
                    continue;
                }
                if file.is_dir() {
                    self.warn(
                        entry.pos,
                        Some(format!("[circus] {}", entry.key)),
                        format!(
                            "{} is a directory, not a config file: use include_dir for a \
                             directory of *.ini files",
                            file.display()
                        ),
                    );
                    continue;
                }
                let text = match std::fs::read_to_string(&file) {
                    Ok(text) => text,
                    Err(e) => {
                        self.warn(
                            entry.pos,
                            Some(format!("[circus] {}", entry.key)),
                            format!(
                                "cannot read included file {}: {e}; skipped (Circus skips it too)",
                                file.display()
                            ),
                        );
                        continue;
                    }
                };
                self.files.push(file);
                let index = self.files.len() - 1;
                let before: Vec<Option<Pos>> = ["include", "include_dir"]
                    .iter()
                    .map(|k| self.circus_option_pos(k))
                    .collect();
                self.parse(index, &text)?;
                for (key, before) in ["include", "include_dir"].iter().zip(before) {
                    match self.circus_option_pos(key) {
                        Some(pos) if before.is_none() => self.warn(
                            pos,
                            Some(format!("[circus] {key}")),
                            "ignored: Circus only follows the includes of the main config file",
                        ),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn circus_option_pos(&self, key: &str) -> Option<Pos> {
        self.sections
            .iter()
            .find(|s| s.name == "circus")
            .and_then(|s| s.get(key))
            .map(|e| e.pos)
    }

    /// The options of `section`, with the `[DEFAULT]` ones it does not set.
    fn effective(&self, section: &Section) -> Vec<Entry> {
        let mut entries = section.entries.clone();
        for default in &self.defaults {
            if section.get(&default.key).is_none() {
                entries.push(default.clone());
            }
        }
        entries
    }
}

/// The value part of an option line: leading space dropped, an inline `;` comment
/// (a `;` after a space) cut, trimmed, `""` meaning the empty string.
fn option_value(raw: &str) -> String {
    let mut value = raw.trim_start();
    if let Some(semi) = value.find(';') {
        // Circus looks at the character before the first ';' (for a leading ';',
        // Python's index -1: the last character).
        let before = if semi == 0 {
            value.chars().last()
        } else {
            value[..semi].chars().last()
        };
        if before.is_some_and(char::is_whitespace) {
            value = &value[..semi];
        }
    }
    let value = value.trim();
    if value == "\"\"" {
        String::new()
    } else {
        value.to_string()
    }
}

/// Files matching `pattern` (`*`, `?` and `[...]` in any path component; names
/// starting with a dot only match a pattern starting with a dot), sorted.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let name = match component {
            Component::Normal(name) => name.to_string_lossy(),
            other => {
                for path in &mut found {
                    path.push(other.as_os_str());
                }
                continue;
            }
        };
        if !name.contains(['*', '?', '[']) {
            for path in &mut found {
                path.push(&*name);
            }
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            let listing = if dir.as_os_str().is_empty() {
                std::fs::read_dir(".")
            } else {
                std::fs::read_dir(dir)
            };
            let Ok(listing) = listing else {
                continue;
            };
            let mut names: Vec<String> = listing
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| (!n.starts_with('.') || name.starts_with('.')) && fnmatch(&name, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_ok());
    found
}

// ---------------------------------------------------------------------------
// Variables.
// ---------------------------------------------------------------------------

/// An environment: names and values, later entries winning.
type Env = Vec<(String, String)>;

/// The value of environment variable `original` in `env` (exact name first, then
/// any case, as Circus lower-cases the names it matches), for a lower-cased
/// variable `key` of the form `env.NAME`.
fn env_var(env: &Env, key: &str, original: &str) -> Option<String> {
    key.strip_prefix("env.")?;
    let name = &original[4..];
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .or_else(|| env.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v.clone())
}

/// Expands Circus variables `$(circus.KEY)` and `((circus.KEY))` (the prefix in any
/// case; KEY of word characters, `.` and `-`) that `resolve(lower_key, key)` knows.
/// A `((circus.KEY))` it does not know becomes `$(circus.KEY)`, which the agent
/// expands when it spawns a process (`wid`, `sockets.NAME`, `env.NAME`); any other
/// text is kept.
fn expand_circus(text: &str, resolve: impl Fn(&str, &str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some((len, key, double)) = circus_variable(rest) {
            match resolve(&key.to_lowercase(), key) {
                Some(value) => out.push_str(&value),
                None if double => {
                    out.push_str("$(circus.");
                    out.push_str(key);
                    out.push(')');
                }
                None => out.push_str(&rest[..len]),
            }
            rest = &rest[len..];
            continue;
        }
        let Some(c) = rest.chars().next() else {
            break;
        };
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A Circus variable at the start of `text`: its length, its key (after
/// `circus.`), and whether it is the `((…))` form.
fn circus_variable(text: &str) -> Option<(usize, &str, bool)> {
    let (close, double) = if text.starts_with("$(") {
        (")", false)
    } else if text.starts_with("((") {
        ("))", true)
    } else {
        return None;
    };
    let after = &text[2..];
    if !after.get(..7)?.eq_ignore_ascii_case("circus.") {
        return None;
    }
    let body = &after[7..];
    let len = body
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '-'))
        .unwrap_or(body.len());
    if len == 0 || !body[len..].starts_with(close) {
        return None;
    }
    Some((2 + 7 + len + close.len(), &body[..len], double))
}

/// Expands `$NAME` (an upper-case letter, then upper-case letters, digits and
/// `_`, as Circus matches them in environment values) from `env`; names that are
/// not set are collected in `missing` and expand to nothing.
fn expand_dollar_vars(text: &str, env: &Env, missing: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if !after.starts_with(|c: char| c.is_ascii_uppercase()) {
            out.push('$');
            rest = after;
            continue;
        }
        let len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..len];
        match env.iter().rev().find(|(k, _)| k == name) {
            Some((_, value)) => out.push_str(value),
            None => missing.push(name.to_string()),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// Translation into Ringmaster's TOML table.
// ---------------------------------------------------------------------------

/// Where a translated key came from: the place and the INI option, as shown in
/// messages (`[watcher:web] numprocesses`).
#[derive(Debug, Clone)]
struct Origin {
    pos: Pos,
    key: String,
}

/// What a section is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    Circus,
    Agent,
    Env,
    EnvFor(&'a str),
    Watcher(&'a str),
    Socket(&'a str),
    Plugin(&'a str),
}

fn classify(name: &str) -> Option<Kind<'_>> {
    match name {
        "circus" => Some(Kind::Circus),
        "agent" => Some(Kind::Agent),
        "env" => Some(Kind::Env),
        _ => {
            if let Some(rest) = name.strip_prefix("env:") {
                Some(Kind::EnvFor(rest))
            } else if let Some(rest) = name.strip_prefix("watcher:") {
                Some(Kind::Watcher(rest))
            } else if let Some(rest) = name.strip_prefix("socket:") {
                Some(Kind::Socket(rest))
            } else {
                name.strip_prefix("plugin:").map(Kind::Plugin)
            }
        }
    }
}

/// The Flapping plugin's settings (defaults for every watcher).
#[derive(Debug, Clone)]
struct Flapping {
    attempts: Option<(i64, Origin)>,
    window: Option<(f64, Origin)>,
    retry_in: Option<(f64, Origin)>,
    max_retry: Option<(i64, Origin)>,
    origin: Origin,
}

/// One option of a section being translated: its value after load-time
/// expansion, where it is, and how messages name it.
#[derive(Debug, Clone)]
struct Opt {
    value: String,
    origin: Origin,
}

/// Builds the TOML table and everything needed to point back at the INI files.
struct Translator<'a> {
    ini: &'a Ini,
    os_env: Env,
    table: toml::Table,
    origins: BTreeMap<String, Origin>,
    warnings: Vec<ConfigWarning>,
    /// `[circus] umask`, applied to every watcher.
    circus_umask: Option<(u32, Origin)>,
}

/// Reads and translates `path` and its includes.
fn translate(
    path: &Path,
    source: &str,
    env: &[(String, String)],
) -> Result<Translated, ConfigError> {
    let os_env: Env = env.to_vec();
    let ini = Ini::read(path, source, &os_env)?;
    let mut translator = Translator {
        ini: &ini,
        os_env,
        table: toml::Table::new(),
        origins: BTreeMap::new(),
        warnings: Vec::new(),
        circus_umask: None,
    };
    translator.run()?;
    let Translator {
        table,
        origins,
        warnings: mut more,
        ..
    } = translator;
    let (toml, lines) = emit(&table);
    let mut warnings = ini.warnings;
    warnings.append(&mut more);
    Ok(Translated {
        toml,
        lines,
        origins,
        files: ini.files,
        warnings,
    })
}

impl<'a> Translator<'a> {
    fn error(&self, origin: &Origin, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.ini.files.get(origin.pos.file).cloned(),
            line: Some(origin.pos.line),
            key: Some(origin.key.clone()),
            message: message.into(),
        }
    }

    fn warn(&mut self, origin: &Origin, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            file: self.ini.files.get(origin.pos.file).cloned(),
            line: Some(origin.pos.line),
            key: Some(origin.key.clone()),
            message: message.into(),
        });
    }

    /// Sets `value` at the dotted `path` (creating tables), remembering `origin`.
    fn set(&mut self, path: &[&str], value: toml::Value, origin: &Origin) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut table = &mut self.table;
        for part in parents {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            let toml::Value::Table(inner) = entry else {
                return;
            };
            table = inner;
        }
        table.insert(last.to_string(), value);
        self.origins.insert(path.join("."), origin.clone());
    }

    /// Makes sure a table exists at `path`, remembering where it was declared.
    fn table_at(&mut self, path: &[&str], origin: &Origin) {
        let mut table = &mut self.table;
        for part in path {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                return;
            };
            table = inner;
        }
        self.origins
            .entry(path.join("."))
            .or_insert_with(|| origin.clone());
    }

    /// The options of `section` (with `[DEFAULT]`), each expanded by `expand`.
    fn options(&self, section: &Section, expand: impl Fn(&str) -> String) -> Vec<(String, Opt)> {
        self.ini
            .effective(section)
            .into_iter()
            .map(|entry| {
                let opt = Opt {
                    value: expand(&entry.value),
                    origin: Origin {
                        pos: entry.pos,
                        key: format!("[{}] {}", section.name, entry.key),
                    },
                };
                (entry.key, opt)
            })
            .collect()
    }

    fn run(&mut self) -> Result<(), ConfigError> {
        let ini = self.ini;
        // Every section must be one Circus (or Ringmaster) reads.
        for section in &ini.sections {
            if classify(&section.name).is_none() {
                let origin = Origin {
                    pos: section.pos,
                    key: format!("[{}]", section.name),
                };
                let lower = section.name.to_ascii_lowercase();
                let hint = if classify(&lower).is_some() {
                    " (section types are lower-case)".to_string()
                } else if lower.starts_with("watchers") || lower.starts_with("sockets") {
                    " (Circus section types are singular: [watcher:NAME], [socket:NAME])".into()
                } else {
                    String::new()
                };
                return Err(self.error(
                    &origin,
                    format!(
                        "unknown section [{}]{hint}: a Circus config has [circus], \
                         [watcher:NAME], [socket:NAME], [plugin:NAME], [env] and [env:WATCHERS] \
                         sections (and, for Ringmaster, [agent]); circusd would silently ignore \
                         this one, so check its name",
                        section.name
                    ),
                ));
            }
        }

        // [env]: the global environment, for every watcher and for expansion.
        let mut local_env: Env = Vec::new();
        if let Some(section) = ini.sections.iter().find(|s| s.name == "env") {
            let os_env = self.os_env.clone();
            let options = self.options(section, |v| {
                expand_circus(v, |k, orig| env_var(&os_env, k, orig))
            });
            let origin = Origin {
                pos: section.pos,
                key: "[env]".into(),
            };
            self.table_at(&["env"], &origin);
            for (key, opt) in options {
                let value = self.dollar_vars(&opt);
                self.set(
                    &["env", &key],
                    toml::Value::String(value.clone()),
                    &opt.origin,
                );
                local_env.push((key, value));
            }
        }
        let mut global_env = self.os_env.clone();
        global_env.extend(local_env.iter().cloned());

        let check_delay = self.circus_section(&global_env)?;
        self.agent_section(&global_env)?;
        self.allow_named_loopback_tcp();
        let flapping = self.plugins(&global_env)?;
        self.sockets(&global_env)?;
        self.watchers(&global_env, check_delay, flapping.as_ref())?;
        Ok(())
    }

    /// `$VAR` expansion of an environment value, warning about unset names.
    fn dollar_vars(&mut self, opt: &Opt) -> String {
        let mut missing = Vec::new();
        let value = expand_dollar_vars(&opt.value, &self.os_env, &mut missing);
        for name in missing {
            let origin = opt.origin.clone();
            self.warn(
                &origin,
                format!("${name} is not set in the agent's environment: it expands to nothing"),
            );
        }
        value
    }

    /// A Circus config that names loopback TCP endpoints (circusd's way) keeps
    /// working without keys, as if it said `insecure = true`: it asked for TCP. The
    /// agent warns about it at every start. Routable addresses still need an
    /// explicit `insecure` in `[agent]`, and an explicit `insecure` always wins.
    fn allow_named_loopback_tcp(&mut self) {
        let Some(toml::Value::Table(agent)) = self.table.get_mut("agent") else {
            return;
        };
        if agent.contains_key("insecure") {
            return;
        }
        let endpoints: Vec<ringmaster_protocol::endpoint::Endpoint> = ["control", "pubsub"]
            .iter()
            .filter_map(|key| agent.get(*key)?.as_str())
            .filter_map(|e| ringmaster_protocol::endpoint::Endpoint::parse(e).ok())
            .collect();
        let tcp = endpoints.iter().any(|e| e.is_tcp());
        if tcp && endpoints.iter().all(|e| e.is_host_private()) {
            agent.insert("insecure".into(), toml::Value::Boolean(true));
        }
    }

    /// `[circus]`; returns `check_delay`.
    fn circus_section(&mut self, env: &Env) -> Result<f64, ConfigError> {
        let ini = self.ini;
        let mut check_delay = CIRCUS_CHECK_DELAY;
        let Some(section) = ini.sections.iter().find(|s| s.name == "circus") else {
            return Ok(check_delay);
        };
        let options = self.options(section, |v| {
            expand_circus(v, |k, orig| env_var(env, k, orig))
        });
        let header = Origin {
            pos: section.pos,
            key: "[circus]".into(),
        };
        self.table_at(&["agent"], &header);
        for (key, opt) in options {
            let o = &opt.origin;
            match key.as_str() {
                "endpoint" => self.set(
                    &["agent", "control"],
                    toml::Value::String(opt.value.clone()),
                    o,
                ),
                "pubsub_endpoint" => self.set(
                    &["agent", "pubsub"],
                    toml::Value::String(opt.value.clone()),
                    o,
                ),
                "warmup_delay" => {
                    let seconds = self.seconds(&opt)?;
                    self.set(&["agent", "warmup_delay"], toml::Value::Float(seconds), o);
                }
                "include" | "include_dir" => {}
                "umask" => {
                    let digits = opt.value.trim();
                    let mask = u32::from_str_radix(digits.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| {
                            self.error(o, format!("{digits:?} is not an octal umask (000 to 777)"))
                        })?;
                    // Circus sets it on circusd, whose children inherit it: here it
                    // becomes the umask of every watcher's processes.
                    self.circus_umask = Some((mask, o.clone()));
                }
                "check_delay" => {
                    check_delay = self.seconds(&opt)?;
                    self.warn(
                        o,
                        "not needed: Ringmaster notices an exit the moment it happens and \
                         respawns at once (no polling); with the Flapping plugin it widens the \
                         flapping window as it does in Circus",
                    );
                }
                "statsd" | "stats_endpoint" | "statsd_close_outputs" => self.warn(
                    o,
                    "not needed: Ringmaster publishes statistics itself on the pubsub endpoint \
                     (stat.<node>.<watcher> topics, every [agent] stats_interval seconds); watch \
                     them with nodetop or nodectl stats",
                ),
                "multicast_endpoint" => self.warn(
                    o,
                    "ignored: Ringmaster does no multicast discovery; list nodes in a pools file \
                     for nodectl --pool",
                ),
                "httpd" | "httpd_host" | "httpd_port" | "httpd_close_outputs" => self.warn(
                    o,
                    "ignored: Ringmaster has no web console (circushttpd); use nodetop for a \
                     live view and nodectl to act",
                ),
                "endpoint_owner" => self.warn(
                    o,
                    "ignored: the ipc control socket stays owned by the agent's user; to let \
                     others in safely, give the agent keys ([agent] admin_key, read_key)",
                ),
                "debug" | "debug_gc" | "loglevel" | "logoutput" | "loggerconfig" => self.warn(
                    o,
                    "ignored: the agent logs to stderr (journald under systemd); choose the \
                     level with nodeagent -v/-vv or RUST_LOG",
                ),
                "pidfile" => self.warn(
                    o,
                    "ignored: nodeagent writes no pid file; systemd tracks it (Type=notify)",
                ),
                "fqdn_prefix" => self.warn(
                    o,
                    "ignored: name the node with [agent] node (the host name by default)",
                ),
                "stream_backend" => self.warn(o, "ignored (Circus ignores it too)"),
                _ => self.warn(
                    o,
                    "unknown [circus] option, ignored (Circus ignores it too); check its name",
                ),
            }
        }
        Ok(check_delay)
    }

    /// `[agent]`: Ringmaster's own agent settings, as in the TOML `[agent]` table
    /// (circusd ignores the section).
    fn agent_section(&mut self, env: &Env) -> Result<(), ConfigError> {
        let ini = self.ini;
        let Some(section) = ini.sections.iter().find(|s| s.name == "agent") else {
            return Ok(());
        };
        let options = self.options(section, |v| {
            expand_circus(v, |k, orig| env_var(env, k, orig))
        });
        let header = Origin {
            pos: section.pos,
            key: "[agent]".into(),
        };
        self.table_at(&["agent"], &header);
        for (key, opt) in options {
            let value = match key.as_str() {
                "insecure" | "allow_exec" => toml::Value::Boolean(self.boolean(&opt)?),
                "warmup_delay" | "replay_window" | "stats_interval" => {
                    toml::Value::Float(self.seconds(&opt)?)
                }
                _ => toml::Value::String(opt.value.clone()),
            };
            match key.strip_prefix("labels.") {
                Some(label) => self.set(&["agent", "labels", label], value, &opt.origin),
                None => self.set(&["agent", &key], value, &opt.origin),
            }
        }
        Ok(())
    }

    /// `[plugin:NAME]`: the Flapping plugin becomes the built-in flapping options;
    /// every other plugin is reported as unsupported.
    fn plugins(&mut self, env: &Env) -> Result<Option<Flapping>, ConfigError> {
        let ini = self.ini;
        let mut flapping: Option<Flapping> = None;
        for section in &ini.sections {
            if !matches!(classify(&section.name), Some(Kind::Plugin(_))) {
                continue;
            }
            let options = self.options(section, |v| {
                expand_circus(v, |k, orig| env_var(env, k, orig))
            });
            if options.is_empty() {
                continue; // Circus skips empty sections
            }
            let header = Origin {
                pos: section.pos,
                key: format!("[{}]", section.name),
            };
            let get = |key: &str| {
                options
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, o)| o.clone())
            };
            let Some(class) = get("use") else {
                self.warn(
                    &header,
                    "has no 'use = package.module.Class', so Circus cannot start it; ignored",
                );
                continue;
            };
            if let Some(active) = get("active") {
                if !self.boolean(&active)? {
                    self.warn(
                        &active.origin,
                        "inactive plugin (active = false): ignored, as by Circus",
                    );
                    continue;
                }
            }
            let name = class.value.trim().to_string();
            if name != FLAPPING_PLUGIN {
                self.warn(
                    &class.origin,
                    format!(
                        "plugin {name} is not supported and is not started: {}",
                        plugin_advice(&name)
                    ),
                );
                continue;
            }
            if flapping.is_some() {
                self.warn(
                    &class.origin,
                    "a second Flapping plugin: ignored, the first one sets the flapping options",
                );
                continue;
            }
            let mut plugin = Flapping {
                attempts: None,
                window: None,
                retry_in: None,
                max_retry: None,
                origin: class.origin.clone(),
            };
            for (key, opt) in &options {
                let origin = opt.origin.clone();
                match key.as_str() {
                    "attempts" => plugin.attempts = Some((self.integer(opt)?, origin)),
                    "window" => plugin.window = Some((self.seconds(opt)?, origin)),
                    "retry_in" => plugin.retry_in = Some((self.seconds(opt)?, origin)),
                    "max_retry" => plugin.max_retry = Some((self.integer(opt)?, origin)),
                    "use" | "active" => {}
                    _ => self.warn(&origin, "not an option of the Flapping plugin; ignored"),
                }
            }
            self.warn(
                &class.origin,
                "Ringmaster detects flapping itself: this plugin becomes check_flapping = true \
                 on every watcher, with flapping_attempts = attempts, flapping_window = window + \
                 [circus] check_delay (the span Circus really measures), retry_in and max_retry \
                 (a watcher's flapping.* options override them)",
            );
            flapping = Some(plugin);
        }
        Ok(flapping)
    }

    /// `[socket:NAME]` sections.
    fn sockets(&mut self, env: &Env) -> Result<(), ConfigError> {
        let ini = self.ini;
        let mut seen: BTreeMap<String, Origin> = BTreeMap::new();
        for section in &ini.sections {
            let Some(Kind::Socket(raw_name)) = classify(&section.name) else {
                continue;
            };
            let options = self.options(section, |v| {
                expand_circus(v, |k, orig| env_var(env, k, orig))
            });
            if options.is_empty() {
                continue; // Circus skips empty sections
            }
            // Circus lower-cases socket names.
            let name = raw_name.to_lowercase();
            let header = Origin {
                pos: section.pos,
                key: format!("[{}]", section.name),
            };
            if let Some(first) = seen.get(&name) {
                let place = self.ini.place(first.pos);
                return Err(self.error(
                    &header,
                    format!(
                        "a second socket named '{name}' (the first is at {place}; socket names \
                         are lower-cased): rename one"
                    ),
                ));
            }
            seen.insert(name.clone(), header.clone());
            self.table_at(&["sockets", &name], &header);
            let get = |key: &str| {
                options
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, o)| o.clone())
            };
            let family = match get("family") {
                Some(opt) => match opt.value.trim().to_ascii_uppercase().as_str() {
                    f @ ("AF_INET" | "AF_INET6" | "AF_UNIX") => Some((f.to_string(), opt)),
                    other => {
                        return Err(self.error(
                            &opt.origin,
                            format!("unknown family {other:?}: use AF_INET, AF_INET6 or AF_UNIX"),
                        ))
                    }
                },
                None => None,
            };
            if let Some(opt) = get("type") {
                let kind = opt.value.trim().to_ascii_uppercase();
                if kind != "SOCK_STREAM" {
                    let what = if ["SOCK_DGRAM", "SOCK_RAW", "SOCK_RDM", "SOCK_SEQPACKET"]
                        .contains(&kind.as_str())
                    {
                        format!("{kind} sockets are not supported")
                    } else {
                        format!("unknown socket type {kind:?}")
                    };
                    return Err(self.error(
                        &opt.origin,
                        format!(
                            "{what}: Ringmaster binds listening stream sockets only (type = \
                             SOCK_STREAM, the default)"
                        ),
                    ));
                }
            }
            if let Some(opt) = get("proto") {
                let proto = opt.value.trim().to_ascii_lowercase();
                if !["", "0", "ip", "tcp", "6"].contains(&proto.as_str()) {
                    return Err(self.error(
                        &opt.origin,
                        format!(
                            "protocol {proto:?} is not supported: a stream socket speaks TCP \
                             (leave proto out)"
                        ),
                    ));
                }
            }
            match get("path") {
                Some(path) => {
                    self.set(
                        &["sockets", &name, "path"],
                        toml::Value::String(path.value.clone()),
                        &path.origin,
                    );
                    for key in ["host", "port"] {
                        if let Some(opt) = get(key) {
                            self.warn(
                                &opt.origin,
                                "ignored: 'path' makes this a unix socket (as in Circus)",
                            );
                        }
                    }
                    if let Some((f, opt)) = &family {
                        if f != "AF_UNIX" {
                            self.warn(
                                &opt.origin,
                                "ignored: 'path' makes this a unix socket (AF_UNIX), as in Circus",
                            );
                        }
                    }
                }
                None => {
                    if let Some((f, opt)) = &family {
                        if f == "AF_UNIX" {
                            return Err(self.error(
                                &opt.origin,
                                "an AF_UNIX socket needs a 'path' (the socket file to bind)",
                            ));
                        }
                    }
                    let inet6 = family.as_ref().is_some_and(|(f, _)| f == "AF_INET6");
                    let (host, host_origin) = match get("host") {
                        Some(opt) => (opt.value.trim().to_string(), opt.origin),
                        None => ("localhost".to_string(), header.clone()),
                    };
                    let host = match host.as_str() {
                        "localhost" if inet6 => "::1".to_string(),
                        "localhost" => "127.0.0.1".to_string(),
                        _ => host,
                    };
                    match host.parse::<std::net::IpAddr>() {
                        Ok(std::net::IpAddr::V6(_)) if !inet6 => {
                            return Err(self.error(
                                &host_origin,
                                format!(
                                    "{host} is an IPv6 address but the family is AF_INET (the \
                                     default): add family = AF_INET6"
                                ),
                            ))
                        }
                        Ok(std::net::IpAddr::V4(_)) if inet6 => {
                            return Err(self.error(
                                &host_origin,
                                format!(
                                    "{host} is an IPv4 address but the family is AF_INET6: \
                                     remove family, or use an IPv6 address"
                                ),
                            ))
                        }
                        _ => {}
                    }
                    self.set(
                        &["sockets", &name, "host"],
                        toml::Value::String(host),
                        &host_origin,
                    );
                    let (port, port_origin) = match get("port") {
                        Some(opt) => {
                            let port = self.integer(&opt)?;
                            if !(0..=65535).contains(&port) {
                                return Err(self.error(
                                    &opt.origin,
                                    format!(
                                        "{port} is not a TCP port (0 to 65535; 0: any free port)"
                                    ),
                                ));
                            }
                            (port, opt.origin)
                        }
                        None => (8080, header.clone()),
                    };
                    self.set(
                        &["sockets", &name, "port"],
                        toml::Value::Integer(port),
                        &port_origin,
                    );
                }
            }
            for (key, opt) in &options {
                let path = |k: &'static str| ["sockets", name.as_str(), k];
                match key.as_str() {
                    "host" | "port" | "path" | "family" | "type" | "proto" => {}
                    "backlog" => {
                        let backlog = self.integer(opt)?;
                        self.set(&path("backlog"), toml::Value::Integer(backlog), &opt.origin);
                    }
                    "umask" => {
                        let text = opt.value.trim();
                        let mask = self.integer(opt)?;
                        if !(0..=0o777).contains(&mask) {
                            return Err(self.error(
                                &opt.origin,
                                format!(
                                    "Circus reads a socket umask as a decimal number, so {text} \
                                     is {mask:#o}, which is not a umask: write the mask in \
                                     decimal (63 for 0o077, 18 for 0o022)"
                                ),
                            ));
                        }
                        if text.len() > 1 && text.starts_with('0') {
                            self.warn(
                                &opt.origin,
                                format!(
                                    "Circus reads a socket umask as a decimal number, so {text} \
                                     means {mask:#05o}, not {text} octal; Ringmaster does the \
                                     same, so that the socket file gets the same mode"
                                ),
                            );
                        }
                        self.set(&path("umask"), toml::Value::Integer(mask), &opt.origin);
                    }
                    "replace" => {
                        let b = self.boolean(opt)?;
                        self.set(&path("replace"), toml::Value::Boolean(b), &opt.origin);
                    }
                    "so_reuseport" => {
                        let b = self.boolean(opt)?;
                        self.set(&path("reuseport"), toml::Value::Boolean(b), &opt.origin);
                    }
                    "blocking" => {
                        if self.boolean(opt)? {
                            self.warn(
                                &opt.origin,
                                "ignored: processes get the socket in the mode the agent binds \
                                 it with; set blocking mode in the program if it matters",
                            );
                        }
                    }
                    "interface" => self.warn(
                        &opt.origin,
                        "ignored: Ringmaster does not bind sockets to a device; give the \
                         interface's address as host (circusd cannot apply it on Python 3 \
                         either)",
                    ),
                    _ => self.warn(
                        &opt.origin,
                        "unknown socket option, ignored (Circus ignores it too); check its name",
                    ),
                }
            }
        }
        Ok(())
    }

    /// `[watcher:NAME]` sections, with their `[env:…]` environments.
    fn watchers(
        &mut self,
        global_env: &Env,
        check_delay: f64,
        flapping: Option<&Flapping>,
    ) -> Result<(), ConfigError> {
        let ini = self.ini;
        let watcher_sections: Vec<(&Section, &str)> = ini
            .sections
            .iter()
            .filter_map(|s| match classify(&s.name) {
                Some(Kind::Watcher(name)) => Some((s, name)),
                _ => None,
            })
            .collect();
        let env_sections: Vec<(&Section, Vec<String>)> = ini
            .sections
            .iter()
            .filter_map(|s| match classify(&s.name) {
                Some(Kind::EnvFor(patterns)) => Some((
                    s,
                    patterns.split(',').map(|p| p.trim().to_string()).collect(),
                )),
                _ => None,
            })
            .collect();
        for (section, patterns) in &env_sections {
            for pattern in patterns {
                if !watcher_sections
                    .iter()
                    .any(|(_, name)| fnmatch(pattern, name))
                {
                    let origin = Origin {
                        pos: section.pos,
                        key: format!("[{}]", section.name),
                    };
                    self.warn(
                        &origin,
                        format!("'{pattern}' matches no watcher: these variables go nowhere"),
                    );
                }
            }
        }
        for (section, name) in watcher_sections {
            let header = Origin {
                pos: section.pos,
                key: format!("[{}]", section.name),
            };
            if ini.effective(section).is_empty() {
                self.warn(&header, "empty watcher section: skipped, as Circus does");
                continue;
            }
            // The watcher's own variables: its [env:…] sections in file order, later
            // sections winning.
            let mut own_env: BTreeMap<String, Opt> = BTreeMap::new();
            for (env_section, patterns) in &env_sections {
                if !patterns.iter().any(|p| fnmatch(p, name)) {
                    continue;
                }
                let options = self.options(env_section, |v| {
                    expand_circus(v, |k, orig| env_var(global_env, k, orig))
                });
                for (key, opt) in options {
                    let value = self.dollar_vars(&opt);
                    own_env.insert(
                        key,
                        Opt {
                            value,
                            origin: opt.origin,
                        },
                    );
                }
            }
            let mut env = global_env.clone();
            env.extend(own_env.iter().map(|(k, o)| (k.clone(), o.value.clone())));
            let pass1 = self.options(section, |v| {
                expand_circus(v, |k, orig| env_var(&env, k, orig))
            });
            // Watcher options as variables ($(circus.numprocesses), free-form keys), as
            // Circus offers them when it spawns; here they are fixed at load.
            let mut statics: BTreeMap<String, String> = BTreeMap::new();
            statics.insert("numprocesses".into(), "1".into());
            for (key, opt) in &pass1 {
                if matches!(key.as_str(), "numprocesses" | "working_dir" | "uid" | "gid")
                    || !is_known_watcher_option(key)
                {
                    statics.insert(key.to_lowercase(), opt.value.clone());
                }
            }
            let options: Vec<(String, Opt)> = pass1
                .into_iter()
                .map(|(key, opt)| {
                    let value = expand_circus(&opt.value, |k, _| {
                        if k.starts_with("env.") || k.starts_with("sockets.") || k == "wid" {
                            None
                        } else {
                            statics.get(k).cloned()
                        }
                    });
                    (
                        key,
                        Opt {
                            value,
                            origin: opt.origin,
                        },
                    )
                })
                .collect();
            self.watcher(name, &header, &options, &own_env, check_delay, flapping)?;
        }
        Ok(())
    }

    /// One watcher.
    fn watcher(
        &mut self,
        name: &str,
        header: &Origin,
        options: &[(String, Opt)],
        own_env: &BTreeMap<String, Opt>,
        check_delay: f64,
        flapping: Option<&Flapping>,
    ) -> Result<(), ConfigError> {
        self.table_at(&["watchers", name], header);
        let get = |key: &str| options.iter().find(|(k, _)| k == key).map(|(_, o)| o);
        let flag = |this: &Self, key: &str| -> Result<bool, ConfigError> {
            get(key).map_or(Ok(false), |o| this.boolean(o))
        };
        let shell = flag(self, "shell")?;
        let copy_env = flag(self, "copy_env")?;
        let close_stdout = flag(self, "close_child_stdout")?;
        let close_stderr = flag(self, "close_child_stderr")?;
        let mut streams: BTreeMap<&str, Vec<(String, Opt)>> = BTreeMap::new();
        let mut flap: Vec<(String, Opt)> = Vec::new();
        let mut passthrough: Vec<(String, Opt)> = Vec::new();
        let mut max_retry: Option<(i64, Origin)> = None;
        for (key, opt) in options {
            let o = &opt.origin;
            let at = |k: &str| -> Vec<String> { vec!["watchers".into(), name.into(), k.into()] };
            let set = |this: &mut Self, k: &str, v: toml::Value| {
                let path = at(k);
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                this.set(&path, v, o);
            };
            match key.as_str() {
                "cmd" | "args" | "working_dir" => {
                    set(self, key, toml::Value::String(opt.value.clone()));
                }
                "stop_signal" => {
                    set(self, key, toml::Value::String(opt.value.trim().to_string()));
                }
                "numprocesses" | "priority" => {
                    let n = self.integer(opt)?;
                    set(self, key, toml::Value::Integer(n));
                }
                "max_retry" => max_retry = Some((self.integer(opt)?, o.clone())),
                "warmup_delay" | "graceful_timeout" | "max_age" | "max_age_variance" => {
                    let s = self.seconds(opt)?;
                    set(self, key, toml::Value::Float(s));
                }
                "shell" | "stop_children" | "use_sockets" | "singleton" | "copy_env"
                | "respawn" | "autostart" | "close_child_stdin" | "on_demand" => {
                    let b = self.boolean(opt)?;
                    set(self, key, toml::Value::Boolean(b));
                }
                "close_child_stdout" | "close_child_stderr" => {
                    if self.boolean(opt)? {
                        let stream = if key == "close_child_stdout" {
                            "stdout"
                        } else {
                            "stderr"
                        };
                        set(self, stream, toml::Value::String("null".into()));
                    }
                }
                "uid" | "gid" => {
                    let text = opt.value.trim();
                    let value = match text.parse::<i64>() {
                        Ok(id) => toml::Value::Integer(id),
                        Err(_) => toml::Value::String(text.to_string()),
                    };
                    set(self, key, value);
                }
                "send_hup" => {
                    if self.boolean(opt)? {
                        self.warn(
                            o,
                            "not supported: a reload starts new processes (graceful, as Circus \
                             does without send_hup) instead of sending SIGHUP; to have a \
                             process reload itself, send it the signal: nodectl signal NAME hup",
                        );
                    }
                }
                "check_flapping" => {
                    self.boolean(opt)?;
                    self.warn(
                        o,
                        "ignored: Circus 0.19 reads it but never uses it, so Ringmaster ignores \
                         it too; flapping detection follows the Flapping plugin (turn it off for \
                         one watcher with flapping.active = false)",
                    );
                }
                "executable" => {
                    return Err(self.error(
                        o,
                        "not supported (it would change which program runs): Ringmaster runs \
                         the first word of cmd; put the program there (cmd = /path/to/program \
                         args...)",
                    ))
                }
                "shell_args" => {
                    if shell {
                        return Err(self.error(
                            o,
                            "not supported (the shell would run without these arguments): \
                             put them in cmd, which the shell runs",
                        ));
                    }
                    self.warn(o, "ignored without shell = true (as in Circus)");
                }
                "copy_path" => {
                    if self.boolean(opt)? {
                        if !copy_env {
                            return Err(self.error(
                                o,
                                "needs copy_env = true (circusd refuses it too: copy_env and \
                                 copy_path must have the same value)",
                            ));
                        }
                        self.warn(
                            o,
                            "ignored: Ringmaster is not Python, so there is no sys.path to put \
                             in PYTHONPATH; the processes get the agent's environment \
                             (copy_env), including its PYTHONPATH if it has one",
                        );
                    }
                }
                "virtualenv" => {
                    return Err(self.error(
                        o,
                        "not supported (the processes would run outside the virtualenv): use \
                         the virtualenv's programs in cmd (cmd = /venv/bin/python app.py), and \
                         set VIRTUAL_ENV or PATH in an [env:NAME] section if the program needs \
                         them",
                    ))
                }
                "virtualenv_py_ver" => {
                    if get("virtualenv").is_none() {
                        self.warn(o, "ignored without virtualenv (as in Circus)");
                    }
                }
                "stdin_socket" => {
                    return Err(self.error(
                        o,
                        "not supported (the processes would read stdin instead of the \
                         socket): set use_sockets = true and pass the socket's descriptor \
                         with $(circus.sockets.NAME) in cmd",
                    ))
                }
                "env" => self.warn(
                    o,
                    "ignored: Circus replaces a watcher's env option with its [env] sections; \
                     set variables in an [env:NAME] section",
                ),
                "name" | "stream_backend" => self.warn(o, "ignored (Circus ignores it too)"),
                k if k.starts_with("hooks.") => self.hook(name, &k["hooks.".len()..], opt)?,
                k if k.starts_with("rlimit_") => {
                    let limit = k["rlimit_".len()..].to_ascii_lowercase();
                    if !RLIMIT_NAMES.contains(&limit.as_str()) {
                        return Err(self.error(
                            o,
                            format!(
                                "unknown resource limit '{limit}': Linux has {}",
                                RLIMIT_NAMES
                                    .iter()
                                    .map(|n| format!("rlimit_{n}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                    let text = opt.value.trim();
                    let value = if text.is_empty() || text == "-1" {
                        toml::Value::String("unlimited".into())
                    } else {
                        let n = self.integer(opt)?;
                        if n < 0 {
                            return Err(self.error(
                                o,
                                format!("{n} is not a limit: give a number >= 0, or nothing for unlimited"),
                            ));
                        }
                        toml::Value::Integer(n)
                    };
                    set(self, &format!("rlimit_{limit}"), value);
                }
                k if k.starts_with("stdout_stream.") || k.starts_with("stderr_stream.") => {
                    let (stream, option) = k.split_once("_stream.").unwrap_or((k, ""));
                    let stream = if stream == "stdout" {
                        "stdout"
                    } else {
                        "stderr"
                    };
                    streams
                        .entry(stream)
                        .or_default()
                        .push((option.to_string(), opt.clone()));
                }
                k if k.starts_with("flapping.") => {
                    flap.push((k["flapping.".len()..].to_string(), opt.clone()));
                }
                k if k.starts_with("ringmaster.") => {
                    passthrough.push((k["ringmaster.".len()..].to_string(), opt.clone()));
                }
                _ => self.warn(
                    o,
                    "unknown option, ignored (Circus keeps it as a free-form option for \
                     plugins); check its name",
                ),
            }
        }

        if !own_env.is_empty() {
            for (key, opt) in own_env {
                self.set(
                    &["watchers", name, "env", key],
                    toml::Value::String(opt.value.clone()),
                    &opt.origin,
                );
            }
        }
        if let Some((mask, origin)) = self.circus_umask.clone() {
            self.set(
                &["watchers", name, "umask"],
                toml::Value::String(format!("{mask:03o}")),
                &origin,
            );
        }
        for (stream, spec) in streams {
            let closed = if stream == "stdout" {
                close_stdout
            } else {
                close_stderr
            };
            if closed {
                let origin = spec[0].1.origin.clone();
                self.warn(
                    &origin,
                    format!(
                        "{stream}_stream has no effect with close_child_{stream} = true (the \
                         output goes to /dev/null, as in Circus)"
                    ),
                );
                continue;
            }
            let (value, origin) = self.stream(stream, &spec)?;
            self.set(&["watchers", name, stream], value, &origin);
        }
        self.flapping(name, header, &flap, max_retry, check_delay, flapping)?;
        for (key, opt) in passthrough {
            let value = infer_value(&opt.value);
            let mut path = vec!["watchers", name];
            path.extend(key.split('.'));
            self.set(&path, value, &opt.origin);
        }
        Ok(())
    }

    /// The flapping options of watcher `name`.
    fn flapping(
        &mut self,
        name: &str,
        header: &Origin,
        flap: &[(String, Opt)],
        max_retry: Option<(i64, Origin)>,
        check_delay: f64,
        plugin: Option<&Flapping>,
    ) -> Result<(), ConfigError> {
        let mut attempts = None;
        let mut window = None;
        let mut retry_in = None;
        let mut flap_max_retry = None;
        let mut active = None;
        for (option, opt) in flap {
            let origin = opt.origin.clone();
            match option.as_str() {
                "attempts" => attempts = Some((self.integer(opt)?, origin)),
                "window" => window = Some((self.seconds(opt)?, origin)),
                "retry_in" => retry_in = Some((self.seconds(opt)?, origin)),
                "max_retry" => flap_max_retry = Some((self.integer(opt)?, origin)),
                "active" => active = Some((self.boolean(opt)?, origin)),
                _ => self.warn(
                    &origin,
                    "not a flapping option (attempts, window, retry_in, max_retry, active); ignored",
                ),
            }
        }
        let path = |k: &'static str| ["watchers", name, k];
        let Some(plugin) = plugin else {
            if let Some((_, opt)) = flap.first() {
                let origin = opt.origin.clone();
                self.warn(
                    &origin,
                    "flapping.* options only work with the Flapping plugin ([plugin:flapping] \
                     use = circus.plugins.flapping.Flapping); without it Circus restarts a \
                     crashing process forever, and so does Ringmaster here (check_flapping = \
                     false; its backoff still spaces the restarts)",
                );
            }
            self.set(&path("check_flapping"), toml::Value::Boolean(false), header);
            if let Some((n, origin)) = max_retry {
                self.set(&path("max_retry"), toml::Value::Integer(n), &origin);
            }
            return Ok(());
        };
        let (on, origin) = active.unwrap_or((true, plugin.origin.clone()));
        self.set(&path("check_flapping"), toml::Value::Boolean(on), &origin);
        if let Some((n, origin)) = attempts.or_else(|| plugin.attempts.clone()) {
            self.set(&path("flapping_attempts"), toml::Value::Integer(n), &origin);
        }
        let (seconds, origin) = window
            .or_else(|| plugin.window.clone())
            .unwrap_or((1.0, plugin.origin.clone()));
        self.set(
            &path("flapping_window"),
            toml::Value::Float(seconds + check_delay),
            &origin,
        );
        if let Some((s, origin)) = retry_in.or_else(|| plugin.retry_in.clone()) {
            self.set(&path("retry_in"), toml::Value::Float(s), &origin);
        }
        if let Some((n, origin)) = flap_max_retry
            .or(max_retry)
            .or_else(|| plugin.max_retry.clone())
        {
            self.set(&path("max_retry"), toml::Value::Integer(n), &origin);
        }
        Ok(())
    }

    /// `hooks.NAME = command[, ignore_errors]`.
    fn hook(&mut self, watcher: &str, hook: &str, opt: &Opt) -> Result<(), ConfigError> {
        let o = &opt.origin;
        if hook == "extended_stats" {
            self.warn(
                o,
                "not supported: Ringmaster's stats cannot be extended by a hook; nodectl stats \
                 and nodetop show CPU, memory and age per process",
            );
            return Ok(());
        }
        if !HOOK_NAMES.contains(&hook) {
            self.warn(
                o,
                format!(
                    "unknown hook '{hook}': neither Circus nor Ringmaster calls it (hooks are {})",
                    HOOK_NAMES.join(", ")
                ),
            );
            return Ok(());
        }
        let value = opt.value.trim();
        let first = value.split(',').next().unwrap_or("").trim();
        if looks_like_python_callable(first) {
            return Err(self.error(
                o,
                format!(
                    "{first} is a Python callable, but Ringmaster hooks are command lines (run \
                     by /bin/sh -c with the watcher's environment; a non-zero exit is a \
                     failure): write the command to run instead, e.g. hooks.{hook} = \
                     /usr/local/bin/{hook}.sh, true"
                ),
            ));
        }
        let (cmd, ignore) = match value.rsplit_once(',') {
            Some((cmd, flag)) => match parse_bool(flag) {
                Some(flag) => (cmd.trim(), flag),
                None => (value, false),
            },
            None => (value, false),
        };
        if cmd.is_empty() {
            return Err(self.error(o, "is empty: give the command to run"));
        }
        let mut table = toml::Table::new();
        table.insert("cmd".into(), toml::Value::String(cmd.to_string()));
        table.insert(
            "ignore_errors".into(),
            toml::Value::Boolean(ignore || HOOKS_IGNORING_ERRORS.contains(&hook)),
        );
        self.set(
            &["watchers", watcher, "hooks", hook],
            toml::Value::Table(table),
            o,
        );
        Ok(())
    }

    /// `stdout_stream.*` or `stderr_stream.*` (`spec`: the options after the dot)
    /// as Ringmaster's output setting, and where it is set.
    fn stream(
        &mut self,
        stream: &str,
        spec: &[(String, Opt)],
    ) -> Result<(toml::Value, Origin), ConfigError> {
        let get = |key: &str| spec.iter().find(|(k, _)| k == key).map(|(_, o)| o);
        let first = spec
            .iter()
            .find(|(k, _)| k == "class")
            .or_else(|| spec.iter().find(|(k, _)| k == "filename"))
            .unwrap_or(&spec[0])
            .1
            .origin
            .clone();
        let class = match get("class") {
            Some(opt) => {
                let written = opt.value.trim();
                let short = written
                    .strip_prefix("circus.stream.file_stream.")
                    .or_else(|| written.strip_prefix("circus.stream."))
                    .unwrap_or(written);
                if short.contains('.') {
                    return Err(self.error(
                        &opt.origin,
                        format!(
                            "custom stream class {written} is not supported: Ringmaster writes \
                             output to the agent's stdout/stderr, /dev/null, or a file with \
                             rotation (FileStream, TimedRotatingFileStream)"
                        ),
                    ));
                }
                short.to_string()
            }
            None if get("filename").is_some() => "FileStream".to_string(),
            None => {
                return Err(self.error(
                    &first,
                    format!(
                        "{stream}_stream needs {stream}_stream.filename (or a \
                         {stream}_stream.class): circusd refuses it too"
                    ),
                ))
            }
        };
        let allowed: &[&str] = match class.as_str() {
            "FileStream" => &["filename", "max_bytes", "backup_count", "time_format"],
            "WatchedFileStream" => &["filename", "time_format"],
            "TimedRotatingFileStream" => &[
                "filename",
                "backup_count",
                "time_format",
                "rotate_when",
                "rotate_interval",
                "utc",
            ],
            "StdoutStream" => &[],
            "FancyStdoutStream" => &["color", "time_format"],
            "QueueStream" => {
                return Err(self.error(
                    &first,
                    "QueueStream is not supported: it hands output to Python code inside \
                     circusd; write it to a file (stdout_stream.filename) or read it with \
                     nodectl logs",
                ))
            }
            other => {
                return Err(self.error(
                    &first,
                    format!(
                        "unknown stream class {other}: Circus has FileStream, \
                         WatchedFileStream, TimedRotatingFileStream, StdoutStream, \
                         FancyStdoutStream and QueueStream"
                    ),
                ))
            }
        };
        for (key, opt) in spec {
            if key != "class" && !allowed.contains(&key.as_str()) {
                let origin = opt.origin.clone();
                self.warn(
                    &origin,
                    format!("not an option of {class}; ignored (as in Circus)"),
                );
            }
        }
        match class.as_str() {
            // Circus pipes the output and writes it to circusd's stdout: the agent
            // does the same with "capture" (and keeps it for nodectl logs).
            "StdoutStream" => return Ok((toml::Value::String("capture".into()), first)),
            "FancyStdoutStream" => {
                self.warn(
                    &first,
                    "the lines go to the agent's output with FancyStdoutStream's \
                     'time [pid] | ' prefix, but without its colours",
                );
                let mut table = toml::Table::new();
                table.insert("to".into(), toml::Value::String("capture".into()));
                table.insert("timestamp".into(), toml::Value::Boolean(true));
                if let Some(opt) = get("time_format") {
                    table.insert("time_format".into(), toml::Value::String(opt.value.clone()));
                }
                return Ok((toml::Value::Table(table), first));
            }
            _ => {}
        }
        let Some(filename) = get("filename") else {
            return Err(self.error(
                &first,
                format!("{class} needs {stream}_stream.filename, the file to write to"),
            ));
        };
        let mut table = toml::Table::new();
        table.insert("to".into(), toml::Value::String(filename.value.clone()));
        for key in ["max_bytes", "backup_count", "rotate_interval"] {
            if let Some(opt) = get(key).filter(|_| allowed.contains(&key)) {
                let n = self.integer(opt)?;
                if n < 0 {
                    return Err(self.error(&opt.origin, format!("{n} is negative")));
                }
                table.insert(key.into(), toml::Value::Integer(n));
            }
        }
        if let Some(opt) = get("time_format") {
            table.insert("timestamp".into(), toml::Value::Boolean(true));
            table.insert("time_format".into(), toml::Value::String(opt.value.clone()));
        }
        if class == "TimedRotatingFileStream" {
            let Some(when) = get("rotate_when") else {
                return Err(self.error(
                    &first,
                    format!(
                        "TimedRotatingFileStream needs {stream}_stream.rotate_when (S, M, H, D, \
                         MIDNIGHT or W0-W6)"
                    ),
                ));
            };
            let upper = when.value.trim().to_ascii_uppercase();
            let valid = matches!(upper.as_str(), "S" | "M" | "H" | "D" | "MIDNIGHT")
                || (upper.len() == 2
                    && upper.starts_with('W')
                    && ('0'..='6').contains(&upper.chars().nth(1).unwrap_or('x')));
            if !valid {
                return Err(self.error(
                    &when.origin,
                    format!(
                        "{:?} is not a rotation interval: use S, M, H, D, MIDNIGHT or W0-W6 (W0 \
                         is Monday)",
                        when.value
                    ),
                ));
            }
            table.insert("rotate_when".into(), toml::Value::String(upper));
            if let Some(opt) = get("utc") {
                let utc = self.boolean(opt)?;
                if !utc {
                    let origin = opt.origin.clone();
                    self.warn(
                        &origin,
                        "Circus 0.19 takes any non-empty utc value as true (it calls bool() on \
                         the text); Ringmaster reads this one as false and rotates on local time",
                    );
                }
                table.insert("utc".into(), toml::Value::Boolean(utc));
            }
        }
        // WatchedFileStream needs nothing more: every file stream notices an
        // external rotation (moved or truncated) by itself.
        if table.len() == 1 {
            return Ok((toml::Value::String(filename.value.clone()), first));
        }
        Ok((toml::Value::Table(table), first))
    }

    // Value parsing with Circus's rules, errors at the option.

    fn boolean(&self, opt: &Opt) -> Result<bool, ConfigError> {
        parse_bool(&opt.value).ok_or_else(|| {
            self.error(
                &opt.origin,
                format!(
                    "{:?} is not a boolean: use true or false (or yes/no, on/off, 1/0)",
                    opt.value
                ),
            )
        })
    }

    fn integer(&self, opt: &Opt) -> Result<i64, ConfigError> {
        parse_int(&opt.value).ok_or_else(|| {
            self.error(
                &opt.origin,
                format!("{:?} is not a whole number", opt.value),
            )
        })
    }

    fn seconds(&self, opt: &Opt) -> Result<f64, ConfigError> {
        opt.value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| {
                self.error(
                    &opt.origin,
                    format!("{:?} is not a number of seconds >= 0", opt.value),
                )
            })
    }
}

/// Circus's booleans: true/yes/on/1 and false/no/off/0, in any case.
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Python's `int()` of a config value: optional sign, digits, `_` between digits.
fn parse_int(text: &str) -> Option<i64> {
    let text = text.trim();
    let digits = text.trim_start_matches(['+', '-']);
    if digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return None;
    }
    text.replace('_', "").parse().ok()
}

/// A `ringmaster.OPTION` value as TOML: a boolean, integer or float when it reads
/// as one (but not a number with a leading zero), else a string.
fn infer_value(text: &str) -> toml::Value {
    let text = text.trim();
    match text {
        "true" => return toml::Value::Boolean(true),
        "false" => return toml::Value::Boolean(false),
        _ => {}
    }
    // A leading zero means octal to people (umask = 077): keep it text, which
    // the options that take octal read as such.
    let leading_zero = text.len() > 1
        && text.starts_with('0')
        && text[1..].starts_with(|c: char| c.is_ascii_digit());
    if leading_zero {
        return toml::Value::String(text.to_string());
    }
    if let Ok(n) = text.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => toml::Value::Float(x),
        _ => toml::Value::String(text.to_string()),
    }
}

/// Watcher options Circus knows (anything else in a watcher section is free-form).
fn is_known_watcher_option(key: &str) -> bool {
    const KNOWN: &[&str] = &[
        "cmd",
        "args",
        "numprocesses",
        "warmup_delay",
        "executable",
        "working_dir",
        "shell",
        "shell_args",
        "uid",
        "gid",
        "send_hup",
        "stop_signal",
        "stop_children",
        "env",
        "copy_env",
        "copy_path",
        "virtualenv",
        "virtualenv_py_ver",
        "graceful_timeout",
        "max_retry",
        "respawn",
        "autostart",
        "priority",
        "singleton",
        "use_sockets",
        "stdin_socket",
        "close_child_stdin",
        "close_child_stdout",
        "close_child_stderr",
        "max_age",
        "max_age_variance",
        "on_demand",
        "check_flapping",
    ];
    KNOWN.contains(&key)
        || [
            "hooks.",
            "rlimit_",
            "stdout_stream.",
            "stderr_stream.",
            "ringmaster.",
        ]
        .iter()
        .any(|p| key.starts_with(p))
}

/// True when a hook value is a Python callable (`pkg.module.func` or
/// `pkg.module:func`) rather than a command line.
fn looks_like_python_callable(text: &str) -> bool {
    if text.is_empty() || text.contains(char::is_whitespace) || text.contains('/') {
        return false;
    }
    let (module, attribute) = match text.split_once(':') {
        Some((module, attribute)) => (module, Some(attribute)),
        None => (text, None),
    };
    let identifier = |part: &str| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = module.split('.').collect();
    let script =
        parts.len() == 2 && matches!(parts[1], "sh" | "bash" | "py" | "pl" | "rb" | "js" | "exe");
    (parts.len() >= 2 || attribute.is_some())
        && !script
        && parts.iter().all(|p| identifier(p))
        && attribute.is_none_or(identifier)
}

/// What to use instead of a Circus plugin Ringmaster does not run.
fn plugin_advice(class: &str) -> &'static str {
    let short = class.rsplit('.').next().unwrap_or(class);
    match short {
        "StatsdEmitter" => {
            "Ringmaster publishes every event on its pubsub endpoint \
             (event.<node>.<watcher>.<action> topics; nodectl listen prints them), from where \
             they can be forwarded to statsd"
        }
        "FullStats" => {
            "Ringmaster publishes CPU, memory and age per watcher and process on its pubsub \
             endpoint (stat.<node>.<watcher> topics); watch them with nodetop or nodectl stats"
        }
        "WatchDog" => {
            "there is no heartbeat watchdog: let a stuck worker exit (the agent respawns it at \
             once), or bound its life with max_age"
        }
        "HttpObserver" | "RedisObserver" => {
            "there are no health-check plugins: run the check as a watcher of its own that \
             restarts the service with nodectl restart when the check fails"
        }
        "ResourceWatcher" => {
            "there is no resource watcher: cap a watcher's resources with rlimit_* options \
             (rlimit_as, rlimit_cpu, rlimit_nofile) and watch usage with nodetop"
        }
        "CommandReloader" => {
            "there is no reload on a changed program: run nodectl restart NAME (or nodectl \
             reload NAME) after a deployment"
        }
        _ => "Ringmaster runs no Circus (Python) plugins; the section is ignored",
    }
}

// ---------------------------------------------------------------------------
// Writing the table as TOML, one key per line.
// ---------------------------------------------------------------------------

/// `table` as TOML text, and for each line the dotted key it sets (or the table it
/// opens).
fn emit(table: &toml::Table) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut lines = Vec::new();
    emit_table(table, &mut Vec::new(), &mut text, &mut lines);
    (text, lines)
}

fn emit_table(
    table: &toml::Table,
    path: &mut Vec<String>,
    text: &mut String,
    lines: &mut Vec<String>,
) {
    for (key, value) in table {
        if !value.is_table() {
            text.push_str(&format!("{} = {}\n", toml_key(key), inline_value(value)));
            lines.push(dotted(path, Some(key)));
        }
    }
    for (key, value) in table {
        if let toml::Value::Table(inner) = value {
            path.push(key.clone());
            let header: Vec<String> = path.iter().map(|p| toml_key(p)).collect();
            text.push_str(&format!("[{}]\n", header.join(".")));
            lines.push(dotted(path, None));
            emit_table(inner, path, text, lines);
            path.pop();
        }
    }
}

fn dotted(path: &[String], key: Option<&str>) -> String {
    let mut parts: Vec<&str> = path.iter().map(String::as_str).collect();
    parts.extend(key);
    parts.join(".")
}

/// A key, bare when it can be, else quoted.
fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        toml_string(key)
    }
}

/// A value on one line.
fn inline_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => toml_string(s),
        toml::Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(inline_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        toml::Value::Table(table) => format!(
            "{{ {} }}",
            table
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_key(k), inline_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A basic (double-quoted) TOML string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IdSpec, Limit, Output, Umask};
    use ringmaster_protocol::Signal;

    fn env() -> Vec<(String, String)> {
        vec![
            ("HOME".into(), "/home/ops".into()),
            ("DEPLOY".into(), "blue".into()),
            ("PATH".into(), "/usr/bin:/bin".into()),
        ]
    }

    fn load_in(dir: &Path, source: &str) -> Result<Config, ConfigError> {
        let path = dir.join("circus.ini");
        std::fs::write(&path, source).unwrap();
        load_with(&path, source, &env(), Path::new("/srv/app"))
    }

    fn load_str(source: &str) -> Result<Config, ConfigError> {
        load_with(
            Path::new("circus.ini"),
            source,
            &env(),
            Path::new("/srv/app"),
        )
    }

    fn warnings(config: &Config) -> String {
        config
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn parse_ini(source: &str) -> Result<Ini, ConfigError> {
        let mut ini = Ini {
            files: vec![PathBuf::from("c.ini")],
            ..Ini::default()
        };
        ini.parse(0, source)?;
        Ok(ini)
    }

    #[test]
    fn reads_the_ini_syntax_as_circus_does() {
        let ini = parse_ini(
            "# comment\n; comment\nrem also a comment\n\n[watcher:web]\n\
             cmd = python app.py\n    --port 80\n\n\
             Args: -v ; an inline comment\n\
             url = http://x/;y\n\
             empty = \"\"\n\
             hash = a # b\n\
             [DEFAULT]\nshared = 1\n",
        )
        .unwrap();
        let web = &ini.sections[0];
        assert_eq!(web.name, "watcher:web");
        assert_eq!(web.get("cmd").unwrap().value, "python app.py\n--port 80");
        assert_eq!(web.get("cmd").unwrap().pos.line, 6);
        // Keys keep their case (Circus sets optionxform = str).
        assert!(web.get("args").is_none());
        assert_eq!(web.get("Args").unwrap().value, "-v");
        assert_eq!(web.get("url").unwrap().value, "http://x/;y");
        assert_eq!(web.get("empty").unwrap().value, "");
        assert_eq!(web.get("hash").unwrap().value, "a # b");
        assert_eq!(ini.defaults[0].key, "shared");
        assert_eq!(ini.effective(web).last().unwrap().key, "shared");
        assert!(ini.warnings[0].message.contains("'#' after a value"));
    }

    #[test]
    fn repeats_keep_the_first_value_with_a_warning() {
        let ini =
            parse_ini("[circus]\na = 1\na = 2\n  more\n[x]\nb = 1\n[circus]\nc = 3\n").unwrap();
        let circus = &ini.sections[0];
        assert_eq!(circus.get("a").unwrap().value, "1\nmore");
        assert_eq!(circus.get("c").unwrap().value, "3");
        assert_eq!(ini.sections.len(), 2);
        let text: Vec<String> = ini.warnings.iter().map(ToString::to_string).collect();
        assert!(
            text[0].starts_with("c.ini:3: 'a': option repeated"),
            "{text:?}"
        );
        assert!(text[0].contains("c.ini:2"), "{text:?}");
        assert!(
            text[1].starts_with("c.ini:7: '[circus]': section repeated"),
            "{text:?}"
        );
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let err = parse_ini("cmd = x\n").unwrap_err();
        assert_eq!(err.line, Some(1));
        assert!(err.message.contains("before any [section]"), "{err}");
        let err = parse_ini("[circus]\nendpoint = x\njust some words\n").unwrap_err();
        assert_eq!(err.to_string().split(": ").next(), Some("c.ini:3"));
        assert!(err.message.contains("key = value"), "{err}");
        let err = parse_ini("[circus]\n = x\n").unwrap_err();
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn fnmatch_follows_python() {
        assert!(fnmatch("web*", "web-1"));
        assert!(fnmatch("*", ""));
        assert!(fnmatch("w?b", "web"));
        assert!(!fnmatch("w?b", "weeb"));
        assert!(fnmatch("worker-[0-9]", "worker-7"));
        assert!(!fnmatch("worker-[!0-9]", "worker-7"));
        assert!(fnmatch("a[]]b", "a]b"));
        assert!(fnmatch("a[b", "a[b"));
        assert!(fnmatch("*.ini", "web.ini"));
        assert!(!fnmatch("*.ini", "web.ini.bak"));
        assert!(!fnmatch("Web", "web"));
        assert!(fnmatch("*a*b*", "xxaxxbxx"));
    }

    #[test]
    fn variables_expand_as_in_circus() {
        let env = env();
        let expand = |text: &str| expand_circus(text, |k, orig| env_var(&env, k, orig));
        assert_eq!(expand("$(circus.env.HOME)/x"), "/home/ops/x");
        assert_eq!(expand("((CIRCUS.ENV.home))"), "/home/ops");
        assert_eq!(expand("$(circus.env.NOPE)"), "$(circus.env.NOPE)");
        assert_eq!(
            expand("--fd ((circus.sockets.web))"),
            "--fd $(circus.sockets.web)"
        );
        assert_eq!(
            expand("$(circus.wid) $(other.x) ((circus.))"),
            "$(circus.wid) $(other.x) ((circus.))"
        );
        let mut missing = Vec::new();
        assert_eq!(
            expand_dollar_vars("$HOME/bin:$PATH $lower $NOPE_1 $(x) $", &env, &mut missing),
            "/home/ops/bin:/usr/bin:/bin $lower  $(x) $"
        );
        assert_eq!(missing, vec!["NOPE_1".to_string()]);
    }

    #[test]
    fn detects_circus_files() {
        assert!(is_circus_ini(Path::new("a.ini"), ""));
        assert!(!is_circus_ini(Path::new("a.toml"), "[circus]\n"));
        assert!(is_circus_ini(
            Path::new("circus.conf"),
            "# x\n[watcher:a]\ncmd = x\n"
        ));
        assert!(!is_circus_ini(
            Path::new("agent.conf"),
            "[env]\nA = \"x\"\n[watchers.a]\n"
        ));
        assert!(!is_circus_ini(
            Path::new("agent"),
            "[agent]\nnode = \"n\"\n"
        ));
    }

    #[test]
    fn translates_a_web_app() {
        let config = load_str(
            "[circus]\nendpoint = ipc:///run/c.sock\npubsub_endpoint = ipc:///run/p.sock\n\
             warmup_delay = 2\numask = 027\ncheck_delay = 1\n\
             [env]\nAPP_ENV = production\nHOME_BIN = $HOME/bin\n\
             [socket:Web]\nhost = 0.0.0.0\nport = 8000\nbacklog = 64\nso_reuseport = yes\n\
             [socket:admin]\npath = run/admin.sock\numask = 63\nreplace = true\n\
             [watcher:web]\ncmd = bin/web --fd $(circus.sockets.web) --wid ((circus.wid))\n\
             args = --env $(circus.env.APP_ENV) --n $(circus.numprocesses)\n\
             numprocesses = 4\nuse_sockets = True\nworking_dir = app\nuid = www-data\ngid = 33\n\
             stop_signal = QUIT\ngraceful_timeout = 12.5\nmax_age = 3600\nmax_age_variance = 60\n\
             priority = 10\nrlimit_nofile = 4096\nrlimit_core =\nrlimit_AS = -1\n\
             close_child_stdin = false\ncopy_env = true\n\
             stdout_stream.class = TimedRotatingFileStream\nstdout_stream.filename = logs/web.log\n\
             stdout_stream.rotate_when = midnight\nstdout_stream.backup_count = 7\n\
             stdout_stream.utc = true\nstdout_stream.time_format = %Y-%m-%d %H:%M:%S\n\
             close_child_stderr = true\n\
             hooks.before_start = /usr/bin/check-db --wait\nhooks.after_stop = logger stopped\n\
             [env:web,api]\nAPP_ENV = staging\nPATH = /opt/web/bin:$PATH\n\
             [env:w*]\nLEVEL = $(circus.env.DEPLOY)\n",
        )
        .unwrap();
        assert_eq!(config.agent.control, "ipc:///run/c.sock");
        assert_eq!(config.agent.pubsub, "ipc:///run/p.sock");
        assert_eq!(config.agent.warmup_delay, 2.0);
        let web = &config.sockets["web"];
        assert_eq!(
            (web.host.as_deref(), web.port, web.backlog),
            (Some("0.0.0.0"), Some(8000), 64)
        );
        assert!(web.reuseport);
        let admin = &config.sockets["admin"];
        assert_eq!(admin.path, Some(PathBuf::from("/srv/app/run/admin.sock")));
        assert_eq!(admin.umask, Umask(63));
        assert!(admin.replace);

        let w = &config.watchers["web"];
        assert_eq!(
            w.cmd,
            "bin/web --fd $(circus.sockets.web) --wid $(circus.wid)"
        );
        // $(circus.env.X) sees the watcher's [env:...] values; watcher options are
        // variables too.
        assert_eq!(w.args.0, vec!["--env", "staging", "--n", "4"]);
        assert_eq!(w.numprocesses, 4);
        assert!(w.use_sockets && w.copy_env && !w.close_child_stdin);
        assert_eq!(w.working_dir, Some(PathBuf::from("/srv/app/app")));
        assert_eq!(w.uid, Some(IdSpec::Name("www-data".into())));
        assert_eq!(w.gid, Some(IdSpec::Id(33)));
        assert_eq!(w.umask, Some(Umask(0o027)));
        assert_eq!(w.stop_signal, Signal::Quit);
        assert_eq!(w.graceful_timeout, 12.5);
        assert_eq!(
            (w.max_age, w.max_age_variance, w.priority),
            (3600.0, 60.0, 10)
        );
        assert_eq!(w.rlimit_nofile, Some(Limit::Value(4096)));
        assert_eq!(w.rlimit_core, Some(Limit::Unlimited));
        assert_eq!(w.rlimit_as, Some(Limit::Unlimited));
        assert_eq!(w.env["APP_ENV"], "staging", "[env:...] wins over [env]");
        assert_eq!(w.env["HOME_BIN"], "/home/ops/bin");
        assert_eq!(w.env["PATH"], "/opt/web/bin:/usr/bin:/bin");
        assert_eq!(w.env["LEVEL"], "blue");
        assert_eq!(
            w.stdout.to,
            Output::File(PathBuf::from("/srv/app/logs/web.log"))
        );
        assert_eq!(w.stdout.backup_count, 7);
        assert!(w.stdout.utc && w.stdout.timestamp);
        assert_eq!(
            w.stdout.rotate_when,
            Some(crate::config::RotateWhen::Midnight)
        );
        assert_eq!(w.stderr.to, Output::Null);
        let hooks: Vec<(&str, &str, bool)> = w
            .hooks
            .iter()
            .map(|(name, h)| (name, h.cmd.as_str(), h.ignore_errors))
            .collect();
        assert_eq!(
            hooks,
            vec![
                ("before_start", "/usr/bin/check-db --wait", false),
                ("after_stop", "logger stopped", true)
            ]
        );
        // Without the Flapping plugin, Circus never gives up on a crashing process.
        assert!(!w.flapping_enabled());
        let text = warnings(&config);
        assert!(
            text.contains("circus.ini:6: '[circus] check_delay'"),
            "{text}"
        );
        assert!(text.contains("'api' matches no watcher"), "{text}");
    }

    #[test]
    fn flapping_plugin_becomes_the_built_in_options() {
        let config = load_str(
            "[circus]\ncheck_delay = 2\n\
             [plugin:flapping]\nuse = circus.plugins.flapping.Flapping\nattempts = 3\nwindow = 4\n\
             retry_in = 9\nmax_retry = -1\n\
             [watcher:a]\ncmd = sleep 1\n\
             [watcher:b]\ncmd = sleep 1\nflapping.attempts = 5\nflapping.max_retry = 2\n\
             [watcher:c]\ncmd = sleep 1\nflapping.active = false\n\
             [plugin:stats]\nuse = circus.plugins.statsd.FullStats\n\
             [plugin:off]\nuse = circus.plugins.watchdog.WatchDog\nactive = false\n",
        )
        .unwrap();
        let a = &config.watchers["a"];
        assert!(a.flapping_enabled());
        assert_eq!(
            (
                a.flapping_attempts,
                a.flapping_window,
                a.retry_in,
                a.max_retry()
            ),
            (3, 6.0, 9.0, -1)
        );
        let b = &config.watchers["b"];
        assert_eq!((b.flapping_attempts, b.max_retry()), (5, 2));
        assert!(!config.watchers["c"].flapping_enabled());
        let text = warnings(&config);
        assert!(text.contains("detects flapping itself"), "{text}");
        assert!(
            text.contains("plugin circus.plugins.statsd.FullStats is not supported"),
            "{text}"
        );
        assert!(text.contains("inactive plugin"), "{text}");
    }

    #[test]
    fn stdout_stream_classes() {
        let config = load_str(
            "[watcher:a]\ncmd = x\nstdout_stream.class = StdoutStream\n\
             stderr_stream.class = FancyStdoutStream\nstderr_stream.color = red\n\
             [watcher:b]\ncmd = x\nstdout_stream.filename = /var/log/b.log\n\
             stderr_stream.class = circus.stream.FileStream\nstderr_stream.filename = b.err\n\
             stderr_stream.max_bytes = 1048576\nstderr_stream.backup_count = 3\n\
             [watcher:c]\ncmd = x\nstdout_stream.class = WatchedFileStream\nstdout_stream.filename = /var/log/c.log\n",
        )
        .unwrap();
        let a = &config.watchers["a"];
        assert_eq!(a.stdout.to, Output::Capture);
        assert_eq!(a.stderr.to, Output::Capture);
        assert!(a.stderr.timestamp);
        let b = &config.watchers["b"];
        assert_eq!(b.stdout.to, Output::File(PathBuf::from("/var/log/b.log")));
        assert_eq!(b.stderr.to, Output::File(PathBuf::from("/srv/app/b.err")));
        assert_eq!((b.stderr.max_bytes, b.stderr.backup_count), (1_048_576, 3));
        let text = warnings(&config);
        assert!(text.contains("without its colours"), "{text}");
        assert!(!text.contains("WatchedFileStream"), "{text}");

        let err =
            load_str("[watcher:a]\ncmd = x\nstdout_stream.class = QueueStream\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(
            err.to_string().contains("QueueStream is not supported"),
            "{err}"
        );
        let err = load_str("[watcher:a]\ncmd = x\nstdout_stream.class = my.Stream\n").unwrap_err();
        assert!(err.to_string().contains("custom stream class"), "{err}");
        let err = load_str("[watcher:a]\ncmd = x\nstdout_stream.max_bytes = 5\n").unwrap_err();
        assert!(
            err.to_string().contains("needs stdout_stream.filename"),
            "{err}"
        );
    }

    #[test]
    fn refuses_what_would_change_behaviour() {
        let cases = [
            (
                "hooks.before_start = myapp.hooks.check_db, true",
                "Python callable",
            ),
            ("hooks.after_spawn = myapp.hooks:notify", "Python callable"),
            ("executable = /usr/bin/python3", "first word of cmd"),
            ("virtualenv = /srv/venv", "virtualenv's programs"),
            ("stdin_socket = web", "use_sockets"),
            ("copy_path = true", "needs copy_env"),
            ("numprocesses = many", "not a whole number"),
            ("shell = maybe", "not a boolean"),
            ("rlimit_bogus = 5", "unknown resource limit"),
            ("graceful_timeout = -1", "seconds"),
        ];
        for (line, needle) in cases {
            let err = load_str(&format!("[watcher:w]\ncmd = sleep 1\n{line}\n")).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with("circus.ini:3: '[watcher:w] "),
                "{line}: {text}"
            );
            assert!(text.contains(needle), "{line}: {text}");
        }
        let config = load_str("[watcher:w]\ncmd = sleep 1\nhooks.before_start = check.sh\nshell_args = a\nsend_hup = true\nfoo = bar\n")
            .unwrap();
        assert_eq!(
            config.watchers["w"]
                .hooks
                .before_start
                .as_ref()
                .unwrap()
                .cmd,
            "check.sh"
        );
        let text = warnings(&config);
        assert!(
            text.contains("'[watcher:w] shell_args': ignored without shell"),
            "{text}"
        );
        assert!(text.contains("'[watcher:w] send_hup'"), "{text}");
        assert!(text.contains("'[watcher:w] foo': unknown option"), "{text}");
    }

    #[test]
    fn errors_from_the_shared_checks_point_at_the_ini() {
        let err =
            load_str("[watcher:w]\ncmd = x\nsingleton = true\nnumprocesses = 3\n").unwrap_err();
        assert_eq!(err.to_string(), "circus.ini:4: '[watcher:w] numprocesses': is 3 but the watcher is a singleton (at most 1)");
        let err = load_str("[watcher:w]\ncmd = x\n\nstop_signal = SIGNOPE\n").unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.to_string().contains("SIGNOPE"), "{err}");
        let err = load_str("[circus]\n\n[watcher:a.b]\ncmd = x\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(
            err.to_string().contains("invalid watcher name 'a.b'"),
            "{err}"
        );
        let err = load_str("[watcher:w]\nnumprocesses = 2\n").unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
        assert!(err.to_string().contains("cmd"), "{err}");
        let err = load_str("[circus]\nendpoint = tcp://0.0.0.0:5555\n").unwrap_err();
        assert_eq!(
            err.to_string().split(": '").next(),
            Some("circus.ini:2"),
            "{err}"
        );
        assert!(err.to_string().contains("insecure"), "{err}");
        // ... which an [agent] section (ignored by circusd) allows.
        let config = load_str("[circus]\nendpoint = tcp://0.0.0.0:5555\n[agent]\nnode = web-1\ninsecure = true\nlabels.zone = eu-1\n").unwrap();
        assert_eq!(config.agent.node, "web-1");
        assert_eq!(config.agent.labels["zone"], "eu-1");
        // A loopback TCP endpoint named the Circus way works without keys (the
        // agent warns at start); without one, the agent's private ipc:// default.
        let config = load_str(
            "[circus]\nendpoint = tcp://127.0.0.1:5555\npubsub_endpoint = tcp://127.0.0.1:5556\n",
        )
        .unwrap();
        assert!(config.agent.insecure);
        assert_eq!(config.agent.control, "tcp://127.0.0.1:5555");
        let config = load_str("[watcher:w]\ncmd = sleep 1\n").unwrap();
        assert!(!config.agent.insecure && config.agent.default_endpoints);
        let err = load_str("[agent]\nnodes = x\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn unknown_sections_are_refused() {
        let err = load_str("[circus]\n[watchers:web]\ncmd = x\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(
            err.to_string().contains("unknown section [watchers:web]"),
            "{err}"
        );
        assert!(err.to_string().contains("singular"), "{err}");
        let err = load_str("[Watcher:web]\ncmd = x\n").unwrap_err();
        assert!(err.to_string().contains("lower-case"), "{err}");
    }

    #[test]
    fn sockets_follow_circus() {
        let config = load_str("[socket:a]\nport = 9000\n[socket:b]\nfamily = AF_INET6\n[socket:c]\nhost = ::\nfamily = af_inet6\nport = 0\n[socket:d]\numask = 077\npath = /run/d.sock\n").unwrap();
        assert_eq!(config.sockets["a"].host.as_deref(), Some("127.0.0.1"));
        assert_eq!(config.sockets["b"].host.as_deref(), Some("::1"));
        assert_eq!(config.sockets["b"].port, Some(8080));
        assert_eq!(config.sockets["c"].port, Some(0));
        // Circus reads a socket umask as decimal.
        assert_eq!(config.sockets["d"].umask, Umask(77));
        assert!(
            warnings(&config).contains("decimal"),
            "{}",
            warnings(&config)
        );
        let err = load_str("[socket:a]\nhost = ::1\n").unwrap_err();
        assert!(err.to_string().contains("AF_INET6"), "{err}");
        let err = load_str("[socket:a]\nport = 1\ntype = SOCK_DGRAM\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(
            err.to_string()
                .contains("SOCK_DGRAM sockets are not supported"),
            "{err}"
        );
        let err = load_str("[socket:a]\nfamily = AF_UNIX\n").unwrap_err();
        assert!(err.to_string().contains("needs a 'path'"), "{err}");
        let err = load_str("[socket:a]\nport = 70000\n").unwrap_err();
        assert!(err.to_string().contains("not a TCP port"), "{err}");
        let err = load_str("[socket:a]\nport = 1\n[socket:A]\nport = 2\n").unwrap_err();
        assert_eq!(err.line, Some(3));
    }

    #[test]
    fn includes_are_relative_to_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::create_dir(dir.path().join("extra")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/b.ini"),
            "[watcher:b]\ncmd = sleep 2\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("conf.d/a.ini"),
            "[watcher:a]\ncmd = sleep 1\n[circus]\ninclude = x.ini\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("conf.d/notes.txt"), "not ini\n").unwrap();
        std::fs::write(dir.path().join("extra/e1.ini"), "[env:*]\nFROM = extra\n").unwrap();
        std::fs::write(
            dir.path().join("extra/bad.ini"),
            "[watcher:c]\ncmd = x\nshell = perhaps\n",
        )
        .unwrap();
        let config = load_in(dir.path(), "[circus]\ninclude_dir = conf.d\n").unwrap();
        assert_eq!(config.watchers.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        let text = warnings(&config);
        assert!(
            text.contains("a.ini:4: '[circus] include': ignored"),
            "{text}"
        );
        let config = load_in(
            dir.path(),
            "[circus]\ninclude_dir = conf.d\ninclude = extra/e?.ini nothing/*.ini\n",
        )
        .unwrap();
        assert_eq!(config.watchers.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(config.watchers["a"].env["FROM"], "extra");
        let text = warnings(&config);
        assert!(
            text.contains("nothing/*.ini does not match any file"),
            "{text}"
        );
        assert!(
            text.contains("a.ini:4: 'include': option repeated"),
            "{text}"
        );
        let err = load_in(dir.path(), "[circus]\ninclude = extra/*.ini\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("extra/bad.ini:3: '[watcher:c] shell'"),
            "{text}"
        );
    }

    #[test]
    fn ringmaster_options_ride_along() {
        let config = load_str(
            "[watcher:w]\ncmd = x\nringmaster.backoff_max = 60\nringmaster.umask = 077\n\
             ringmaster.stdout.to = capture\n",
        )
        .unwrap();
        let w = &config.watchers["w"];
        assert_eq!(w.backoff_max, 60.0);
        assert_eq!(w.umask, Some(Umask(0o077)));
        assert_eq!(w.stdout.to, Output::Capture);
        let err = load_str("[watcher:w]\ncmd = x\nringmaster.bogus = 1\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
    }

    #[test]
    fn tells_python_hooks_from_commands() {
        for python in ["myapp.hooks.check", "a.b", "pkg.mod:func", "_x.y_2"] {
            assert!(looks_like_python_callable(python), "{python}");
        }
        for command in [
            "true",
            "check.sh",
            "./check",
            "/usr/bin/x.y",
            "sh -c 'a.b'",
            "a..b",
            "",
        ] {
            assert!(!looks_like_python_callable(command), "{command}");
        }
    }

    #[test]
    fn defaults_and_variables_reach_every_section() {
        let config = load_str(
            "[DEFAULT]\ngraceful_timeout = 3\n\
             [circus]\nendpoint = ipc://$(circus.env.HOME)/c.sock\n\
             [watcher:a]\ncmd = x\n[watcher:b]\ncmd = y\ngraceful_timeout = 9\n",
        )
        .unwrap();
        assert_eq!(config.agent.control, "ipc:///home/ops/c.sock");
        assert_eq!(config.watchers["a"].graceful_timeout, 3.0);
        assert_eq!(config.watchers["b"].graceful_timeout, 9.0);
        // [DEFAULT] reaches [circus] too, where graceful_timeout means nothing.
        let text = warnings(&config);
        assert!(
            text.contains("circus.ini:2: '[circus] graceful_timeout': unknown"),
            "{text}"
        );
    }

    #[test]
    fn emitted_toml_keeps_one_key_per_line() {
        let mut table = toml::Table::new();
        let mut inner = toml::Table::new();
        inner.insert("cmd".into(), toml::Value::String("a \"b\"\nc\\".into()));
        inner.insert("n".into(), toml::Value::Integer(2));
        table.insert("a b".into(), toml::Value::Table(inner));
        let (text, lines) = emit(&table);
        assert_eq!(text, "[\"a b\"]\ncmd = \"a \\\"b\\\"\\nc\\\\\"\nn = 2\n");
        assert_eq!(lines, vec!["a b", "a b.cmd", "a b.n"]);
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(back, table);
    }
}
