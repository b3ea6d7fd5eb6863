//! Container-aware CPU sizing: how many compute threads this process should
//! run, from what it may really use rather than what the host has. A pod
//! limited to 2 CPUs on a 64-core node that starts 64 threads is throttled
//! every scheduling period and loses most of its throughput.
//!
//! The decision, first that applies:
//! 1. `--threads N` (`EMBEDDINGS_THREADS`);
//! 2. the cgroup CPU quota, in whole cores (rounded down, at least 1: a
//!    thread more than the quota is what gets throttled), when it is below
//!    the CPUs the process may run on;
//! 3. the CPUs in the process's affinity mask (`Cpus_allowed_list`);
//! 4. what the standard library reports.
//!
//! The quota is read under `--cgroup-root` (default `/sys/fs/cgroup`;
//! tests pass a fake one): cgroup v2 `cpu.max` in the process's own cgroup
//! and every ancestor up to the root (the smallest wins), else cgroup v1
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us`. The same folder's `cpu.stat`
//! gives the throttling counters `/metrics` exports.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where the thread count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadSource {
    /// `--threads`.
    Flag,
    /// The cgroup CPU quota.
    CgroupQuota,
    /// The affinity mask.
    Affinity,
    /// The standard library's count (neither a quota nor a mask was read).
    Host,
}

/// The CPU limits read and the thread count decided from them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuPlan {
    /// Compute threads to run.
    pub threads: usize,
    /// Why that many.
    pub source: ThreadSource,
    /// The cgroup quota in cores (e.g. 1.5); `None`: no quota (or none read).
    pub quota_cores: Option<f64>,
    /// CPUs in the affinity mask; `None` when it could not be read.
    pub affinity_cpus: Option<usize>,
    /// The cgroup folder whose `cpu.stat` holds the throttling counters.
    #[serde(skip)]
    pub stat_dir: Option<PathBuf>,
}

/// Throttling counters from `cpu.stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttling {
    /// Enforcement periods elapsed.
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Time spent throttled, seconds.
    pub throttled_seconds: f64,
}

/// The default `--cgroup-root`.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl CpuPlan {
    /// Decides the thread count from `threads` (the flag), the cgroup under
    /// `root` and the affinity mask.
    #[must_use]
    pub fn decide(threads: Option<usize>, root: &Path) -> Self {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let (quota_cores, stat_dir) = match quota(root, &own) {
            Some((q, dir)) => (q, Some(dir)),
            None => (None, None),
        };
        let affinity_cpus = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| affinity(&s));
        let host = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let usable = affinity_cpus.unwrap_or(host);
        let quota_threads = quota_cores.map(|q| (q.floor() as usize).max(1));
        let (threads, source) = match (threads, quota_threads) {
            (Some(n), _) => (n.max(1), ThreadSource::Flag),
            (None, Some(q)) if q < usable => (q, ThreadSource::CgroupQuota),
            (None, _) if affinity_cpus.is_some() => (usable, ThreadSource::Affinity),
            (None, _) => (host, ThreadSource::Host),
        };
        Self {
            threads,
            source,
            quota_cores,
            affinity_cpus,
            stat_dir,
        }
    }

    /// Sizes the process-wide compute pool (rayon's global pool, which
    /// candle's matrix products, the forward pass's row-parallel passes and
    /// the tokenizer run on) to [`threads`](Self::threads). Call once, before
    /// any computation.
    ///
    /// # Errors
    /// rayon's, when the pool was already built or no thread could start.
    pub fn apply(&self) -> Result<(), rayon::ThreadPoolBuildError> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .thread_name(|i| format!("compute-{i}"))
            .build_global()
    }

    /// The throttling counters now; `None` when `cpu.stat` cannot be read.
    #[must_use]
    pub fn throttling(&self) -> Option<Throttling> {
        let text = std::fs::read_to_string(self.stat_dir.as_ref()?.join("cpu.stat")).ok()?;
        parse_stat(&text)
    }
}

/// The quota (cores; `None` for "max") and the folder it was read in, from
/// the smallest quota on the path from the process's cgroup to the root.
/// `None` when no CPU controller file exists under `root`.
fn quota(root: &Path, proc_cgroup: &str) -> Option<(Option<f64>, PathBuf)> {
    type Found = Option<(Option<f64>, PathBuf)>;
    fn consider(found: &mut Found, q: Option<f64>, dir: &Path) {
        let smaller = match (&*found, q) {
            (None, _) | (Some((None, _)), Some(_)) => true,
            (Some((Some(best), _)), Some(q)) => q < *best,
            (Some(_), None) => false,
        };
        if smaller {
            *found = Some((q, dir.to_owned()));
        }
    }
    let mut found: Found = None;
    for dir in ancestors(root, v2_path(proc_cgroup)) {
        if let Ok(text) = std::fs::read_to_string(dir.join("cpu.max"))
            && let Some(q) = parse_cpu_max(&text)
        {
            consider(&mut found, q, &dir);
        }
    }
    if found.is_some() {
        return found;
    }
    // cgroup v1: "N:cpu,cpuacct:/path" (or "cpu" alone).
    let v1_path = v1_path(proc_cgroup, "cpu");
    for mount in ["cpu,cpuacct", "cpu"] {
        for dir in ancestors(&root.join(mount), v1_path) {
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
            if let (Some(q), Some(p)) = (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us"))
                && let Some(q) = parse_v1(&q, &p)
            {
                consider(&mut found, q, &dir);
            }
        }
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The process's cgroup v2 path, from `/proc/self/cgroup`'s `0::/path` line
/// (`/` when there is none).
pub(crate) fn v2_path(proc_cgroup: &str) -> &str {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
}

/// The process's cgroup v1 path for `controller`, from
/// `/proc/self/cgroup`'s `N:controllers:/path` lines (`/` when none names it).
pub(crate) fn v1_path<'a>(proc_cgroup: &'a str, controller: &str) -> &'a str {
    proc_cgroup
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then_some(path)
        })
        .unwrap_or("/")
}

