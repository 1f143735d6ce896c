//! An output file the agent writes for its processes: appended to, rotated by
//! size and by time, and reopened after an external rotation.
//!
//! - **Size**: before a write would take the file past `max_bytes`, the complete
//!   lines that still fit are written, then the file is rotated, so that no file
//!   exceeds `max_bytes` (a single line longer than `max_bytes` is cut).
//! - **Time**: the first write after the rotation time rotates first.
//! - **Rotation** renames `FILE.N-1` to `FILE.N` ... `FILE` to `FILE.1` (the
//!   oldest, `FILE.N` with `N = backup_count`, is removed), then opens a new
//!   `FILE`. With `backup_count = 0` the file is emptied instead.
//! - **External rotation** (logrotate): at most once a second, on a write, the
//!   path is checked; a file moved away or deleted (another inode, or none) is
//!   reopened at the path, and a file truncated in place (`copytruncate`) is
//!   written from its new end. `nodectl reopen` and SIGUSR1 reopen at once.
//!
//! Writes are not buffered in the agent: what a process wrote is in the file as
//! soon as the agent has read it. A file that cannot be written (missing
//! directory, full disk) does not stop anything: what cannot be written is
//! counted as dropped, and the error is logged at most every few seconds.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmaster_cli::clock::{weekday, Zone, DAY};
use tracing::{info, warn};

use super::spec::{RotateWhen, StreamConfig};

/// How often, at most, the path is checked for an external rotation.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often, at most, an error about one file is logged.
const ERROR_EVERY: Duration = Duration::from_secs(10);

/// How a file is rotated (the file options of a [`StreamConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before the file grows past this (0: never by size).
    pub max_bytes: u64,
    /// Backups kept.
    pub backup_count: u32,
    /// Rotate by time too.
    pub when: Option<RotateWhen>,
    /// Units of `when` between rotations.
    pub interval: u32,
    /// Rotation times in UTC rather than local time.
    pub utc: bool,
}

impl Rotation {
    /// The rotation options of `spec`.
    pub fn of(spec: &StreamConfig) -> Rotation {
        Rotation {
            max_bytes: spec.max_bytes,
            backup_count: spec.backup_count,
            when: spec.rotate_when,
            interval: spec.rotate_interval.max(1),
            utc: spec.utc,
        }
    }

    /// When the next time rotation is due for a file opened at `now`.
    pub fn next_after(&self, now: i64, zone: &Zone) -> Option<i64> {
        let n = i64::from(self.interval.max(1));
        let utc = Zone::utc();
        let zone = if self.utc { &utc } else { zone };
        Some(match self.when? {
            RotateWhen::Seconds => now + n,
            RotateWhen::Minutes => now + 60 * n,
            RotateWhen::Hours => now + 3600 * n,
            RotateWhen::Days => now + DAY * n,
            RotateWhen::Midnight => zone.next_midnight(now) + (n - 1) * DAY,
            RotateWhen::Weekday(day) => {
                let offset = i64::from(zone.offset_at(now).seconds);
                let today = (now + offset).div_euclid(DAY);
                let wait = (i64::from(day) - i64::from(weekday(today))).rem_euclid(7);
                zone.local_to_utc((today + wait + 1) * DAY, offset) + (n - 1) * 7 * DAY
            }
        })
    }
}

fn unix_secs(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The numbered backup `n` of `path` (`FILE.n`).
pub fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// One output file, shared by every stream that writes to its path.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: Option<File>,
    /// Bytes in the file, as far as the agent knows.
    size: u64,
    /// Device and inode of the open file.
    identity: Option<(u64, u64)>,
    rotation: Rotation,
    next_rotation: Option<i64>,
    checked: Instant,
    /// When opening failed: not before this again.
    retry_at: Option<Instant>,
    error_logged: Option<Instant>,
}

