//! Repeats of one process on one snapshot with one kind of change become one report with a
//! count, first and last time and a few sample paths. Memory is bounded by the number of
//! open aggregates and the samples each keeps. Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::process::ProcessInfo;

/// Sample paths kept per aggregate.
pub const SAMPLE_PATHS: usize = 8;
/// Open aggregates at most; beyond, the oldest is reported early.
pub const MAX_OPEN: usize = 1024;
/// An aggregate is reported once quiet this long...
pub const QUIET: Duration = Duration::from_millis(300);
/// ...or once this old, so a long burst still shows while it runs.
pub const MAX_AGE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Delete,
    Create,
    MoveFrom,
    MoveTo,
    Modify,
    Attrib,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Delete => "delete",
            Op::Create => "create",
            Op::MoveFrom => "moveFrom",
            Op::MoveTo => "moveTo",
            Op::Modify => "modify",
            Op::Attrib => "attrib",
        }
    }

    /// Every change an event mask carries (the kernel merges some).
    pub fn of_mask(mask: u64) -> Vec<Op> {
        [
            (libc::FAN_DELETE, Op::Delete),
            (libc::FAN_CREATE, Op::Create),
            (libc::FAN_MOVED_FROM, Op::MoveFrom),
            (libc::FAN_MOVED_TO, Op::MoveTo),
            (libc::FAN_MODIFY, Op::Modify),
            (libc::FAN_ATTRIB, Op::Attrib),
        ]
        .into_iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, op)| op)
        .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub pid: i32,
    pub snapshot_id: u64,
    pub op: Op,
}

/// One reported change: what, where, who, how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    pub key: Key,
    pub process: ProcessInfo,
    /// The first path; `samples` holds it and the next few.
    pub path: String,
    pub samples: Vec<String>,
    pub count: u64,
    pub first: Instant,
    pub last: Instant,
    pub first_wall: k8s_openapi::jiff::Timestamp,
    pub last_wall: k8s_openapi::jiff::Timestamp,
}

#[derive(Default)]
pub struct Aggregator {
    open: HashMap<Key, Aggregate>,
}

impl Aggregator {
    /// Counts one more change for an open aggregate; false when `key` is not open.
    pub fn repeat(
        &mut self,
        key: &Key,
        path: &str,
        now: Instant,
        wall: k8s_openapi::jiff::Timestamp,
    ) -> bool {
        let Some(a) = self.open.get_mut(key) else {
            return false;
        };
        a.count += 1;
        a.last = now;
        a.last_wall = wall;
        if a.samples.len() < SAMPLE_PATHS && !a.samples.iter().any(|p| p == path) {
            a.samples.push(path.to_string());
        }
        true
    }

    /// Opens an aggregate; returns one reported early when the bound was reached.
    pub fn open(
        &mut self,
        key: Key,
        process: ProcessInfo,
        path: &str,
        now: Instant,
        wall: k8s_openapi::jiff::Timestamp,
    ) -> Option<Aggregate> {
        let evicted = if self.open.len() >= MAX_OPEN {
            let oldest = self.open.values().min_by_key(|a| a.first).map(|a| a.key);
            oldest.and_then(|k| self.open.remove(&k))
        } else {
            None
        };
        self.open.insert(
            key,
            Aggregate {
                key,
                process,
                path: path.to_string(),
                samples: vec![path.to_string()],
                count: 1,
                first: now,
                last: now,
                first_wall: wall,
                last_wall: wall,
            },
        );
        evicted
    }

    /// Aggregates due at `now` (quiet or old), oldest first; all of them when `all`.
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<Aggregate> {
        let keys: Vec<Key> = self
            .open
            .values()
            .filter(|a| {
                all || now.saturating_duration_since(a.last) >= QUIET
                    || now.saturating_duration_since(a.first) >= MAX_AGE
            })
            .map(|a| a.key)
            .collect();
        let mut due: Vec<Aggregate> = keys.iter().filter_map(|k| self.open.remove(k)).collect();
        due.sort_by_key(|a| a.first);
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn key(pid: i32, op: Op) -> Key {
        Key {
            pid,
            snapshot_id: 3,
            op,
        }
    }

    #[test]
    fn repeats_are_counted_with_bounded_samples() {
        let t0 = Instant::now();
        let w = Timestamp::UNIX_EPOCH;
        let mut agg = Aggregator::default();
        let k = key(1, Op::Delete);
        assert!(!agg.repeat(&k, "/a", t0, w));
        assert!(agg.open(k, ProcessInfo::default(), "/a", t0, w).is_none());
        for i in 0..100 {
            assert!(agg.repeat(&k, &format!("/f{i}"), t0 + Duration::from_millis(i), w));
        }
        assert!(agg.due(t0 + Duration::from_millis(100), false).is_empty());
        let done = agg.due(t0 + Duration::from_millis(99) + QUIET, false);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].count, 101);
        assert_eq!(done[0].path, "/a");
        assert_eq!(done[0].samples.len(), SAMPLE_PATHS);
        assert!(!agg.repeat(&k, "/a", t0, w));
    }

    #[test]
    fn ops_and_pids_are_separate_and_old_bursts_are_reported_while_they_run() {
        let t0 = Instant::now();
        let w = Timestamp::UNIX_EPOCH;
        let mut agg = Aggregator::default();
        agg.open(key(1, Op::Delete), ProcessInfo::default(), "/a", t0, w);
        agg.open(key(1, Op::Attrib), ProcessInfo::default(), "/a", t0, w);
        agg.open(key(2, Op::Delete), ProcessInfo::default(), "/a", t0, w);
        let mut now = t0;
        while now < t0 + MAX_AGE {
            now += Duration::from_millis(100);
            agg.repeat(&key(1, Op::Delete), "/b", now, w);
        }
        let due = agg.due(now, false);
        assert_eq!(due.len(), 3, "quiet ones and the old busy one");
        assert!(agg.due(now, true).is_empty());
    }

    #[test]
    fn the_bound_reports_the_oldest_early() {
        let t0 = Instant::now();
        let w = Timestamp::UNIX_EPOCH;
        let mut agg = Aggregator::default();
        for pid in 0..MAX_OPEN as i32 {
            let at = t0 + Duration::from_micros(pid as u64);
            assert!(
                agg.open(key(pid, Op::Modify), ProcessInfo::default(), "/x", at, w)
                    .is_none()
            );
        }
        let evicted = agg.open(
            key(-1, Op::Modify),
            ProcessInfo::default(),
            "/x",
            t0 + Duration::from_secs(1),
            w,
        );
        assert_eq!(evicted.unwrap().key.pid, 0);
        assert_eq!(agg.due(t0, true).len(), MAX_OPEN);
    }

    #[test]
    fn masks_to_ops() {
        assert_eq!(
            Op::of_mask(libc::FAN_DELETE | libc::FAN_ONDIR),
            vec![Op::Delete]
        );
        assert_eq!(
            Op::of_mask(libc::FAN_MODIFY | libc::FAN_ATTRIB),
            vec![Op::Modify, Op::Attrib]
        );
        assert!(Op::of_mask(libc::FAN_Q_OVERFLOW).is_empty());
    }
}
