//! How `nodetop` shows the [`Model`]: the user's choices (selected watcher and
//! node, sort key, filter) and the drawing of one screen with ratatui.
//!
//! The screen, top to bottom:
//!
//! - one line per node (name, CPU, load, memory, processes, up or "no data from
//!   NODE for N s"), and a pool total line when there are several nodes;
//! - one line per source that has a problem (unreachable, undecodable messages);
//! - the watchers table, with the selected watcher highlighted: with several nodes
//!   and none chosen (all nodes), one row per watcher with its totals across the
//!   nodes (WATCHER, NODES, PROCS, CPU%, MEM%, RSS); with one node chosen (←→) or
//!   only one known, that node's watchers (NODE, WATCHER, PROCS, CPU%, MEM%, RSS);
//! - the processes of the selected watcher (PID, WID, CPU%, RSS, MEM%, AGE), with
//!   a NODE column when they are those of every node;
//! - a one-line help footer, or the filter being typed.
//!
//! Everything fits an 80×24 terminal; extra height goes to the tables. Drawing
//! only reads the model and the view, and takes `now` as an argument, so that a
//! render test on ratatui's `TestBackend` is deterministic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Cell, HighlightSpacing, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use crate::input::{Action, Mode};
use crate::model::{Health, Model, NodeRow, PoolTotal, Query, SortKey, WatcherKey, WatcherRow};

/// Whether to go on after an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep running.
    Continue,
    /// Leave nodetop.
    Quit,
}

/// The user's choices, and the state of each source of messages.
#[derive(Debug, Clone)]
pub struct View {
    sort: SortKey,
    filter: String,
    mode: Mode,
    node: Option<String>,
    selected: Option<WatcherKey>,
    /// Where the selection was, to stay there when the selected watcher goes.
    selected_index: usize,
    sources: Vec<String>,
    problems: BTreeMap<String, String>,
}

const HELP: [&str; 6] = [
    "q quit",
    "c/m/n sort",
    "/ filter",
    "↑↓ watcher",
    "←→ node",
    "a all",
];
const NAME_MIN: usize = 4;
const NAME_MAX: usize = 16;
const WATCHER_MIN: usize = 7;
const WATCHER_MAX: usize = 24;
const PROBLEM_LINES: usize = 2;

impl View {
    /// A view of the messages from `sources` (endpoints, named while nothing has
    /// arrived yet).
    pub fn new(sources: Vec<String>) -> View {
        View {
            sort: SortKey::default(),
            filter: String::new(),
            mode: Mode::Browse,
            node: None,
            selected: None,
            selected_index: 0,
            sources,
            problems: BTreeMap::new(),
        }
    }

    /// What keys mean now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The rows the user asked for.
    pub fn query(&self) -> Query {
        Query {
            node: self.node.clone(),
            filter: self.filter.clone(),
            sort: self.sort,
        }
    }

    /// The selected watcher, if any row is shown.
    #[cfg(test)]
    pub fn selected(&self, model: &Model) -> Option<WatcherKey> {
        let rows = model.watcher_rows(&self.query());
        self.selection(&rows).map(|i| rows[i].key.clone())
    }

    /// Records that `source` has a problem (`Some`) or works again (`None`).
    pub fn set_problem(&mut self, source: &str, problem: Option<String>) {
        match problem {
            Some(problem) => self.problems.insert(source.to_string(), problem),
            None => self.problems.remove(source),
        };
    }

    /// Carries out `action`.
    pub fn apply(&mut self, action: Action, model: &Model) -> Flow {
        match action {
            Action::Quit => return Flow::Quit,
            Action::Sort(key) => self.sort = key,
            Action::StartFilter => self.mode = Mode::Filter,
            Action::FilterPush(c) => self.filter.push(c),
            Action::FilterPop => {
                self.filter.pop();
            }
            Action::FilterKeep => self.mode = Mode::Browse,
            Action::FilterClear => {
                self.filter.clear();
                self.mode = Mode::Browse;
            }
            Action::Up => self.move_selection(model, -1),
            Action::Down => self.move_selection(model, 1),
            Action::NextNode => self.step_node(model, 1),
            Action::PrevNode => self.step_node(model, -1),
            Action::AllNodes => self.node = None,
        }
        Flow::Continue
    }