impl FileSink {
    /// A sink for `path`, using `given` (the file the spawn opened to check it)
    /// when there is one.
    pub fn new(
        path: PathBuf,
        rotation: Rotation,
        given: Option<File>,
        zone: &Zone,
        now: SystemTime,
    ) -> FileSink {
        let mut sink = FileSink {
            path,
            file: None,
            size: 0,
            identity: None,
            rotation,
            next_rotation: rotation.next_after(unix_secs(now), zone),
            checked: Instant::now(),
            retry_at: None,
            error_logged: None,
        };
        match given {
            Some(file) => sink.adopt(file),
            None => sink.try_open(),
        }
        sink
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the rotation options (a watcher's `stdout` was changed).
    pub fn set_rotation(&mut self, rotation: Rotation, zone: &Zone, now: SystemTime) {
        if rotation != self.rotation {
            self.rotation = rotation;
            self.next_rotation = rotation.next_after(unix_secs(now), zone);
        }
    }

    fn adopt(&mut self, file: File) {
        match file.metadata() {
            Ok(meta) => {
                self.size = meta.len();
                self.identity = Some(identity(&meta));
            }
            Err(_) => {
                self.size = 0;
                self.identity = None;
            }
        }
        self.file = Some(file);
        self.retry_at = None;
    }

    fn open(&mut self) -> std::io::Result<()> {
        self.file = None;
        let file = open_append(&self.path)?;
        self.adopt(file);
        Ok(())
    }

    fn try_open(&mut self) {
        if let Err(e) = self.open() {
            self.retry_at = Some(Instant::now() + CHECK_EVERY);
            self.log_error(&format!("cannot open {}: {e}", self.path.display()));
        }
    }

    fn log_error(&mut self, message: &str) {
        let now = Instant::now();
        if self
            .error_logged
            .is_none_or(|at| now.duration_since(at) >= ERROR_EVERY)
        {
            warn!(
                "output file: {message}; its output is dropped (and counted) until this is fixed"
            );
            self.error_logged = Some(now);
        }
    }

    /// Closes and opens the file again at its path (after an external rotation).
    pub fn reopen(&mut self) -> Result<(), String> {
        self.open()
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))
            .inspect_err(|_| self.retry_at = Some(Instant::now() + CHECK_EVERY))
    }

    /// Reopens when the path no longer names the open file; follows a truncation.
    fn check_external(&mut self) {
        self.checked = Instant::now();
        match std::fs::metadata(&self.path) {
            Ok(meta) if Some(identity(&meta)) == self.identity => {
                if meta.len() < self.size {
                    info!(
                        file = %self.path.display(),
                        "output file was truncated; writing on from its new end"
                    );
                    self.size = meta.len();
                }
            }
            _ => {
                info!(
                    file = %self.path.display(),
                    "output file was moved or removed; reopening it"
                );
                self.try_open();
            }
        }
    }

