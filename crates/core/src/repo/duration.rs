//! TTLs as users write them: `1d`, `3600s`, `90m`, `2h30m`, `1w`, `500ms`, or plain seconds.

use super::definitions::DurationValue;

/// Parses a TTL into a protobuf `Duration` (0 = no limit, as in Feast).
pub fn parse_duration(value: &DurationValue) -> Result<prost_types::Duration, String> {
    let text = match value {
        DurationValue::Seconds(s) => {
            let seconds = i64::try_from(*s).map_err(|_| format!("{s} seconds is too large"))?;
            return Ok(prost_types::Duration { seconds, nanos: 0 });
        }
        DurationValue::Text(t) => t.trim(),
    };
    if text.is_empty() {
        return Err("empty duration; write e.g. 1d, 3600s, 2h30m or 0".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return parse_duration(&DurationValue::Seconds(secs));
    }
    let bad =
        || format!("invalid duration \"{text}\"; write e.g. 1d, 3600s, 90m, 2h30m, 500ms or 0");
    let mut nanos: i128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "w" => 604_800e9,
            "d" => 86_400e9,
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" => 1e3,
            "ns" => 1.0,
            _ => return Err(bad()),
        };
        nanos += (number * scale).round() as i128;
    }
    let seconds = i64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    Ok(prost_types::Duration {
        seconds,
        nanos: (nanos % 1_000_000_000) as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> (i64, i32) {
        let d = parse_duration(&DurationValue::Text(s.into())).unwrap();
        (d.seconds, d.nanos)
    }

    #[test]
    fn units_and_compounds() {
        assert_eq!(secs("1d"), (86_400, 0));
        assert_eq!(secs("3600s"), (3600, 0));
        assert_eq!(secs("2h30m"), (9000, 0));
        assert_eq!(secs("1w"), (604_800, 0));
        assert_eq!(secs("1.5h"), (5400, 0));
        assert_eq!(secs("500ms"), (0, 500_000_000));
        assert_eq!(secs("0"), (0, 0));
        assert_eq!(secs("86400"), (86_400, 0));
        assert_eq!(
            parse_duration(&DurationValue::Seconds(7200))
                .unwrap()
                .seconds,
            7200
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "d", "1x", "one day", "1d-", "-1d"] {
            assert!(
                parse_duration(&DurationValue::Text(bad.into())).is_err(),
                "{bad}"
            );
        }
    }
}