/// `root/path`, then each parent up to `root` itself (those that exist).
pub(crate) fn ancestors(root: &Path, path: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut rel: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != "..")
        .collect();
    loop {
        let dir = rel.iter().fold(root.to_owned(), |d, p| d.join(p));
        if dir.is_dir() {
            dirs.push(dir);
        }
        if rel.pop().is_none() {
            break;
        }
    }
    dirs
}

/// `cpu.max`: `"max 100000"` → `Some(None)`; `"150000 100000"` → 1.5 cores.
fn parse_cpu_max(text: &str) -> Option<Option<f64>> {
    let mut parts = text.split_whitespace();
    let (quota, period) = (parts.next()?, parts.next().unwrap_or("100000"));
    if quota == "max" {
        return Some(None);
    }
    cores(quota.parse().ok()?, period.parse().ok()?)
}

/// cgroup v1: a quota of -1 means none.
fn parse_v1(quota: &str, period: &str) -> Option<Option<f64>> {
    let quota: i64 = quota.trim().parse().ok()?;
    if quota < 0 {
        return Some(None);
    }
    cores(quota.unsigned_abs(), period.trim().parse().ok()?)
}

fn cores(quota: u64, period: u64) -> Option<Option<f64>> {
    (quota > 0 && period > 0).then(|| Some(quota as f64 / period as f64))
}

/// `Cpus_allowed_list:\t0-3,8` → 5.
fn affinity(status: &str) -> Option<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut n = 0usize;
    for range in list.split(',').filter(|r| !r.is_empty()) {
        n += match range.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                range.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// `cpu.stat` of v2 (`throttled_usec`) or v1 (`throttled_time`, ns).
fn parse_stat(text: &str) -> Option<Throttling> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse::<u64>().ok()).flatten()
        })
    };
    let throttled_seconds = match (field("throttled_usec"), field("throttled_time")) {
        (Some(us), _) => us as f64 / 1e6,
        (None, Some(ns)) => ns as f64 / 1e9,
        (None, None) => return None,
    };
    Some(Throttling {
        periods: field("nr_periods")?,
        throttled_periods: field("nr_throttled")?,
        throttled_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_and_v1_quotas_parse_to_cores() {
        assert_eq!(parse_cpu_max("max 100000\n"), Some(None));
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(Some(1.5)));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_v1("-1\n", "100000\n"), Some(None));
        assert_eq!(parse_v1("400000\n", "100000\n"), Some(Some(4.0)));
    }

    #[test]
    fn the_affinity_list_counts_cpus() {
        assert_eq!(affinity("Name:\tx\nCpus_allowed_list:\t0-3,8\n"), Some(5));
        assert_eq!(affinity("Cpus_allowed_list:\t2\n"), Some(1));
        assert_eq!(affinity("Cpus_allowed_list:\t3-1\n"), None);
        assert_eq!(affinity("nothing here"), None);
    }

    #[test]
    fn cpu_stat_of_both_versions_parses() {
        let v2 = "usage_usec 10\nnr_periods 7\nnr_throttled 3\nthrottled_usec 2500000\n";
        assert_eq!(
            parse_stat(v2),
            Some(Throttling {
                periods: 7,
                throttled_periods: 3,
                throttled_seconds: 2.5
            })
        );
        let v1 = "nr_periods 4\nnr_throttled 1\nthrottled_time 500000000\n";
        assert_eq!(parse_stat(v1).map(|t| t.throttled_seconds), Some(0.5));
    }

    #[test]
    fn the_smallest_quota_on_the_way_to_the_root_wins() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inner = root.path().join("kubepods").join("pod1");
        std::fs::create_dir_all(&inner).unwrap_or_else(|e| panic!("{e}"));
        let write = |p: PathBuf, t: &str| std::fs::write(p, t).unwrap_or_else(|e| panic!("{e}"));
        write(root.path().join("cpu.max"), "max 100000\n");
        write(
            root.path().join("kubepods").join("cpu.max"),
            "300000 100000\n",
        );
        write(inner.join("cpu.max"), "max 100000\n");
        let (q, dir) = quota(root.path(), "0::/kubepods/pod1\n").unwrap_or_else(|| panic!());
        assert_eq!(q, Some(3.0));
        assert_eq!(dir, root.path().join("kubepods"));
        // An own path that does not exist under the root: the root's file.
        let (q, _) = quota(root.path(), "0::/elsewhere\n").unwrap_or_else(|| panic!());
        assert_eq!(q, None);
    }

    #[test]
    fn a_quota_below_the_usable_cpus_sizes_the_pool_and_the_flag_wins() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.path().join("cpu.max"), "150000 100000\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let plan = CpuPlan::decide(None, root.path());
        assert_eq!(plan.quota_cores, Some(1.5));
        assert_eq!(plan.threads, 1, "1.5 cores: one thread is never throttled");
        if plan.affinity_cpus.unwrap_or(1) > 1 {
            assert_eq!(plan.source, ThreadSource::CgroupQuota);
        }
        let plan = CpuPlan::decide(Some(3), root.path());
        assert_eq!((plan.threads, plan.source), (3, ThreadSource::Flag));
        let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let plan = CpuPlan::decide(None, empty.path());
        assert_eq!(plan.quota_cores, None);
        assert!(plan.threads >= 1);
    }
}
