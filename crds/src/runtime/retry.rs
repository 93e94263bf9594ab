//! The one retry policy for API calls that must eventually succeed (writing a report, renewing
//! a Lease, relisting a watch): exponential backoff with jitter from backon, the crate
//! kube-runtime itself uses for its watchers. Jitter matters at scale: after an API server
//! outage, thousands of agents must not retry in lockstep.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Doubling delays from `first`, never above `max`, with up to 100 % jitter below the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub const fn new(first: Duration, max: Duration) -> Self {
        RetryPolicy { first, max }
    }

    /// The delays of one run of failures; `reset` after a success.
    pub fn delays(&self) -> Delays {
        Delays {
            policy: *self,
            inner: self.builder().build(),
        }
    }

    fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }
}

/// An endless series of retry delays.
pub struct Delays {
    policy: RetryPolicy,
    inner: ExponentialBackoff,
}

impl Delays {
    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // Jitter may add up to the delay again; the cap stays a cap.
        self.inner
            .next()
            .unwrap_or(self.policy.max)
            .min(self.policy.max)
    }

    /// Starts over from `first` (after a success).
    pub fn reset(&mut self) {
        self.inner = self.policy.builder().build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy =
        RetryPolicy::new(Duration::from_millis(100), Duration::from_millis(1000));

    #[test]
    fn delays_grow_within_jitter_and_stop_at_the_cap() {
        let mut delays = POLICY.delays();
        let mut nominal = POLICY.first;
        for _ in 0..12 {
            let d = delays.next_delay();
            assert!(d >= nominal.min(POLICY.max), "{d:?} below {nominal:?}");
            assert!(
                d <= (nominal * 2).min(POLICY.max),
                "{d:?} above twice {nominal:?}"
            );
            nominal = (nominal * 2).min(POLICY.max);
        }
        assert!(delays.next_delay() <= POLICY.max);
    }

    #[test]
    fn reset_starts_over() {
        let mut delays = POLICY.delays();
        for _ in 0..8 {
            delays.next_delay();
        }
        delays.reset();
        assert!(delays.next_delay() <= POLICY.first * 2);
    }

    #[test]
    fn jitter_spreads_retries() {
        let firsts: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| POLICY.delays().next_delay()).collect();
        assert!(
            firsts.len() > 1,
            "20 clients would retry in lockstep: {firsts:?}"
        );
    }
}