    /// Rotates now: shifts the backups and starts a new file.
    fn rotate(&mut self, zone: &Zone, now: SystemTime) {
        self.file = None;
        let count = self.rotation.backup_count;
        let mut truncate = count == 0;
        if count > 0 {
            let _ = std::fs::remove_file(backup_path(&self.path, count));
            for n in (1..count).rev() {
                let _ = std::fs::rename(backup_path(&self.path, n), backup_path(&self.path, n + 1));
            }
            if let Err(e) = std::fs::rename(&self.path, backup_path(&self.path, 1)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.log_error(&format!(
                        "cannot rotate {}: {e}; emptying it instead",
                        self.path.display()
                    ));
                    truncate = true;
                }
            }
        }
        self.try_open();
        if truncate {
            if let Some(file) = &self.file {
                if let Err(e) = file.set_len(0) {
                    self.log_error(&format!("cannot empty {}: {e}", self.path.display()));
                } else {
                    self.size = 0;
                }
            }
        }
        self.next_rotation = self.rotation.next_after(unix_secs(now), zone);
    }

    fn write_raw(&mut self, data: &[u8]) -> u64 {
        let Some(file) = self.file.as_mut() else {
            return data.len() as u64;
        };
        match file.write_all(data) {
            Ok(()) => {
                self.size += data.len() as u64;
                0
            }
            Err(e) => {
                let message = format!("cannot write {}: {e}", self.path.display());
                self.log_error(&message);
                data.len() as u64
            }
        }
    }

    /// Writes `data` (complete lines), rotating as needed. Returns how many bytes
    /// could not be written.
    pub fn write(&mut self, data: &[u8], zone: &Zone, now: SystemTime) -> u64 {
        if self.file.is_none() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return data.len() as u64;
            }
            self.try_open();
        } else if self.checked.elapsed() >= CHECK_EVERY {
            self.check_external();
        }
        if self.next_rotation.is_some_and(|at| unix_secs(now) >= at) {
            self.rotate(zone, now);
        }
        let max = self.rotation.max_bytes;
        let mut rest = data;
        let mut dropped = 0;
        while !rest.is_empty() {
            if max == 0 || self.size + rest.len() as u64 <= max {
                dropped += self.write_raw(rest);
                break;
            }
            let room = usize::try_from(max.saturating_sub(self.size)).unwrap_or(usize::MAX);
            let fits = &rest[..room.min(rest.len())];
            match fits.iter().rposition(|b| *b == b'\n') {
                Some(end) => {
                    dropped += self.write_raw(&rest[..=end]);
                    rest = &rest[end + 1..];
                }
                // The next line does not fit: start a new file for it.
                None if self.size > 0 => {}
                // A line longer than max_bytes: cut it.
                None => {
                    dropped += self.write_raw(fits);
                    rest = &rest[fits.len()..];
                }
            }
            self.rotate(zone, now);
            if self.file.is_none() {
                dropped += rest.len() as u64;
                break;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmaster_cli::clock::days_from_civil;

    fn rotation(max_bytes: u64, backup_count: u32) -> Rotation {
        Rotation {
            max_bytes,
            backup_count,
            when: None,
            interval: 1,
            utc: true,
        }
    }

    fn lines(from: u32, to: u32) -> Vec<u8> {
        (from..to)
            .map(|i| format!("line {i:04}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn size_rotation_keeps_whole_lines_and_backup_count_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let zone = Zone::utc();
        let now = SystemTime::now();
        let mut sink = FileSink::new(path.clone(), rotation(100, 2), None, &zone, now);
        for chunk in 0..20 {
            assert_eq!(sink.write(&lines(chunk * 7, chunk * 7 + 7), &zone, now), 0);
        }
        for file in [path.clone(), backup_path(&path, 1), backup_path(&path, 2)] {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                text.len() <= 100,
                "{}: {} bytes",
                file.display(),
                text.len()
            );
            assert!(text.ends_with('\n') && text.lines().all(|l| l.starts_with("line ")));
        }
        assert!(!backup_path(&path, 3).exists());
        // The newest lines are in the file, the ones before in .1.
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.ends_with("line 0139\n"), "{current}");
        let previous = std::fs::read_to_string(backup_path(&path, 1)).unwrap();
        let first_current: u32 = current[5..9].parse().unwrap();
        assert!(previous.ends_with(&format!("line {:04}\n", first_current - 1)));
    }

    #[test]
    fn no_backups_means_the_file_is_emptied_and_long_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let zone = Zone::utc();
        let now = SystemTime::now();
        let mut sink = FileSink::new(path.clone(), rotation(20, 0), None, &zone, now);
        sink.write(b"0123456789\n", &zone, now);
        sink.write(b"abcdefghij\n", &zone, now);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abcdefghij\n");
        assert!(!backup_path(&path, 1).exists());
        sink.write(&[b'x'; 50], &zone, now);
        assert!(std::fs::metadata(&path).unwrap().len() <= 20);
    }

    #[test]
    fn external_moves_and_truncations_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let zone = Zone::utc();
        let now = SystemTime::now();
        let mut sink = FileSink::new(path.clone(), rotation(0, 0), None, &zone, now);
        sink.write(b"one\n", &zone, now);
        std::fs::rename(&path, dir.path().join("moved.log")).unwrap();
        sink.checked -= CHECK_EVERY;
        sink.write(b"two\n", &zone, now);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved.log")).unwrap(),
            "one\n"
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        sink.checked -= CHECK_EVERY;
        sink.write(b"three\n", &zone, now);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        assert_eq!(sink.size, 6);
    }

    #[test]
    fn time_rotation_schedules() {
        let zone = Zone::utc();
        // Wednesday 2024-01-03 10:00 UTC.
        let now = days_from_civil(2024, 1, 3) * DAY + 10 * 3600;
        let mut r = rotation(0, 1);
        r.when = Some(RotateWhen::Seconds);
        r.interval = 5;
        assert_eq!(r.next_after(now, &zone), Some(now + 5));
        r.when = Some(RotateWhen::Midnight);
        r.interval = 1;
        assert_eq!(
            r.next_after(now, &zone),
            Some(days_from_civil(2024, 1, 4) * DAY)
        );
        // W2 (Wednesday): at the end of today.
        r.when = Some(RotateWhen::Weekday(2));
        assert_eq!(
            r.next_after(now, &zone),
            Some(days_from_civil(2024, 1, 4) * DAY)
        );
        // W6 (Sunday): Monday 2024-01-08 00:00.
        r.when = Some(RotateWhen::Weekday(6));
        assert_eq!(
            r.next_after(now, &zone),
            Some(days_from_civil(2024, 1, 8) * DAY)
        );
        r.when = None;
        assert_eq!(r.next_after(now, &zone), None);
    }

    #[test]
    fn an_unwritable_file_drops_and_counts() {
        let zone = Zone::utc();
        let now = SystemTime::now();
        let mut sink = FileSink::new(
            PathBuf::from("/nonexistent-dir/out.log"),
            rotation(0, 0),
            None,
            &zone,
            now,
        );
        assert_eq!(sink.write(b"lost\n", &zone, now), 5);
    }
}
