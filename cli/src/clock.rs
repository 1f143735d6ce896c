//! Wall-clock times as people read them: the host's time zone and a small
//! `strftime`.
//!
//! Ringmaster stamps process output with the time it read it, and rotates output
//! files at midnight or on a weekday, both in the host's local time by default.
//! This module is what that needs and no more:
//!
//! - [`Zone`]: a time zone's offset from UTC at any instant, read from `$TZ` or
//!   `/etc/localtime` (the compiled TZif files of the tz database, with the
//!   POSIX rule in their footer for times past the last transition), falling back
//!   to UTC when neither can be read;
//! - [`TimeFormat`]: a parsed `strftime`-style format with the codes `%Y %m %d %H
//!   %M %S %f %z %Z %F %T %%` (an unknown code is an error at parse time, not a
//!   surprise in every line);
//! - [`days_from_civil`], [`civil_from_days`], [`weekday`]: calendar arithmetic
//!   on days since the Unix epoch (proleptic Gregorian).
//!
//! Nothing here is `unsafe`: the offset comes from parsing the zone file, not from
//! the C library's `localtime_r`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// Days since 1970-01-01 of a date (proleptic Gregorian calendar).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date (year, month 1-12, day 1-31) of a day since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day of the week of a day since 1970-01-01: 0 = Monday ... 6 = Sunday.
pub fn weekday(days: i64) -> u32 {
    // 1970-01-01 was a Thursday.
    (days + 3).rem_euclid(7) as u32
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The offset from UTC in force at some instant, and the zone's abbreviation then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset<'a> {
    /// Seconds east of UTC.
    pub seconds: i32,
    /// The abbreviation (`CET`, `EDT`, `UTC`, or `+0530` for zones without one).
    pub abbreviation: &'a str,
}

/// A time zone: UTC, or rules read from a TZif file or a POSIX `TZ` string.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    kind: ZoneKind,
}

#[derive(Debug, Clone, PartialEq)]
enum ZoneKind {
    Utc,
    Tzif(Tzif),
    Rule(PosixRule),
}

impl Default for Zone {
    fn default() -> Self {
        Zone::utc()
    }
}

impl Zone {
    /// Coordinated Universal Time.
    pub fn utc() -> Zone {
        Zone {
            kind: ZoneKind::Utc,
        }
    }

    /// True for UTC itself.
    pub fn is_utc(&self) -> bool {
        self.kind == ZoneKind::Utc
    }

    /// The host's zone, as the C library would pick it: `$TZ` (a zone name such as
    /// `Europe/Paris`, `:Europe/Paris`, a file path, or a POSIX rule such as
    /// `CET-1CEST,M3.5.0,M10.5.0/3`), else `/etc/localtime`, else UTC. Never fails:
    /// whatever cannot be read means UTC.
    pub fn local() -> Zone {
        match std::env::var("TZ") {
            Ok(tz) => Zone::from_tz_variable(&tz).unwrap_or_else(Zone::utc),
            Err(_) => Zone::from_file(Path::new("/etc/localtime")).unwrap_or_else(|_| Zone::utc()),
        }
    }

    fn from_tz_variable(tz: &str) -> Option<Zone> {
        let name = tz.strip_prefix(':').unwrap_or(tz).trim();
        if name.is_empty() || name == "UTC" || name == "UTC0" || name == "GMT" {
            return Some(Zone::utc());
        }
        let candidates = if name.starts_with('/') {
            vec![Path::new(name).to_path_buf()]
        } else if name.contains("..") {
            Vec::new()
        } else {
            [
                "/usr/share/zoneinfo",
                "/usr/lib/zoneinfo",
                "/usr/share/lib/zoneinfo",
            ]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .collect()
        };
        for path in candidates {
            if let Ok(zone) = Zone::from_file(&path) {
                return Some(zone);
            }
        }
        Zone::from_posix(name).ok()
    }

    /// Reads a compiled zone file (TZif, RFC 8536).
    pub fn from_file(path: &Path) -> Result<Zone, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Zone::from_tzif(&data).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the bytes of a TZif file.
    pub fn from_tzif(data: &[u8]) -> Result<Zone, String> {
        Ok(Zone {
            kind: ZoneKind::Tzif(Tzif::parse(data)?),
        })
    }

