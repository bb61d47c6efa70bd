//! Time as text, in one place: the one timestamp parser (every RFC 3339 form and what .NET writes),
//! the one RFC 3339 formatter, the .NET round-trip form Azure DevOps reads, and HTTP dates.
//!
//! Every other module formats and parses through here, so a timestamp patrol writes (journal, tags,
//! JSON output, webhooks) always reads back, and every form a service sends is read the same way.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// RFC 3339 in UTC as patrol writes it everywhere (`2026-12-02T08:00:00Z`, fractions only when present).
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// [`parse`], for values where a bad timestamp simply counts as absent (tags, optional fields).
pub fn parse_opt(s: &str) -> Option<OffsetDateTime> {
    parse(s).ok()
}

/// A timestamp as the .NET host writes it, returned in UTC:
/// `YYYY-MM-DD[T| ]HH:MM[:SS[.fffffff]][Z|±HH:MM|±HHMM|±HH]`. No offset means UTC (Functions hosts run
/// in UTC; `DateTime` of kind Local/Unspecified carries none). Fraction digits beyond nanoseconds are
/// ignored. Year 0001 parses; see [`is_unset`].
pub fn parse(s: &str) -> Result<OffsetDateTime, String> {
    let mut p = Cursor { s: s.trim().as_bytes(), i: 0 };
    let year = p.digits(4, 4).ok_or("expected a four-digit year")? as i32;
    p.expect(b'-').ok_or("expected '-' after the year")?;
    let month = p.digits(2, 2).ok_or("expected a two-digit month")?;
    p.expect(b'-').ok_or("expected '-' after the month")?;
    let day = p.digits(2, 2).ok_or("expected a two-digit day")?;
    match p.next() {
        Some(b'T' | b't' | b' ') => {}
        _ => return Err("expected 'T' between date and time".into()),
    }
    let hour = p.digits(2, 2).ok_or("expected a two-digit hour")?;
    p.expect(b':').ok_or("expected ':' after the hour")?;
    let minute = p.digits(2, 2).ok_or("expected two-digit minutes")?;
    let second = if p.peek() == Some(b':') {
        p.i += 1;
        p.digits(2, 2).ok_or("expected two-digit seconds")?
    } else {
        0
    };
    let mut nanos = 0u32;
    if p.peek() == Some(b'.') || p.peek() == Some(b',') {
        p.i += 1;
        let start = p.i;
        while p.peek().is_some_and(|c| c.is_ascii_digit()) {
            p.i += 1;
        }
        let frac = &p.s[start..p.i];
        if frac.is_empty() {
            return Err("expected digits after the decimal point".into());
        }
        for (k, d) in frac.iter().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - k as u32);
        }
    }
    let offset = match p.next() {
        None => UtcOffset::UTC,
        Some(b'Z' | b'z') => UtcOffset::UTC,
        Some(sign @ (b'+' | b'-')) => {
            let h = p.digits(2, 2).ok_or("expected a two-digit offset hour")?;
            let _ = p.expect(b':');
            let m = p.digits(2, 2).unwrap_or(0);
            let (h, m) = (h as i8, m as i8);
            let (h, m) = if sign == b'-' { (-h, -m) } else { (h, m) };
            UtcOffset::from_hms(h, m, 0).map_err(|_| "offset out of range")?
        }
        Some(_) => return Err("unexpected text after the time".into()),
    };
    if p.peek().is_some() {
        return Err("unexpected text after the offset".into());
    }
    let month = u8::try_from(month).ok().and_then(|m| Month::try_from(m).ok()).ok_or("month out of range")?;
    let date = Date::from_calendar_date(year, month, day as u8).map_err(|_| "no such date")?;
    let time = Time::from_hms_nano(hour as u8, minute as u8, second as u8, nanos).map_err(|_| "no such time")?;
    PrimitiveDateTime::new(date, time)
        .assume_offset(offset)
        .checked_to_offset(UtcOffset::UTC)
        .ok_or_else(|| "out of range once converted to UTC".into())
}

/// The .NET round-trip form (`2026-12-02T08:00:00.1234567Z`, 7 fraction digits, UTC) that Azure DevOps
/// writes and reads: sending less precision would make an exclusive `endTime` skip entries logged in the
/// same millisecond.
pub fn dotnet_round_trip(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let ticks = t.nanosecond() / 100;
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let base = t.format(&fmt).unwrap_or_default();
    format!("{base}.{ticks:07}Z")
}

/// An HTTP date (RFC 9110 IMF-fixdate: `Wed, 02 Dec 2026 08:00:00 GMT`).
pub fn http_date(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(UtcOffset::UTC).format(&f).unwrap_or_default()
}

/// An HTTP date as a server sends it (`Retry-After`, `Date`): IMF-fixdate or RFC 2822.
pub fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc2822).ok()
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.i += 1)
    }
    fn digits(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.i;
        while self.i - start < max && self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i - start < min {
            return None;
        }
        Some(self.s[start..self.i].iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn every_form_services_send_reads_as_the_same_instant() {
        let t = datetime!(2026-12-02 08:00:00.1234567 UTC);
        for s in [
            "2026-12-02T08:00:00.1234567Z",      // Azure DevOps (.NET round trip)
            "2026-12-02T08:00:00.1234567",       // Token Admin: no offset means UTC
            "2026-12-02T09:00:00.1234567+01:00", // RFC 3339 with an offset
            "2026-12-02 08:00:00.1234567z",      // the Functions host's variants
            "  2026-12-02T08:00:00.12345670Z ",
        ] {
            assert_eq!(parse(s).unwrap(), t, "{s}");
        }
        assert_eq!(parse("2026-12-02T08:00").unwrap(), datetime!(2026-12-02 08:00 UTC));
        assert!(parse("2026-13-02T08:00:00Z").unwrap_err().contains("month"));
        assert!(parse_opt("yesterday").is_none());
    }

    #[test]
    fn what_patrol_writes_reads_back() {
        for t in
            [datetime!(2026-12-02 08:00 UTC), datetime!(2026-12-02 08:00:00.5 +02:00), datetime!(0001-01-01 0:00 UTC)]
        {
            assert_eq!(parse(&rfc3339(t)).unwrap(), t);
            assert_eq!(parse(&dotnet_round_trip(t)).unwrap(), t);
        }
        assert_eq!(rfc3339(datetime!(2026-12-02 10:00 +02:00)), "2026-12-02T08:00:00Z");
        assert_eq!(dotnet_round_trip(datetime!(2026-12-02 08:00:00.25 UTC)), "2026-12-02T08:00:00.2500000Z");
    }

    #[test]
    fn http_dates() {
        let t = datetime!(2026-12-02 08:00:00 UTC);
        assert_eq!(http_date(t), "Wed, 02 Dec 2026 08:00:00 GMT");
        assert_eq!(parse_http_date(&http_date(t)), Some(t));
    }
}
