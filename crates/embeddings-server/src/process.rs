//! Process figures for `/metrics`, read from `/proc` at scrape time: resident
//! memory, CPU seconds, open and maximum file descriptors, and start time.
//!
//! Every figure is measured; one that cannot be read on this platform is
//! `None` and its series is left out, never filled with a made-up value.

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `USER_HZ`: the unit of the CPU-time fields of `/proc/<pid>/stat`. The
/// kernel fixes it at 100 on every architecture Linux exports to user space
/// (it is part of the ABI, independent of the kernel's internal `HZ`).
const USER_HZ: f64 = 100.0;

/// One reading of the process figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident set size, bytes (`VmRSS` of `/proc/self/status`).
    pub resident_memory_bytes: Option<u64>,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads the figures of the current process.
    #[must_use]
    pub fn read() -> Self {
        let stat = fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(stat_fields);
        Self {
            resident_memory_bytes: fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| vm_rss_bytes(&s)),
            cpu_seconds: fields.as_ref().and_then(|f| cpu_seconds(f)),
            open_fds: fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
            max_fds: fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|s| max_open_files(&s)),
            start_time_seconds: fields.as_ref().and_then(|f| start_time_seconds(f)),
        }
    }
}

/// The fields of `/proc/self/stat` after the command name (which may contain
/// spaces and parentheses, so we split after its last `)`). Index 0 is the
/// state field (field 3 in `proc(5)` numbering).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

fn cpu_seconds(fields: &[&str]) -> Option<f64> {
    // utime and stime are fields 14 and 15 in proc(5), i.e. 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

fn start_time_seconds(fields: &[&str]) -> Option<f64> {
    // starttime (field 22; 19 here) is in ticks since boot; boot time comes from /proc/stat.
    let ticks: u64 = fields.get(19)?.parse().ok()?;
    let boot = fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime as f64 + ticks as f64 / USER_HZ)
}

fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Seconds since the Unix epoch of a `SystemTime` (0.0 before the epoch).
#[must_use]
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_command_name() {
        let stat = "4242 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0 12345 0 0";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(cpu_seconds(&fields), Some(4.0));
    }

    #[test]
    fn parses_status_and_limits() {
        assert_eq!(
            vm_rss_bytes("Name: x\nVmRSS:\t  2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
        assert_eq!(vm_rss_bytes("Name: x\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read();
        assert!(stats.resident_memory_bytes.is_some_and(|b| b > 0));
        assert!(stats.open_fds.is_some_and(|n| n >= 3));
        assert!(stats.cpu_seconds.is_some_and(|s| s >= 0.0));
        let started = stats.start_time_seconds.unwrap();
        let now = unix_seconds(SystemTime::now());
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0);
    }
}