    /// Parses a POSIX `TZ` rule such as `EST5EDT,M3.2.0,M11.1.0`.
    pub fn from_posix(spec: &str) -> Result<Zone, String> {
        Ok(Zone {
            kind: ZoneKind::Rule(PosixRule::parse(spec)?),
        })
    }

    /// The offset in force at `unix` (seconds since the epoch, UTC).
    pub fn offset_at(&self, unix: i64) -> Offset<'_> {
        match &self.kind {
            ZoneKind::Utc => Offset {
                seconds: 0,
                abbreviation: "UTC",
            },
            ZoneKind::Tzif(tzif) => tzif.offset_at(unix),
            ZoneKind::Rule(rule) => rule.offset_at(unix),
        }
    }

    /// The first local midnight strictly after `unix`, as seconds since the epoch.
    pub fn next_midnight(&self, unix: i64) -> i64 {
        let offset = i64::from(self.offset_at(unix).seconds);
        let local_day = (unix + offset).div_euclid(DAY);
        self.local_to_utc((local_day + 1) * DAY, offset)
    }

    /// The instant of local wall time `local` (seconds since the epoch as if the
    /// zone were UTC), given an offset that was in force nearby.
    pub fn local_to_utc(&self, local: i64, offset_hint: i64) -> i64 {
        let guess = local - offset_hint;
        local - i64::from(self.offset_at(guess).seconds)
    }
}

/// The parsed contents of a TZif file.
#[derive(Debug, Clone, PartialEq)]
struct Tzif {
    transitions: Vec<i64>,
    /// Index into `types` of each transition.
    indices: Vec<u8>,
    types: Vec<LocalType>,
    abbreviations: Vec<u8>,
    footer: Option<PosixRule>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct LocalType {
    offset: i32,
    abbreviation: u8,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or("truncated zone file")?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    isut: usize,
    isstd: usize,
    leap: usize,
    time: usize,
    types: usize,
    chars: usize,
}

fn header(reader: &mut Reader<'_>) -> Result<(u8, Counts), String> {
    if reader.take(4)? != b"TZif" {
        return Err("not a TZif zone file".into());
    }
    let version = reader.take(1)?[0];
    reader.take(15)?;
    let counts = Counts {
        isut: reader.u32()?,
        isstd: reader.u32()?,
        leap: reader.u32()?,
        time: reader.u32()?,
        types: reader.u32()?,
        chars: reader.u32()?,
    };
    if counts.types == 0 {
        return Err("zone file without local time types".into());
    }
    Ok((version, counts))
}

impl Tzif {
    fn parse(data: &[u8]) -> Result<Tzif, String> {
        let mut reader = Reader { data, at: 0 };
        let (version, v1) = header(&mut reader)?;
        let (counts, time_size) = if version >= b'2' {
            // Skip the 32-bit block; the 64-bit one follows with its own header.
            let v1_len = v1.time * 5 + v1.types * 6 + v1.chars + v1.leap * 8 + v1.isstd + v1.isut;
            reader.take(v1_len)?;
            (header(&mut reader)?.1, 8)
        } else {
            (v1, 4)
        };
        let mut transitions = Vec::with_capacity(counts.time);
        for _ in 0..counts.time {
            let b = reader.take(time_size)?;
            transitions.push(if time_size == 8 {
                i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            } else {
                i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            });
        }
        let indices = reader.take(counts.time)?.to_vec();
        let mut types = Vec::with_capacity(counts.types);
        for _ in 0..counts.types {
            let b = reader.take(6)?;
            types.push(LocalType {
                offset: i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                abbreviation: b[5],
            });
        }
        if indices.iter().any(|i| usize::from(*i) >= types.len()) {
            return Err("zone file with a bad type index".into());
        }
        let abbreviations = reader.take(counts.chars)?.to_vec();
        reader.take(counts.leap * (time_size + 4) + counts.isstd + counts.isut)?;
        let footer = if version >= b'2' {
            let rest = &data[reader.at.min(data.len())..];
            let text = String::from_utf8_lossy(rest);
            let rule = text.trim_matches(|c| c == '\n' || c == '\0').trim();
            if rule.is_empty() {
                None
            } else {
                PosixRule::parse(rule).ok()
            }
        } else {
            None
        };
        Ok(Tzif {
            transitions,
            indices,
            types,
            abbreviations,
            footer,
        })
    }

