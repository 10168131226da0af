//! Numbers and times in words a reader takes in at a glance.

/// `1536` → `"1.5 KiB"` (binary units, as `du -h` and nix print them).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Unix seconds → `"2026-12-01 14:20 UTC"`.
pub fn timestamp(unix_secs: i64) -> String {
    let Ok(secs) = u64::try_from(unix_secs) else { return "–".to_owned() };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    // RFC 3339 is "YYYY-MM-DDTHH:MM:SSZ"; minutes are precise enough for a dashboard.
    let rfc3339 = humantime::format_rfc3339_seconds(time).to_string();
    format!("{} {} UTC", &rfc3339[..10], &rfc3339[11..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_du() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn times_are_utc_minutes() {
        assert_eq!(timestamp(0), "1970-01-01 00:00 UTC");
        assert_eq!(timestamp(1_796_137_200), "2026-12-01 15:00 UTC");
        assert_eq!(timestamp(-5), "–");
    }
}