    /// Index of the selected row: the selected watcher, else a watcher of the
    /// same name (when switching between all nodes and one), else the row where
    /// the selection was.
    fn selection(&self, rows: &[WatcherRow]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        self.selected
            .as_ref()
            .and_then(|key| {
                rows.iter()
                    .position(|r| r.key == *key)
                    .or_else(|| rows.iter().position(|r| r.key.watcher == key.watcher))
            })
            .or(Some(self.selected_index.min(rows.len() - 1)))
    }

    fn move_selection(&mut self, model: &Model, step: isize) {
        let rows = model.watcher_rows(&self.query());
        let Some(current) = self.selection(&rows) else {
            return;
        };
        let next = current.saturating_add_signed(step).min(rows.len() - 1);
        self.selected = Some(rows[next].key.clone());
        self.selected_index = next;
    }

    fn step_node(&mut self, model: &Model, step: isize) {
        let names = model.node_names();
        if names.is_empty() {
            self.node = None;
            return;
        }
        // Positions 0..n are nodes, n is "all nodes".
        let all = names.len();
        let current = self
            .node
            .as_ref()
            .and_then(|n| names.iter().position(|name| name == n))
            .unwrap_or(all);
        let count = names.len() + 1;
        let next = (current as isize + step).rem_euclid(count as isize) as usize;
        self.node = names.get(next).cloned();
    }

    /// Draws the whole screen.
    pub fn render(&self, frame: &mut Frame<'_>, model: &Model, now: Instant) {
        let mut rest = frame.area();
        if rest.height == 0 || rest.width == 0 {
            return;
        }
        let footer = take_bottom(&mut rest, 1);
        frame.render_widget(
            Paragraph::new(self.footer(usize::from(footer.width))),
            footer,
        );

        let nodes = model.node_rows(now);
        let name_width = nodes
            .iter()
            .map(|n| n.name.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(NAME_MIN, NAME_MAX);

        let mut top = self.node_lines(&nodes, name_width, rest.height / 3);
        if nodes.len() > 1 {
            top.push(pool_line(&model.pool_total(now), name_width));
        }
        top.extend(self.problem_lines());
        let top_area = take_top(&mut rest, top.len() as u16);
        frame.render_widget(Paragraph::new(Text::from(top)), top_area);
        if rest.height > 8 {
            take_top(&mut rest, 1);
        }

        let rows = model.watcher_rows(&self.query());
        let selected = self.selection(&rows);
        let key = selected.map(|i| rows[i].key.clone());
        let processes = key
            .as_ref()
            .map(|k| model.process_rows(k, self.sort, now))
            .unwrap_or_default();

        // Both tables at their natural height when they fit; else the watchers
        // table gets at least half of the room.
        let lines = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        let watchers_wanted = lines(rows.len()).saturating_add(1);
        let processes_wanted = lines(processes.len()).saturating_add(2);
        let watchers_height = if watchers_wanted.saturating_add(processes_wanted) <= rest.height {
            watchers_wanted
        } else {
            watchers_wanted.min((rest.height / 2).max(rest.height.saturating_sub(processes_wanted)))
        };
        let watchers_area = take_top(&mut rest, watchers_height);
        let stale: Vec<&str> = nodes
            .iter()
            .filter(|n| matches!(n.health, Health::Stale { .. }))
            .map(|n| n.name.as_str())
            .collect();
        let table = WatcherTable {
            rows: &rows,
            selected,
            name_width,
            stale: &stale,
            across: model.across_nodes(&self.query()),
        };
        table.render(frame, watchers_area);
        if rest.height > processes_wanted {
            take_top(&mut rest, 1);
        }

        let title_area = take_top(&mut rest, 1);
        let title = match (&key, selected) {
            (Some(k), Some(i)) => Line::from(vec![
                Span::styled(
                    match &k.node {
                        Some(node) => format!("{} on {node}", k.watcher),
                        None => format!(
                            "{} on {}",
                            k.watcher,
                            plural(rows[i].nodes, "node", "nodes")
                        ),
                    },
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!(
                    ": {}",
                    plural(processes.len(), "process", "processes")
                )),
            ]),
            _ if self.filter.is_empty() && self.node.is_none() => Line::from("no watchers"),
            _ => Line::from("no watcher matches"),
        };
        frame.render_widget(Paragraph::new(title), title_area);
        if let Some(key) = &key {
            let node_width = key.node.is_none().then_some(name_width);
            render_processes(frame, rest, &processes, node_width);
        }
    }

    fn node_lines(&self, nodes: &[NodeRow], name_width: usize, room: u16) -> Vec<Line<'static>> {
        if nodes.is_empty() {
            let from = if self.sources.is_empty() {
                "the agent".to_string()
            } else {
                self.sources.join(", ")
            };
            return vec![Line::styled(
                format!("waiting for data from {from}..."),
                Style::new().fg(Color::Yellow),
            )];
        }
        let room = usize::from(room.max(2));
        let selected_style = |name: &str| {
            if self.node.as_deref() == Some(name) {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            }
        };
        let line = |n: &NodeRow| node_line(n, name_width, selected_style(&n.name));
        // The pool line takes one line of the room when there are several nodes.
        let room = if nodes.len() > 1 { room - 1 } else { room };
        if nodes.len() <= room {
            return nodes.iter().map(line).collect();
        }
        // Too many nodes: the selected one, or the first ones, and a count.
        let shown: Vec<&NodeRow> = match &self.node {
            Some(name) => nodes.iter().filter(|n| n.name == *name).collect(),
            None => nodes.iter().take(room - 1).collect(),
        };
        let mut lines: Vec<Line<'static>> = shown.iter().map(|n| line(n)).collect();
        lines.push(Line::styled(
            format!(
                "... and {} more nodes (←→ to pick one)",
                nodes.len() - shown.len()
            ),
            Style::new().fg(Color::DarkGray),
        ));
        lines
    }