    fn abbreviation(&self, index: u8) -> &str {
        let start = usize::from(index).min(self.abbreviations.len());
        let rest = &self.abbreviations[start..];
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn offset_at(&self, unix: i64) -> Offset<'_> {
        let after = self.transitions.partition_point(|t| *t <= unix);
        let local_type = if after == 0 {
            self.types[0]
        } else if after == self.transitions.len() && self.footer.is_some() {
            if let Some(rule) = &self.footer {
                return rule.offset_at(unix);
            }
            self.types[0]
        } else {
            self.types[usize::from(self.indices[after - 1])]
        };
        Offset {
            seconds: local_type.offset,
            abbreviation: self.abbreviation(local_type.abbreviation),
        }
    }
}

/// A POSIX `TZ` rule: a standard offset, and optionally a daylight-saving offset
/// with the dates it starts and ends.
#[derive(Debug, Clone, PartialEq)]
struct PosixRule {
    std_name: String,
    /// Seconds east of UTC.
    std_offset: i32,
    dst: Option<Dst>,
}

#[derive(Debug, Clone, PartialEq)]
struct Dst {
    name: String,
    offset: i32,
    start: (DateRule, i32),
    end: (DateRule, i32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DateRule {
    /// `Jn`: day 1-365, February 29 never counted.
    Julian(u32),
    /// `n`: day 0-365, February 29 counted.
    Zero(u32),
    /// `Mm.w.d`: day `d` (0 = Sunday) of week `w` (5 = last) of month `m`.
    Month { month: u32, week: u32, day: u32 },
}

impl DateRule {
    fn day(self, year: i64) -> i64 {
        let jan1 = days_from_civil(year, 1, 1);
        match self {
            DateRule::Julian(n) => {
                let n = i64::from(n.clamp(1, 365));
                jan1 + n - 1 + i64::from(is_leap(year) && n >= 60)
            }
            DateRule::Zero(n) => jan1 + i64::from(n.min(365)),
            DateRule::Month { month, week, day } => {
                let first = days_from_civil(year, month, 1);
                // Sunday = 0 here, as in POSIX.
                let first_weekday = (weekday(first) + 1) % 7;
                let mut date = 1 + (day + 7 - first_weekday) % 7 + (week.clamp(1, 5) - 1) * 7;
                while date > days_in_month(year, month) {
                    date -= 7;
                }
                first + i64::from(date) - 1
            }
        }
    }
}

struct RuleParser<'a> {
    text: &'a [u8],
    at: usize,
}

impl RuleParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.at;
        if self.peek() == Some(b'<') {
            self.at += 1;
            while self.peek().is_some_and(|c| c != b'>') {
                self.at += 1;
            }
            if self.peek() != Some(b'>') {
                return Err("unterminated <name>".into());
            }
            self.at += 1;
            let inner = &self.text[start + 1..self.at - 1];
            return Ok(String::from_utf8_lossy(inner).into_owned());
        }
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.at += 1;
        }
        if self.at - start < 3 {
            return Err("a zone name has at least 3 letters".into());
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.at]).into_owned())
    }

    fn number(&mut self) -> Result<i32, String> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        std::str::from_utf8(&self.text[start..self.at])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "expected a number".to_string())
    }

    /// `[+-]hh[:mm[:ss]]`, in seconds.
    fn time(&mut self) -> Result<i32, String> {
        let sign = match self.peek() {
            Some(b'-') => {
                self.at += 1;
                -1
            }
            Some(b'+') => {
                self.at += 1;
                1
            }
            _ => 1,
        };
        let mut seconds = self.number()? * 3600;
        for unit in [60, 1] {
            if self.peek() != Some(b':') {
                break;
            }
            self.at += 1;
            seconds += self.number()? * unit;
        }
        Ok(sign * seconds)
    }

    fn date(&mut self) -> Result<(DateRule, i32), String> {
        let rule = match self.peek() {
            Some(b'J') => {
                self.at += 1;
                DateRule::Julian(self.number()? as u32)
            }
            Some(b'M') => {
                self.at += 1;
                let month = self.number()? as u32;
                self.expect(b'.')?;
                let week = self.number()? as u32;
                self.expect(b'.')?;
                let day = self.number()? as u32;
                if !(1..=12).contains(&month) || day > 6 {
                    return Err("bad Mm.w.d date".into());
                }
                DateRule::Month { month, week, day }
            }
            _ => DateRule::Zero(self.number()? as u32),
        };
        let time = if self.peek() == Some(b'/') {
            self.at += 1;
            self.time()?
        } else {
            7200
        };
        Ok((rule, time))
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected '{}'", c as char))
        }
    }
}

