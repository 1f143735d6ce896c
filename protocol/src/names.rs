//! Rules for node and watcher names.
//!
//! Names become parts of dotted topics (`event.<node>.<watcher>.<action>`), so they
//! may not contain dots; they also appear in file names and shells, so they stay
//! within a conservative alphabet.

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name '{name}': {reason}")]
pub struct InvalidName {
    /// `node` or `watcher`.
    pub what: &'static str,
    /// The name as given.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks a node or watcher name: 1 to 64 characters among `A-Z a-z 0-9 _ -`,
/// starting with a letter, digit or `_`.
pub fn validate(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let fail = |reason| {
        Err(InvalidName {
            what,
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("it is longer than 64 characters");
    }
    if name.starts_with('-') {
        return fail("it starts with '-'");
    }
    if what == "node" && name == "pool" {
        return fail("'pool' is reserved (nodemeta publishes pool totals on stat.pool)");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return fail("use only letters, digits, '_' and '-' (names are parts of dotted topics)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for name in ["web", "web-1", "worker_2", "A", "0"] {
            assert!(validate("watcher", name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_dots_spaces_and_empty() {
        for name in ["", "a.b", "a b", "-x", "é", &"x".repeat(65)] {
            let err = validate("watcher", name).unwrap_err();
            assert_eq!(err.name, name);
        }
    }
}
