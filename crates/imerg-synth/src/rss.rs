//! This process's resident memory, as Linux reports it in `/proc/self/status`, for the memory
//! columns of simulation and benchmark reports. Where that file is missing or unreadable (not
//! Linux), every value is 0.

/// Resident set size now, in bytes (`VmRSS`).
pub fn current_bytes() -> u64 {
    read("VmRSS:")
}

/// Peak resident set size since the process started, in bytes (`VmHWM`).
pub fn peak_bytes() -> u64 {
    read("VmHWM:")
}

fn read(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| kib(&status, field))
        .map_or(0, |kb| kb * 1024)
}

/// The value of a `Field:   1234 kB` line.
fn kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kib_fields() {
        let status = "Name:\tx\nVmHWM:\t  20480 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(kib(status, "VmRSS:"), Some(1024));
        assert_eq!(kib(status, "VmHWM:"), Some(20480));
        assert_eq!(kib(status, "VmSwap:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_peak_is_at_least_what_was_resident_before() {
        let now = current_bytes();
        assert!(now > 0);
        assert!(peak_bytes() >= now);
    }
}