    fn problem_lines(&self) -> Vec<Line<'static>> {
        let mut lines: Vec<Line<'static>> = self
            .problems
            .iter()
            .take(PROBLEM_LINES)
            .map(|(source, problem)| {
                Line::styled(format!("{source}: {problem}"), Style::new().fg(Color::Red))
            })
            .collect();
        if self.problems.len() > PROBLEM_LINES {
            lines.push(Line::styled(
                format!(
                    "... and {} more sources with problems",
                    self.problems.len() - PROBLEM_LINES
                ),
                Style::new().fg(Color::Red),
            ));
        }
        lines
    }

    fn footer(&self, width: usize) -> Line<'static> {
        if self.mode == Mode::Filter {
            return Line::from(vec![
                Span::styled("filter: ", Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(format!("{}_", self.filter)),
                Span::styled("   Enter keep  Esc clear", Style::new().fg(Color::DarkGray)),
            ]);
        }
        let mut status = format!("sort {}", self.sort.label());
        if let Some(node) = &self.node {
            status.push_str(&format!(", node {node}"));
        }
        if !self.filter.is_empty() {
            status.push_str(&format!(", filter \"{}\"", self.filter));
        }
        // As much help as fits before the status.
        let room = width.saturating_sub(status.chars().count() + 2);
        let mut help = String::new();
        for item in HELP {
            let extra = if help.is_empty() { 0 } else { 2 } + item.chars().count();
            if help.chars().count() + extra > room {
                break;
            }
            if !help.is_empty() {
                help.push_str("  ");
            }
            help.push_str(item);
        }
        if !help.is_empty() {
            help.push_str("  ");
        }
        Line::from(vec![
            Span::styled(help, Style::new().fg(Color::DarkGray)),
            Span::styled(status, Style::new().add_modifier(Modifier::BOLD)),
        ])
    }
}

/// The watchers table: its rows, which one is selected, and how wide names are.
struct WatcherTable<'a> {
    rows: &'a [WatcherRow],
    selected: Option<usize>,
    name_width: usize,
    /// Nodes whose rows are dimmed: what they last said.
    stale: &'a [&'a str],
    /// Rows are watchers across nodes (a NODES count instead of a NODE name).
    across: bool,
}

