//! The container's memory limit, read once at start from the cgroup (under
//! `--cgroup-root`, as the CPU quota in [`crate::cpu`]): cgroup v2
//! `memory.max` in the process's cgroup and each ancestor (the smallest
//! wins; `max` is no limit), else cgroup v1 `memory.limit_in_bytes`, where
//! a value near `i64::MAX` (rounded down to a page) means no limit.
//!
//! `/metrics` exports it as `embeddings_memory_limit_bytes` (no sample when
//! there is no limit or none could be read), so an alert can compare the
//! resident memory with what the kernel will kill the container at.

use std::path::Path;

use crate::cpu::{ancestors, v1_path, v2_path};

/// cgroup v1 reports "no limit" as `PAGE_COUNTER_MAX` pages: `i64::MAX`
/// rounded down to the page size. Anything at or above 2^62 bytes is that.
const V1_UNLIMITED: u64 = 1 << 62;

/// The memory limit in bytes of the process's cgroup under `root`, or
/// `None` when unlimited or unreadable.
#[must_use]
pub fn read(root: &Path) -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    limit(root, &own)
}

fn limit(root: &Path, proc_cgroup: &str) -> Option<u64> {
    let v2: Vec<Option<u64>> = ancestors(root, v2_path(proc_cgroup))
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("memory.max")).ok())
        .filter_map(|text| parse_v2(&text))
        .collect();
    if !v2.is_empty() {
        return v2.into_iter().flatten().min();
    }
    ancestors(&root.join("memory"), v1_path(proc_cgroup, "memory"))
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("memory.limit_in_bytes")).ok())
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .filter(|b| *b < V1_UNLIMITED)
        .min()
}

/// `memory.max`: `"max"` → `Some(None)`; a byte count → `Some(Some(n))`;
/// anything else → `None` (not read).
fn parse_v2(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        n => n.parse().ok().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_smallest_v2_limit_on_the_way_to_the_root_wins() {
        let root = tempfile::tempdir().unwrap();
        write(&root.path().join("memory.max"), "max\n");
        write(&root.path().join("kubepods/memory.max"), "8589934592\n");
        write(&root.path().join("kubepods/pod1/memory.max"), "max\n");
        assert_eq!(limit(root.path(), "0::/kubepods/pod1\n"), Some(8 << 30));
        // Unlimited all the way: no figure.
        assert_eq!(limit(root.path(), "0::/\n"), None);
    }

    #[test]
    fn v1_limits_and_their_unlimited_value() {
        let root = tempfile::tempdir().unwrap();
        let cg = "5:memory:/docker/abc\n";
        write(
            &root.path().join("memory/docker/abc/memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        assert_eq!(limit(root.path(), cg), None, "the v1 'no limit' value");
        write(
            &root.path().join("memory/docker/memory.limit_in_bytes"),
            "2147483648\n",
        );
        assert_eq!(limit(root.path(), cg), Some(2 << 30));
    }

    #[test]
    fn nothing_readable_is_unknown() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(limit(root.path(), "0::/x\n"), None);
        write(&root.path().join("memory.max"), "garbage\n");
        assert_eq!(limit(root.path(), "0::/\n"), None);
    }
}
