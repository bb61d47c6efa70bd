//! Wire formats shared by the emulated services: .NET-style timestamps (7 fractional digits, `Z`) and
//! tolerant parsing of the timestamps clients send.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Formats a UTC timestamp as Azure DevOps does: `2020-11-02T22:56:52.1033333Z` (100 ns ticks).
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let ticks = t.nanosecond() / 100;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ticks
    )
}

/// Parses an RFC 3339 timestamp; a timestamp without an offset is taken as UTC (as .NET does for
/// `DateTime` values of unspecified kind sent by clients).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.to_offset(UtcOffset::UTC));
    }
    let fmt = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(s, &fmt).ok().map(|p| p.assume_utc())
}

/// Serde adapter for timestamps in the persisted state (RFC 3339).
pub mod rfc3339 {
    pub use time::serde::rfc3339::*;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_seven_fraction_digits() {
        let t = time::macros::datetime!(2020-11-02 22:56:52.1033333 UTC);
        assert_eq!(format_time(t), "2020-11-02T22:56:52.1033333Z");
    }

    #[test]
    fn parses_tolerantly() {
        assert!(parse_time("2020-12-01T23:46:23.319Z").is_some());
        assert!(parse_time("2018-07-18T00:51:26.5557358-07:00").is_some());
        assert_eq!(parse_time("2018-07-19T00:00:00"), Some(time::macros::datetime!(2018-07-19 00:00 UTC)));
        assert!(parse_time("yesterday").is_none());
    }
}
