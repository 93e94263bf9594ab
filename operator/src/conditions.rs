//! Standard metav1.Conditions on a SnapshotRepair: Verified, Cordoned, Repaired, Ready.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub const VERIFIED: &str = "Verified";
pub const CORDONED: &str = "Cordoned";
pub const REPAIRED: &str = "Repaired";
pub const READY: &str = "Ready";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// Sets condition `type_`, keeping `lastTransitionTime` unless the status value changes.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = status.as_str();
    let transition = match conditions.iter().find(|c| c.type_ == type_) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => Time(now),
    };
    let new = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(slot) => *slot = new,
        None => conditions.push(new),
    }
}

pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition exists and is `Unknown`, i.e. that step is still in progress.
pub fn is_in_progress(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn adds_a_new_condition_with_now_as_transition_time() {
        let mut c = Vec::new();
        set(
            &mut c,
            READY,
            Status::False,
            "Verifying",
            "m",
            Some(1),
            t(100),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, "False");
        assert_eq!(c[0].last_transition_time, Time(t(100)));
        assert_eq!(c[0].observed_generation, Some(1));
    }

    #[test]
    fn same_status_keeps_the_transition_time_but_updates_reason() {
        let mut c = Vec::new();
        set(&mut c, READY, Status::False, "Verifying", "a", None, t(100));
        set(&mut c, READY, Status::False, "Repairing", "b", None, t(200));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason, "Repairing");
        assert_eq!(c[0].message, "b");
        assert_eq!(c[0].last_transition_time, Time(t(100)));
    }

    #[test]
    fn a_status_change_moves_the_transition_time() {
        let mut c = Vec::new();
        set(
            &mut c,
            VERIFIED,
            Status::Unknown,
            "Verifying",
            "",
            None,
            t(100),
        );
        assert!(is_in_progress(&c, VERIFIED));
        set(&mut c, VERIFIED, Status::True, "Healthy", "", None, t(200));
        assert_eq!(
            get(&c, VERIFIED).unwrap().last_transition_time,
            Time(t(200))
        );
        assert!(!is_in_progress(&c, VERIFIED));
        assert!(!is_in_progress(&c, REPAIRED));
    }
}
