//! The one way the node helper runs work on scoped threads, with one panic policy: a
//! worker's panic is re-raised in the caller once every worker has stopped, never swallowed
//! (a lost walker must not look like an empty directory). The job turns it into an `Error`
//! report (`job::timed`), and repairs are crash-safe at any instant.

use std::panic::resume_unwind;

/// Threads for parallel filesystem work: one per CPU, at least 2 (their I/O waits overlap),
/// at most 4.
pub(crate) fn io_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4)
}

/// Workers for `items` jobs: `io_threads`, but none with fewer than `per_worker` items.
pub(crate) fn workers_for(items: usize, per_worker: usize) -> usize {
    io_threads().min(items.div_ceil(per_worker).max(1))
}

/// Runs `threads` copies of `work` (each given its index) and returns their results in index
/// order. Each worker's stage times go to the stage profile before it is joined.
pub(crate) fn run_workers<R: Send>(threads: usize, work: impl Fn(usize) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = (0..threads.max(1))
            .map(|i| {
                s.spawn(move || {
                    let _profiled = crate::stage_profile::ThreadGuard::new();
                    work(i)
                })
            })
            .collect();
        let mut results = Vec::with_capacity(handles.len());
        let mut panicked = None;
        for h in handles {
            match h.join() {
                Ok(r) => results.push(r),
                Err(p) => {
                    panicked.get_or_insert(p);
                }
            }
        }
        if let Some(p) = panicked {
            resume_unwind(p);
        }
        results
    })
}

/// Splits `items` into at most `workers` contiguous runs (neighbours stay together) and
/// returns `work` of each run, in order.
pub(crate) fn map_chunks<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    let chunk = items.len().div_ceil(workers.max(1)).max(1);
    let runs: Vec<&[T]> = items.chunks(chunk).collect();
    if runs.is_empty() {
        return Vec::new();
    }
    run_workers(runs.len(), |i| work(runs[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order() {
        let items: Vec<u32> = (0..1000).collect();
        let sums = map_chunks(&items, 3, |run| run.iter().sum::<u32>());
        assert_eq!(sums.len(), 3);
        assert_eq!(sums.iter().sum::<u32>(), 999 * 500);
        assert_eq!(run_workers(4, |i| i * 10), vec![0, 10, 20, 30]);
        assert!(map_chunks(&[] as &[u8], 4, |r| r.len()).is_empty());
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_after_the_others_finish() {
        let finished = std::sync::atomic::AtomicUsize::new(0);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_workers(3, |i| {
                if i == 1 {
                    panic!("worker 1 failed");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        }));
        let panic = caught.unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"worker 1 failed"));
        assert_eq!(finished.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn worker_counts_are_bounded() {
        assert_eq!(workers_for(0, 64), 1);
        assert_eq!(workers_for(10, 64), 1);
        assert!(workers_for(10_000, 64) >= 2 && workers_for(10_000, 64) <= 4);
    }
}