impl PosixRule {
    fn parse(spec: &str) -> Result<PosixRule, String> {
        let mut p = RuleParser {
            text: spec.as_bytes(),
            at: 0,
        };
        let std_name = p.name()?;
        // POSIX offsets count west of UTC: "CET-1" is one hour east.
        let std_offset = -p.time()?;
        if p.peek().is_none() {
            return Ok(PosixRule {
                std_name,
                std_offset,
                dst: None,
            });
        }
        let dst_name = p.name()?;
        let dst_offset = match p.peek() {
            Some(b',') | None => std_offset + 3600,
            _ => -p.time()?,
        };
        let (start, end) = if p.peek() == Some(b',') {
            p.at += 1;
            let start = p.date()?;
            p.expect(b',')?;
            (start, p.date()?)
        } else {
            // POSIX leaves the default to the implementation; the US rule is common.
            (
                (
                    DateRule::Month {
                        month: 3,
                        week: 2,
                        day: 0,
                    },
                    7200,
                ),
                (
                    DateRule::Month {
                        month: 11,
                        week: 1,
                        day: 0,
                    },
                    7200,
                ),
            )
        };
        if p.peek().is_some() {
            return Err(format!("unexpected text in TZ rule {spec:?}"));
        }
        Ok(PosixRule {
            std_name,
            std_offset,
            dst: Some(Dst {
                name: dst_name,
                offset: dst_offset,
                start,
                end,
            }),
        })
    }

    fn offset_at(&self, unix: i64) -> Offset<'_> {
        let standard = Offset {
            seconds: self.std_offset,
            abbreviation: &self.std_name,
        };
        let Some(dst) = &self.dst else {
            return standard;
        };
        let local_days = (unix + i64::from(self.std_offset)).div_euclid(DAY);
        let (year, _, _) = civil_from_days(local_days);
        // Transition times are local: the start in standard time, the end in
        // daylight-saving time.
        let start =
            dst.start.0.day(year) * DAY + i64::from(dst.start.1) - i64::from(self.std_offset);
        let end = dst.end.0.day(year) * DAY + i64::from(dst.end.1) - i64::from(dst.offset);
        let in_dst = if start < end {
            (start..end).contains(&unix)
        } else {
            !(end..start).contains(&unix)
        };
        if in_dst {
            Offset {
                seconds: dst.offset,
                abbreviation: &dst.name,
            }
        } else {
            standard
        }
    }
}

/// One piece of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Micros,
    Offset,
    ZoneName,
}

/// A parsed `strftime`-style format. Supported codes: `%Y` (year), `%m`, `%d`,
/// `%H`, `%M`, `%S` (two digits each), `%f` (microseconds, six digits), `%z`
/// (`+hhmm`), `%Z` (zone abbreviation), `%F` (`%Y-%m-%d`), `%T` (`%H:%M:%S`) and
/// `%%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFormat {
    pieces: Vec<Piece>,
}

impl Default for TimeFormat {
    /// `%Y-%m-%d %H:%M:%S`.
    fn default() -> Self {
        let text = |t: &str| Piece::Text(t.to_string());
        TimeFormat {
            pieces: vec![
                Piece::Year,
                text("-"),
                Piece::Month,
                text("-"),
                Piece::Day,
                text(" "),
                Piece::Hour,
                text(":"),
                Piece::Minute,
                text(":"),
                Piece::Second,
            ],
        }
    }
}

/// The codes [`TimeFormat`] knows, for error messages.
pub const SUPPORTED_CODES: &str = "%Y %m %d %H %M %S %f %z %Z %F %T %%";

