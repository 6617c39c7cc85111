//! How times travel on the wire: RFC 3339 in UTC with microseconds.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// Formats a `DATETIME(6)` value (stored in UTC) for the wire.
pub fn format_utc(value: NaiveDateTime) -> String {
    DateTime::<Utc>::from_naive_utc_and_offset(value, Utc).to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_microseconds_and_z() {
        let value = NaiveDateTime::parse_from_str("1994-04-10 20:21:25.5", "%Y-%m-%d %H:%M:%S%.f").unwrap();
        assert_eq!(format_utc(value), "1994-04-10T20:21:25.500000Z");
    }
}