impl WatcherTable<'_> {
    fn render(&self, frame: &mut Frame<'_>, area: Rect) {
        let watcher_width = self
            .rows
            .iter()
            .map(|r| r.key.watcher.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(WATCHER_MIN, WATCHER_MAX);
        let figures = |r: &WatcherRow| {
            [
                right(r.processes.to_string()),
                right(format!("{:.1}", r.cpu)),
                right(format!("{:.1}", r.mem)),
                right(bytes(r.rss)),
            ]
        };
        let titles = ["PROCS", "CPU%", "MEM%", "RSS"].map(right);
        let (header, body, first, second): (Row<'_>, Vec<Row<'_>>, u16, u16) = if self.across {
            let header = [Cell::from("WATCHER"), right("NODES")]
                .into_iter()
                .chain(titles);
            let body = self
                .rows
                .iter()
                .map(|r| {
                    let names = [
                        Cell::from(r.key.watcher.clone()),
                        right(r.nodes.to_string()),
                    ];
                    Row::new(names.into_iter().chain(figures(r)))
                })
                .collect();
            (Row::new(header), body, watcher_width as u16, 5)
        } else {
            let header = [Cell::from("NODE"), Cell::from("WATCHER")]
                .into_iter()
                .chain(titles);
            let body = self
                .rows
                .iter()
                .map(|r| {
                    let node = r.key.node.clone().unwrap_or_default();
                    let stale = self.stale.contains(&node.as_str());
                    let names = [Cell::from(node), Cell::from(r.key.watcher.clone())];
                    let row = Row::new(names.into_iter().chain(figures(r)));
                    if stale {
                        row.style(Style::new().fg(Color::DarkGray))
                    } else {
                        row
                    }
                })
                .collect();
            (
                Row::new(header),
                body,
                self.name_width as u16,
                watcher_width as u16,
            )
        };
        let table = Table::new(
            body,
            [
                Constraint::Length(first),
                Constraint::Length(second),
                Constraint::Length(5),
                Constraint::Length(6),
                Constraint::Length(5),
                Constraint::Length(6),
            ],
        )
        .header(header.style(header_style()))
        .column_spacing(2)
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always)
        .row_highlight_style(selected_style());
        let mut state = TableState::default().with_selected(self.selected);
        frame.render_stateful_widget(table, area, &mut state);
    }
}

/// The processes table; with `node_width`, a first NODE column that wide.
fn render_processes(
    frame: &mut Frame<'_>,
    area: Rect,
    processes: &[crate::model::ProcessRow],
    node_width: Option<usize>,
) {
    let node_cell = |name: &str| node_width.map(|_| Cell::from(name.to_string()));
    let header = Row::new(node_cell("NODE").into_iter().chain([
        right("PID"),
        right("WID"),
        right("CPU%"),
        right("RSS"),
        right("MEM%"),
        right("AGE"),
    ]))
    .style(header_style());
    let dash = || "-".to_string();
    let body = processes.iter().map(|p| {
        Row::new(node_cell(&p.node).into_iter().chain([
            right(p.pid.to_string()),
            right(p.wid.to_string()),
            right(p.cpu.map_or_else(dash, |c| format!("{c:.1}"))),
            right(p.rss.map_or_else(dash, bytes)),
            right(p.mem.map_or_else(dash, |m| format!("{m:.1}"))),
            right(age(p.age)),
        ]))
    });
    let widths = node_width
        .map(|w| Constraint::Length(w as u16))
        .into_iter()
        .chain([
            Constraint::Length(7),
            Constraint::Length(4),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(7),
        ]);
    let table = Table::new(body, widths).header(header).column_spacing(2);
    frame.render_widget(table, area);
}

fn node_line(node: &NodeRow, name_width: usize, style: Style) -> Line<'static> {
    let name = Span::styled(
        format!("{:<name_width$}  ", node.name),
        style.add_modifier(Modifier::BOLD),
    );
    match (node.health, &node.host) {
        (Health::Stale { silent }, _) => Line::from(vec![
            name,
            Span::styled(
                format!("no data from {} for {} s", node.name, seconds(silent)),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
        ]),
        (_, None) | (Health::Waiting, _) => Line::from(vec![
            name,
            Span::styled("waiting for stats...", Style::new().fg(Color::Yellow)),
        ]),
        (Health::Up, Some(host)) => Line::from(vec![
            name,
            Span::styled(format!("{:<6}", "up"), Style::new().fg(Color::Green)),
            Span::raw(format!(
                " cpu {:>5.1}%  load {:>4.2} {:>4.2} {:>4.2}  mem {:>4}/{:<4}  procs {}",
                host.cpu,
                host.load[0],
                host.load[1],
                host.load[2],
                bytes(host.memory_used),
                bytes(host.memory_total),
                node.processes
            )),
        ]),
    }
}

