//! Helper presence: an agent is present while its Lease was renewed within the last 40 s.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;

use crate::phases::HelperPresence;

/// The contract's presence window (agents renew every 10 s).
pub const PRESENCE_WINDOW: Duration = Duration::from_secs(40);

/// Judges presence from the Lease `snapmend-node-helper.<node>` (or its absence) at `now`.
pub fn helper_presence(lease: Option<&Lease>, now: Timestamp) -> HelperPresence {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()));
    let Some(renewed) = renewed else {
        return HelperPresence::NoLease;
    };
    // A renewal in the future (clock skew) counts as fresh.
    let age = Duration::try_from(now.duration_since(renewed.0)).unwrap_or(Duration::ZERO);
    if age <= PRESENCE_WINDOW {
        HelperPresence::Present
    } else {
        HelperPresence::Stale(age)
    }
}

/// How long until a present helper's Lease goes stale, unless it is renewed first (a renewal
/// wakes the repair through the Lease watch; this is the deadline if none comes).
pub fn stale_in(lease: Option<&Lease>, now: Timestamp) -> Option<Duration> {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))?;
    let age = Duration::try_from(now.duration_since(renewed.0)).unwrap_or(Duration::ZERO);
    PRESENCE_WINDOW.checked_sub(age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn lease(renew: Option<i64>, acquire: Option<i64>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                renew_time: renew.map(|s| MicroTime(t(s))),
                acquire_time: acquire.map(|s| MicroTime(t(s))),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn no_lease_or_no_renewal_is_absent() {
        assert_eq!(helper_presence(None, t(0)), HelperPresence::NoLease);
        assert_eq!(
            helper_presence(Some(&Lease::default()), t(0)),
            HelperPresence::NoLease
        );
        assert_eq!(
            helper_presence(Some(&lease(None, None)), t(0)),
            HelperPresence::NoLease
        );
    }

    #[test]
    fn renewed_within_forty_seconds_is_present() {
        assert_eq!(
            helper_presence(Some(&lease(Some(0), None)), t(0)),
            HelperPresence::Present
        );
        assert_eq!(
            helper_presence(Some(&lease(Some(0), None)), t(40)),
            HelperPresence::Present
        );
        assert_eq!(
            helper_presence(Some(&lease(None, Some(10))), t(30)),
            HelperPresence::Present
        );
        assert_eq!(
            helper_presence(Some(&lease(Some(100), None)), t(0)),
            HelperPresence::Present
        );
    }

    #[test]
    fn a_present_lease_goes_stale_forty_seconds_after_its_renewal() {
        assert_eq!(
            stale_in(Some(&lease(Some(0), None)), t(15)),
            Some(Duration::from_secs(25))
        );
        assert_eq!(stale_in(Some(&lease(Some(0), None)), t(41)), None);
        assert_eq!(stale_in(None, t(0)), None);
    }

    #[test]
    fn older_renewal_is_stale_with_its_age() {
        assert_eq!(
            helper_presence(Some(&lease(Some(0), None)), t(41)),
            HelperPresence::Stale(Duration::from_secs(41))
        );
        assert_eq!(
            helper_presence(Some(&lease(Some(0), Some(100))), t(60)),
            HelperPresence::Stale(Duration::from_secs(60)),
            "renewTime wins over acquireTime"
        );
    }
}