impl TimeFormat {
    /// Parses `format`; an unknown or incomplete `%` code is an error naming it.
    pub fn parse(format: &str) -> Result<TimeFormat, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let code = chars.next().ok_or_else(|| {
                format!("time format {format:?} ends with a lone '%' (write %% for a percent sign)")
            })?;
            let expanded: &[Piece] = match code {
                '%' => {
                    text.push('%');
                    continue;
                }
                'Y' => &[Piece::Year],
                'm' => &[Piece::Month],
                'd' => &[Piece::Day],
                'H' => &[Piece::Hour],
                'M' => &[Piece::Minute],
                'S' => &[Piece::Second],
                'f' => &[Piece::Micros],
                'z' => &[Piece::Offset],
                'Z' => &[Piece::ZoneName],
                'F' => &[Piece::Year, Piece::Month, Piece::Day],
                'T' => &[Piece::Hour, Piece::Minute, Piece::Second],
                other => {
                    return Err(format!(
                        "time format {format:?} has an unsupported code %{other} (supported: {SUPPORTED_CODES})"
                    ))
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            let separator = if code == 'F' { "-" } else { ":" };
            for (i, piece) in expanded.iter().enumerate() {
                if i > 0 {
                    pieces.push(Piece::Text(separator.into()));
                }
                pieces.push(piece.clone());
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(TimeFormat { pieces })
    }

    /// Formats `time` in `zone`.
    pub fn format(&self, time: SystemTime, zone: &Zone) -> String {
        let mut out = String::with_capacity(32);
        self.format_into(&mut out, time, zone);
        out
    }

    /// Appends `time`, formatted in `zone`, to `out`.
    pub fn format_into(&self, out: &mut String, time: SystemTime, zone: &Zone) {
        let (secs, micros) = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_micros()),
            Err(e) => {
                let d = e.duration();
                let micros = d.subsec_micros();
                if micros == 0 {
                    (-(d.as_secs() as i64), 0)
                } else {
                    (-(d.as_secs() as i64) - 1, 1_000_000 - micros)
                }
            }
        };
        let offset = zone.offset_at(secs);
        let local = secs + i64::from(offset.seconds);
        let days = local.div_euclid(DAY);
        let of_day = local.rem_euclid(DAY);
        let (year, month, day) = civil_from_days(days);
        for piece in &self.pieces {
            // Writing to a String cannot fail.
            let _ = match piece {
                Piece::Text(text) => out.write_str(text),
                Piece::Year => write!(out, "{year:04}"),
                Piece::Month => write!(out, "{month:02}"),
                Piece::Day => write!(out, "{day:02}"),
                Piece::Hour => write!(out, "{:02}", of_day / 3600),
                Piece::Minute => write!(out, "{:02}", of_day / 60 % 60),
                Piece::Second => write!(out, "{:02}", of_day % 60),
                Piece::Micros => write!(out, "{micros:06}"),
                Piece::Offset => {
                    let sign = if offset.seconds < 0 { '-' } else { '+' };
                    let abs = offset.seconds.unsigned_abs();
                    write!(out, "{sign}{:02}{:02}", abs / 3600, abs / 60 % 60)
                }
                Piece::ZoneName => out.write_str(offset.abbreviation),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    #[test]
    fn calendar_arithmetic_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // 2024-01-01 was a Monday.
        assert_eq!(weekday(days_from_civil(2024, 1, 1)), 0);
        assert_eq!(weekday(0), 3);
    }

    #[test]
    fn formats_utc_with_every_code() {
        let format = TimeFormat::parse("%Y-%m-%d %H:%M:%S.%f %z %Z %% %F %T").unwrap();
        // 2021-03-04 05:06:07.089 UTC
        let time = at(1_614_834_367) + Duration::from_micros(89_000);
        assert_eq!(
            format.format(time, &Zone::utc()),
            "2021-03-04 05:06:07.089000 +0000 UTC % 2021-03-04 05:06:07"
        );
    }

    #[test]
    fn the_default_format_is_date_and_time() {
        assert_eq!(
            TimeFormat::default(),
            TimeFormat::parse("%Y-%m-%d %H:%M:%S").unwrap()
        );
    }

    #[test]
    fn unknown_codes_are_refused_by_name() {
        let err = TimeFormat::parse("%Y %q").unwrap_err();
        assert!(err.contains("%q"), "{err}");
        assert!(TimeFormat::parse("50%").unwrap_err().contains("lone"));
    }

    #[test]
    fn posix_rules_give_daylight_saving_time() {
        let paris = Zone::from_posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2024-01-15 12:00 UTC: winter.
        let winter = days_from_civil(2024, 1, 15) * DAY + 12 * 3600;
        assert_eq!(paris.offset_at(winter).seconds, 3600);
        assert_eq!(paris.offset_at(winter).abbreviation, "CET");
        // 2024-07-15: summer.
        let summer = days_from_civil(2024, 7, 15) * DAY;
        assert_eq!(paris.offset_at(summer).seconds, 7200);
        assert_eq!(paris.offset_at(summer).abbreviation, "CEST");
        // DST began 2024-03-31 01:00 UTC.
        let start = days_from_civil(2024, 3, 31) * DAY + 3600;
        assert_eq!(paris.offset_at(start - 1).seconds, 3600);
        assert_eq!(paris.offset_at(start).seconds, 7200);
        // Southern hemisphere: Sydney, DST from October to April.
        let sydney = Zone::from_posix("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(sydney.offset_at(winter).seconds, 11 * 3600);
        assert_eq!(sydney.offset_at(summer).seconds, 10 * 3600);
        let india = Zone::from_posix("<+0530>-5:30").unwrap();
        assert_eq!(india.offset_at(summer).seconds, 5 * 3600 + 1800);
        assert_eq!(india.offset_at(summer).abbreviation, "+0530");
        assert!(Zone::from_posix("X1").is_err());
    }

    #[test]
    fn midnight_follows_the_zone() {
        let zone = Zone::from_posix("EST5").unwrap();
        // 2024-01-15 03:00 UTC is 22:00 the day before in New York.
        let t = days_from_civil(2024, 1, 15) * DAY + 3 * 3600;
        assert_eq!(
            zone.next_midnight(t),
            days_from_civil(2024, 1, 15) * DAY + 5 * 3600
        );
        assert_eq!(
            Zone::utc().next_midnight(t),
            days_from_civil(2024, 1, 16) * DAY
        );
    }

    /// A minimal version-2 TZif file: one transition to a +1h type, then the footer.
    fn tzif_v2(footer: &str) -> Vec<u8> {
        let mut data = Vec::new();
        let header = |data: &mut Vec<u8>, timecnt: u32, typecnt: u32, charcnt: u32| {
            data.extend_from_slice(b"TZif2");
            data.extend_from_slice(&[0; 15]);
            for count in [0, 0, 0, timecnt, typecnt, charcnt] {
                data.extend_from_slice(&u32::to_be_bytes(count));
            }
        };
        // v1 block: no transitions, one type.
        header(&mut data, 0, 1, 4);
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&[0, 0]);
        data.extend_from_slice(b"UTC\0");
        // v2 block: one transition at t = 1000 to type 1 (+3600, "ONE").
        header(&mut data, 1, 2, 8);
        data.extend_from_slice(&1000i64.to_be_bytes());
        data.push(1);
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&[0, 0]);
        data.extend_from_slice(&3600i32.to_be_bytes());
        data.extend_from_slice(&[0, 4]);
        data.extend_from_slice(b"UTC\0ONE\0");
        data.extend_from_slice(format!("\n{footer}\n").as_bytes());
        data
    }

    #[test]
    fn tzif_files_are_read() {
        let zone = Zone::from_tzif(&tzif_v2("")).unwrap();
        assert_eq!(zone.offset_at(999).seconds, 0);
        assert_eq!(zone.offset_at(999).abbreviation, "UTC");
        assert_eq!(zone.offset_at(1000).seconds, 3600);
        assert_eq!(zone.offset_at(1_000_000_000).abbreviation, "ONE");
        // Past the last transition the footer rules.
        let zone = Zone::from_tzif(&tzif_v2("TWO-2")).unwrap();
        assert_eq!(zone.offset_at(1_000_000_000).seconds, 7200);
        assert!(Zone::from_tzif(b"nope").is_err());
        assert!(Zone::from_tzif(&tzif_v2("")[..60]).is_err());
    }

    #[test]
    fn the_hosts_zone_files_parse_when_present() {
        // Whatever this host has must parse (or be absent); never panic.
        for path in ["/etc/localtime", "/usr/share/zoneinfo/Europe/Paris"] {
            if let Ok(zone) = Zone::from_file(Path::new(path)) {
                let _ = zone.offset_at(1_700_000_000);
            }
        }
        let _ = Zone::local().offset_at(0);
        if let Ok(paris) = Zone::from_file(Path::new("/usr/share/zoneinfo/Europe/Paris")) {
            let july_2024 = days_from_civil(2024, 7, 15) * DAY;
            assert_eq!(paris.offset_at(july_2024).seconds, 7200);
            assert_eq!(paris.offset_at(july_2024).abbreviation, "CEST");
            let january_2090 = days_from_civil(2090, 1, 15) * DAY;
            assert_eq!(paris.offset_at(january_2090).seconds, 3600);
            let july_1990 = days_from_civil(1990, 7, 15) * DAY;
            assert_eq!(paris.offset_at(july_1990).seconds, 7200);
        }
    }
}