fn pool_line(pool: &PoolTotal, name_width: usize) -> Line<'static> {
    let cpus = format!("{} cpus", pool.cpus);
    Line::from(vec![
        Span::styled(
            format!("{:<name_width$}  ", "pool"),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "{:<6} cpu {:>5.1}%  {:<19}  mem {:>4}/{:<4}  procs {}",
            format!("{}/{} up", pool.up, pool.nodes),
            pool.cpu,
            cpus,
            bytes(pool.memory_used),
            bytes(pool.memory_total),
            pool.processes
        )),
    ])
    .style(Style::new().add_modifier(Modifier::ITALIC))
}

fn header_style() -> Style {
    Style::new().fg(Color::Black).bg(Color::Green)
}

fn selected_style() -> Style {
    Style::new().fg(Color::Black).bg(Color::Cyan)
}

fn right<'a>(text: impl Into<String>) -> Cell<'a> {
    Cell::from(Line::from(text.into()).right_aligned())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn take_top(area: &mut Rect, height: u16) -> Rect {
    let height = height.min(area.height);
    let top = Rect { height, ..*area };
    area.y += height;
    area.height -= height;
    top
}

fn take_bottom(area: &mut Rect, height: u16) -> Rect {
    let height = height.min(area.height);
    area.height -= height;
    Rect {
        y: area.y + area.height,
        height,
        ..*area
    }
}

/// A byte count in at most 4 characters: `512B`, `3.5M`, `812M`, `1.0G`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 9.95 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// Seconds, with a tenth while there are few: `0.6`, `7.0`, `42`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1}")
    } else {
        format!("{}", d.as_secs())
    }
}

