//! Shell-style name matching as Python's `fnmatch` does it (`*`, `?`, `[seq]`,
//! `[!seq]`, ranges; an unclosed `[` is a literal), which Circus uses for
//! `[env:PATTERNS]` sections, include globs and the watcher names of its commands.
//! Matching runs in time proportional to the product of the lengths, whatever the
//! pattern.

/// Shell-style matching as Python's `fnmatch` (case-sensitive): `*`, `?`,
/// `[seq]`, `[!seq]`, ranges; an unclosed `[` is a literal.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            if p[pi] == '*' {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            if let Some(next) = match_one(&p, pi, n[ni]) {
                pi = next;
                ni += 1;
                continue;
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// If the pattern element at `p[pi]` (not `*`) matches `c`, the index after it.
fn match_one(p: &[char], pi: usize, c: char) -> Option<usize> {
    match p[pi] {
        '?' => Some(pi + 1),
        '[' => match char_class(p, pi) {
            Some((set, negated, end)) => {
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                (hit != negated).then_some(end)
            }
            None => (c == '[').then_some(pi + 1),
        },
        other => (other == c).then_some(pi + 1),
    }
}

/// The set of a `[...]` class starting at `p[start]`, whether it is negated, and
/// the index after its `]`; None when it is not closed.
fn char_class(p: &[char], start: usize) -> Option<(Vec<char>, bool, usize)> {
    let mut j = start + 1;
    let negated = p.get(j) == Some(&'!');
    if negated {
        j += 1;
    }
    let first = j;
    if p.get(j) == Some(&']') {
        j += 1;
    }
    while j < p.len() && p[j] != ']' {
        j += 1;
    }
    (j < p.len()).then(|| (p[first..j].to_vec(), negated, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_classes_and_literals() {
        assert!(fnmatch("web*", "web-1"));
        assert!(fnmatch("*", ""));
        assert!(fnmatch("w?b", "wab"));
        assert!(fnmatch("[a-c]x", "bx"));
        assert!(!fnmatch("[!a-c]x", "bx"));
        assert!(fnmatch("[]]", "]"));
        assert!(fnmatch("a[b", "a[b"));
        assert!(!fnmatch("Web", "web"));
        let long = format!("{}b", "a".repeat(40));
        assert!(fnmatch("*a*a*a*a*b", &long));
        assert!(!fnmatch("*a*a*a*a*c", &long));
    }
}
