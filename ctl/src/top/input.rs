//! Keys to actions: the one place that says what each key of `nodetop` does.
//!
//! | key | browsing | typing a filter |
//! | --- | --- | --- |
//! | `q`, Esc, Ctrl-C | quit | Esc clears the filter; Ctrl-C quits |
//! | `c` / `m` / `n` | sort by CPU / memory / name | typed |
//! | `/` | start typing a filter (by watcher name) | typed |
//! | Enter | | keep the filter |
//! | Backspace | | delete a character |
//! | Up / `k`, Down / `j` | select a watcher | Up / Down select |
//! | Right / Tab, Left / Shift-Tab | next / previous node | |
//! | `a` | all nodes | typed |

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::model::SortKey;

/// What keys mean right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keys are commands.
    Browse,
    /// Keys are typed into the filter.
    Filter,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave nodetop.
    Quit,
    /// Sort rows by this key.
    Sort(SortKey),
    /// Start typing a filter.
    StartFilter,
    /// Add a character to the filter.
    FilterPush(char),
    /// Delete the filter's last character.
    FilterPop,
    /// Stop typing and keep the filter.
    FilterKeep,
    /// Stop typing and clear the filter.
    FilterClear,
    /// Select the watcher above.
    Up,
    /// Select the watcher below.
    Down,
    /// Show only the next node (after the last one: all nodes).
    NextNode,
    /// Show only the previous node (before the first one: all nodes).
    PrevNode,
    /// Show every node.
    AllNodes,
}

/// The action of `key` in `mode`, if it has one.
pub fn action(key: KeyEvent, mode: Mode) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')) {
        return Some(Action::Quit);
    }
    match mode {
        Mode::Browse => browse(key.code, ctrl),
        Mode::Filter => filter(key.code, ctrl),
    }
}

fn browse(code: KeyCode, ctrl: bool) -> Option<Action> {
    if ctrl {
        return None;
    }
    Some(match code {
        KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('c') => Action::Sort(SortKey::Cpu),
        KeyCode::Char('m') => Action::Sort(SortKey::Memory),
        KeyCode::Char('n') => Action::Sort(SortKey::Name),
        KeyCode::Char('/') => Action::StartFilter,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Right | KeyCode::Tab => Action::NextNode,
        KeyCode::Left | KeyCode::BackTab => Action::PrevNode,
        KeyCode::Char('a') => Action::AllNodes,
        _ => return None,
    })
}

fn filter(code: KeyCode, ctrl: bool) -> Option<Action> {
    Some(match code {
        KeyCode::Enter => Action::FilterKeep,
        KeyCode::Esc => Action::FilterClear,
        KeyCode::Backspace => Action::FilterPop,
        KeyCode::Up => Action::Up,
        KeyCode::Down => Action::Down,
        KeyCode::Char(c) if !ctrl => Action::FilterPush(c),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyEventState;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    #[test]
    fn browsing_keys_are_commands() {
        let browse = |code| action(key(code), Mode::Browse);
        assert_eq!(browse(KeyCode::Char('q')), Some(Action::Quit));
        assert_eq!(browse(KeyCode::Esc), Some(Action::Quit));
        assert_eq!(action(ctrl('c'), Mode::Browse), Some(Action::Quit));
        assert_eq!(browse(KeyCode::Char('c')), Some(Action::Sort(SortKey::Cpu)));
        assert_eq!(
            browse(KeyCode::Char('m')),
            Some(Action::Sort(SortKey::Memory))
        );
        assert_eq!(
            browse(KeyCode::Char('n')),
            Some(Action::Sort(SortKey::Name))
        );
        assert_eq!(browse(KeyCode::Char('/')), Some(Action::StartFilter));
        assert_eq!(browse(KeyCode::Up), Some(Action::Up));
        assert_eq!(browse(KeyCode::Char('k')), Some(Action::Up));
        assert_eq!(browse(KeyCode::Down), Some(Action::Down));
        assert_eq!(browse(KeyCode::Char('j')), Some(Action::Down));
        assert_eq!(browse(KeyCode::Right), Some(Action::NextNode));
        assert_eq!(browse(KeyCode::Tab), Some(Action::NextNode));
        assert_eq!(browse(KeyCode::Left), Some(Action::PrevNode));
        assert_eq!(browse(KeyCode::BackTab), Some(Action::PrevNode));
        assert_eq!(browse(KeyCode::Char('a')), Some(Action::AllNodes));
        assert_eq!(browse(KeyCode::Char('x')), None);
        assert_eq!(browse(KeyCode::Enter), None);
        assert_eq!(action(ctrl('m'), Mode::Browse), None);
    }

    #[test]
    fn in_a_filter_keys_are_typed_until_enter_or_esc() {
        let typing = |code| action(key(code), Mode::Filter);
        assert_eq!(typing(KeyCode::Char('q')), Some(Action::FilterPush('q')));
        assert_eq!(typing(KeyCode::Char('c')), Some(Action::FilterPush('c')));
        assert_eq!(typing(KeyCode::Char('/')), Some(Action::FilterPush('/')));
        assert_eq!(typing(KeyCode::Backspace), Some(Action::FilterPop));
        assert_eq!(typing(KeyCode::Enter), Some(Action::FilterKeep));
        assert_eq!(typing(KeyCode::Esc), Some(Action::FilterClear));
        assert_eq!(typing(KeyCode::Down), Some(Action::Down));
        assert_eq!(typing(KeyCode::Tab), None);
        assert_eq!(action(ctrl('c'), Mode::Filter), Some(Action::Quit));
        assert_eq!(action(ctrl('w'), Mode::Filter), None);
    }

    #[test]
    fn key_releases_are_ignored() {
        let release = KeyEvent {
            code: KeyCode::Char('q'),
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Release,
            state: KeyEventState::NONE,
        };
        assert_eq!(action(release, Mode::Browse), None);
    }
}