/// A duration the way `ps` users read it: `45s`, `12m03s`, `3h04m`, `2d03h`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{host, pool_stat, process, totals, two_nodes};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// The screen as text, one string per line, without trailing blanks.
    fn screen(view: &View, model: &Model, now: Instant, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| view.render(f, model, now)).unwrap();
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            let mut line = String::new();
            for x in 0..buffer.area.width {
                line.push_str(buffer[(x, y)].symbol());
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }

    /// Compares with `snapshots/NAME.txt`; `UPDATE_SNAPSHOTS=1` rewrites it.
    fn assert_snapshot(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/top/snapshots")
            .join(format!("{name}.txt"));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == actual,
            "screen differs from {} (UPDATE_SNAPSHOTS=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }

    /// Nodes a and b as in the model tests, with b silent for 7 s and c named by
    /// nodeinfo but silent; pid 103 of a/web spawned and not sampled yet.
    fn pool(t0: Instant) -> (Model, Instant) {
        let mut model = two_nodes(t0);
        model.expect_node("c", t0 + Duration::from_secs(5));
        let later = t0 + Duration::from_secs(5);
        model.apply(&host("a", 2, 20.0, 1.0), later);
        model.apply(&process("a", "web", 101, 1, 10.0, 100 << 20), later);
        model.apply(&process("a", "web", 102, 2, 5.5, 120 << 20), later);
        model.apply(&process("a", "db", 201, 1, 1.0, 500 << 20), later);
        model.apply(&totals("a", "web"), later);
        let spawn =
            ringmaster_protocol::transport::Published::Event(ringmaster_protocol::event::Event {
                node: "a".into(),
                seq: 9,
                time: 1005.0,
                watcher: "web".into(),
                kind: ringmaster_protocol::event::EventKind::Spawn { pid: 103, wid: 3 },
            });
        model.apply(&spawn, later);
        (model, t0 + Duration::from_secs(7))
    }

    #[test]
    fn an_80x24_screen_of_a_pool_matches_its_snapshot() {
        let t0 = Instant::now();
        let (model, now) = pool(t0);
        let mut view = View::new(vec!["ipc:///tmp/a.sock".into()]);
        // Select db: one row down from the top (web has the most CPU); its
        // processes on every node show, with their node.
        view.apply(Action::Down, &model);
        view.set_problem(
            "tcp://10.0.0.9:5556",
            Some("cannot connect: connection refused (retrying)".into()),
        );
        assert_snapshot("pool_80x24", &screen(&view, &model, now, 80, 24));
    }

    /// Nodes web-1..3, each with watcher w (2 processes) and web-1 with db too,
    /// all up; the nodes are first named by a relay's `stat.pool`.
    fn three_nodes(t0: Instant) -> (Model, Instant) {
        let mut model = Model::new();
        let up = ringmaster_protocol::stats::NodeState::Up;
        model.apply(
            &pool_stat("prod", &[("web-1", up), ("web-2", up), ("web-3", up)]),
            t0,
        );
        let later = t0 + Duration::from_secs(2);
        for (i, node) in ["web-1", "web-2", "web-3"].into_iter().enumerate() {
            let n = i as u32;
            model.apply(&host(node, 1, 10.0 * (n + 1) as f32, 1.0), later);
            model.apply(
                &process(node, "w", 1000 + 10 * n, 1, 4.0 + n as f32, 30 << 20),
                later,
            );
            model.apply(&process(node, "w", 1001 + 10 * n, 2, 2.0, 20 << 20), later);
            model.apply(&totals(node, "w"), later);
        }
        model.apply(&process("web-1", "db", 2000, 1, 1.5, 400 << 20), later);
        model.apply(&totals("web-1", "db"), later);
        (model, later + Duration::from_millis(500))
    }

    #[test]
    fn an_80x24_screen_of_a_3_node_pool_shows_nodes_and_totals_across_them() {
        let t0 = Instant::now();
        let (model, now) = three_nodes(t0);
        let mut view = View::new(vec!["tcp://meta:5570".into()]);
        let text = screen(&view, &model, now, 80, 24);
        assert_snapshot("pool3_80x24", &text);
        // One row for w: on 3 nodes, 6 processes in all.
        assert!(
            text.lines()
                .any(|l| words(l).starts_with(&[">", "w", "3", "6", "21.0"])),
            "{text}"
        );
        assert!(text.contains("w on 3 nodes: 6 processes"), "{text}");

        // One node: its watchers, as with a single agent.
        view.apply(Action::NextNode, &model);
        let text = screen(&view, &model, now, 80, 24);
        assert!(text.contains("w on web-1: 2 processes"), "{text}");
        assert!(
            text.lines()
                .any(|l| words(l) == ["web-1", "db", "1", "1.5", "4.9", "400M"]),
            "{text}"
        );
    }

    #[test]
    fn one_node_filtered_and_sorted_by_name() {
        let t0 = Instant::now();
        let (model, now) = pool(t0);
        let mut view = View::new(Vec::new());
        for action in [
            Action::NextNode,
            Action::Sort(SortKey::Name),
            Action::StartFilter,
            Action::FilterPush('W'),
        ] {
            view.apply(action, &model);
        }
        let text = screen(&view, &model, now, 80, 24);
        assert_snapshot("filter_80x24", &text);
        assert_eq!(view.selected(&model).map(|k| k.watcher), Some("web".into()));
        // Enter keeps the filter; the footer shows it, with what help fits.
        view.apply(Action::FilterKeep, &model);
        let text = screen(&view, &model, now, 80, 24);
        assert_eq!(
            text.lines().last(),
            Some("q quit  c/m/n sort  / filter  ↑↓ watcher  ←→ node  sort name, node a, filter \"W\"")
        );
        let text = screen(&view, &model, now, 40, 24);
        assert_eq!(
            text.lines().last(),
            Some("q quit  sort name, node a, filter \"W\"")
        );
        view.apply(Action::FilterClear, &model);
        assert_eq!(view.selected(&model).map(|k| k.watcher), Some("db".into()));
    }

    #[test]
    fn small_and_empty_screens_do_not_panic() {
        let t0 = Instant::now();
        let (model, now) = pool(t0);
        let view = View::new(vec!["tcp://127.0.0.1:5556".into()]);
        for (w, h) in [(0, 0), (1, 1), (10, 3), (40, 5), (80, 2), (200, 60)] {
            screen(&view, &model, now, w, h);
        }
        let text = screen(&view, &Model::new(), now, 80, 24);
        assert!(
            text.starts_with("waiting for data from tcp://127.0.0.1:5556..."),
            "{text}"
        );
        assert!(text.contains("no watchers"), "{text}");
    }

    #[test]
    fn selection_moves_within_rows_and_nodes_cycle_through_all() {
        let t0 = Instant::now();
        let model = two_nodes(t0);
        let mut view = View::new(Vec::new());
        // All nodes: one row per watcher ("*"), web (on a and b) first by CPU.
        let selected = |view: &View| {
            view.selected(&model)
                .map(|k| format!("{}/{}", k.node.as_deref().unwrap_or("*"), k.watcher))
        };
        assert_eq!(selected(&view).as_deref(), Some("*/web"));
        view.apply(Action::Up, &model);
        assert_eq!(selected(&view).as_deref(), Some("*/web"));
        view.apply(Action::Down, &model);
        view.apply(Action::Down, &model);
        assert_eq!(selected(&view).as_deref(), Some("*/db"));
        // The selection follows the watcher when the order changes.
        view.apply(Action::Sort(SortKey::Memory), &model);
        assert_eq!(selected(&view).as_deref(), Some("*/db"));

        // One node: its own watchers; the selected one stays selected if it has it.
        let node = |view: &View| view.query().node;
        view.apply(Action::NextNode, &model);
        assert_eq!(node(&view).as_deref(), Some("a"));
        assert_eq!(selected(&view).as_deref(), Some("a/db"));
        view.apply(Action::Down, &model);
        assert_eq!(selected(&view).as_deref(), Some("a/web"));
        view.apply(Action::NextNode, &model);
        assert_eq!(node(&view).as_deref(), Some("b"));
        assert_eq!(selected(&view).as_deref(), Some("b/web"));
        view.apply(Action::NextNode, &model);
        assert_eq!(node(&view), None);
        assert_eq!(selected(&view).as_deref(), Some("*/web"));
        view.apply(Action::PrevNode, &model);
        assert_eq!(node(&view).as_deref(), Some("b"));
        view.apply(Action::AllNodes, &model);
        assert_eq!(node(&view), None);
        assert_eq!(view.apply(Action::Quit, &model), Flow::Quit);
    }

    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn many_nodes_leave_room_for_the_tables() {
        let t0 = Instant::now();
        let mut model = Model::new();
        for i in 0..12 {
            let node = format!("node-{i:02}");
            model.apply(&host(&node, 1, 10.0, 1.0), t0);
            model.apply(&process(&node, "web", 100 + i, 1, 1.0, 1 << 20), t0);
        }
        let mut view = View::new(Vec::new());
        let text = screen(&view, &model, t0, 80, 24);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[4].starts_with("node-04 "), "{text}");
        assert_eq!(lines[5], "... and 7 more nodes (←→ to pick one)", "{text}");
        assert!(lines[6].starts_with("pool     12/12 up"), "{text}");
        // All nodes: web once, on 12 nodes.
        assert_eq!(
            words(lines[8]),
            ["WATCHER", "NODES", "PROCS", "CPU%", "MEM%", "RSS"]
        );
        assert_eq!(words(lines[9])[..4], [">", "web", "12", "12"], "{text}");
        // A node picked from the end of the list is the one shown.
        view.apply(Action::PrevNode, &model);
        let text = screen(&view, &model, t0, 80, 24);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("node-11 "), "{text}");
        assert_eq!(lines[1], "... and 11 more nodes (←→ to pick one)", "{text}");
        assert_eq!(words(lines[4])[..2], ["NODE", "WATCHER"], "{text}");
        assert!(
            lines[5].contains("node-11") && lines[5].contains("web"),
            "{text}"
        );
    }

    #[test]
    fn figures_are_short() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(3 << 20), "3.0M");
        assert_eq!(bytes(812 << 20), "812M");
        assert_eq!(bytes(1023 << 20), "1.0G");
        assert_eq!(bytes(62 << 30), "62G");
        assert_eq!(seconds(Duration::from_millis(640)), "0.6");
        assert_eq!(seconds(Duration::from_secs(42)), "42");
        assert_eq!(age(Duration::from_secs(45)), "45s");
        assert_eq!(age(Duration::from_secs(723)), "12m03s");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 240)), "3h04m");
        assert_eq!(age(Duration::from_secs(2 * 86_400 + 3 * 3600)), "2d03h");
    }
}
