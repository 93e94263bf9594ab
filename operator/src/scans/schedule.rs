//! When a SnapshotScan runs: its cron schedule and the pure decision "start a run now (standing
//! for which time) or wait until T", with CronJob's semantics for missed times.
//!
//! Every time is UTC: a schedule `0 3 * * *` runs at 03:00 UTC. Rules:
//! - Missed times (operator down, or restarted) produce ONE catch-up run for the most recent of
//!   them, never a burst; how many were missed is reported.
//! - `suspend` stops scheduled runs. Times passed while suspended count as missed, so resuming
//!   starts one catch-up run, as a CronJob without `startingDeadlineSeconds` does.
//! - A scheduled time that comes while a run is in progress is not run at all (CronJob's
//!   `Forbid`): it is recorded as missed (`lastScheduleTime` moves on, an event says so), so no
//!   run starts late, back to back with the long one.
//! - A new value of the `snapmend.io/run-now` annotation starts a run at once, also while
//!   suspended (a person asked for it, as `kubectl create job --from=cronjob/...` works on a
//!   suspended CronJob). While a run is in progress it waits for that run to finish. A run-now
//!   that coincides with a due scheduled time is one run, consuming both.

use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

/// Missed times are counted up to this many (a minutely schedule after a week's downtime would
/// otherwise walk 10,000 times); more is reported as "more than".
pub const MISSED_COUNT_CAP: u32 = 1000;

/// A parsed 5-field cron expression.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
}

impl Schedule {
    /// Parses a standard 5-field expression (minute hour day-of-month month day-of-week; names
    /// such as MON and JAN, ranges, steps and lists). Seconds, years and `@daily`-style
    /// nicknames are rejected, so every schedule reads the same way to a person and to cron.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "schedule {expr:?} has {fields} fields; a cron schedule has 5: minute hour day-of-month month day-of-week"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        parser
            .parse(expr)
            .map(|cron| Schedule { cron })
            .map_err(|e| format!("schedule {expr:?} is not a valid cron expression: {e}"))
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&t.to_zoned(TimeZone::UTC), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The scheduled times in `(after, upto]`: the most recent one, and how many there were.
    pub fn missed(&self, after: Timestamp, upto: Timestamp) -> Option<Missed> {
        let latest = self
            .cron
            .find_previous_occurrence(&upto.to_zoned(TimeZone::UTC), true)
            .ok()?
            .timestamp();
        if latest <= after {
            return None;
        }
        let mut count = 0;
        let mut at = after;
        while count < MISSED_COUNT_CAP {
            match self.next_after(at) {
                Some(t) if t <= upto => {
                    count += 1;
                    at = t;
                }
                _ => break,
            }
        }
        Some(Missed {
            latest,
            count,
            capped: count == MISSED_COUNT_CAP && at < latest,
        })
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Schedule::parse(s)
    }
}

/// Scheduled times that came and were not acted on yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missed {
    /// The most recent of them: the one a catch-up run stands for.
    pub latest: Timestamp,
    /// How many (at most `MISSED_COUNT_CAP`).
    pub count: u32,
    /// There were more than `count`.
    pub capped: bool,
}

impl Missed {
    /// "3", or "more than 1000".
    pub fn count_text(&self) -> String {
        if self.capped {
            format!("more than {}", self.count)
        } else {
            self.count.to_string()
        }
    }
}

/// What the scheduler looks at.
#[derive(Clone, Debug)]
pub struct ScheduleState<'a> {
    pub suspend: bool,
    /// `status.lastScheduleTime`.
    pub last_schedule: Option<Timestamp>,
    /// The scan's creation time: counted from when there is no `lastScheduleTime`.
    pub created: Timestamp,
    /// The `snapmend.io/run-now` annotation.
    pub run_now: Option<&'a str>,
    /// `status.runNowHandled`.
    pub run_now_handled: Option<&'a str>,
    pub run_in_progress: bool,
    pub now: Timestamp,
}

/// Why a run starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Its scheduled time came (`missed` > 1: a catch-up for several missed times).
    Schedule,
    /// A new `snapmend.io/run-now` value.
    RunNow(String),
}

/// The scheduler's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a run now, standing for `scheduled` (its id comes from it).
    Start {
        scheduled: Timestamp,
        trigger: Trigger,
        /// The due scheduled times this run covers (recorded as `lastScheduleTime`).
        covers: Option<Missed>,
    },
    /// Scheduled times came while a run is in progress: record them as missed, run nothing.
    Skip {
        missed: Missed,
        next: Option<Timestamp>,
    },
    /// Nothing to start; look again at `next` (None: only when something changes).
    Wait { next: Option<Timestamp> },
}

/// The pure scheduling decision.
pub fn decide(schedule: &Schedule, s: &ScheduleState<'_>) -> Decision {
    let due = if s.suspend {
        None
    } else {
        // As a CronJob: from the last scheduled time acted on, else from creation.
        schedule.missed(s.last_schedule.unwrap_or(s.created), s.now)
    };
    let next = (!s.suspend).then(|| schedule.next_after(s.now)).flatten();
    let run_now = s
        .run_now
        .filter(|v| !v.is_empty() && Some(*v) != s.run_now_handled);
    if s.run_in_progress {
        return match due {
            Some(missed) => Decision::Skip { missed, next },
            None => Decision::Wait { next },
        };
    }
    if let Some(value) = run_now {
        return Decision::Start {
            scheduled: whole_second(s.now),
            trigger: Trigger::RunNow(value.to_string()),
            covers: due,
        };
    }
    match due {
        Some(missed) => Decision::Start {
            scheduled: missed.latest,
            trigger: Trigger::Schedule,
            covers: Some(missed),
        },
        None => Decision::Wait { next },
    }
}

/// Status times keep whole seconds.
pub fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn state(now: &str) -> ScheduleState<'static> {
        ScheduleState {
            suspend: false,
            last_schedule: None,
            created: t("2026-12-01T00:00:30Z"),
            run_now: None,
            run_now_handled: None,
            run_in_progress: false,
            now: t(now),
        }
    }

    fn hourly() -> Schedule {
        Schedule::parse("0 * * * *").expect("valid")
    }

    #[test]
    fn five_field_expressions_parse_and_others_are_refused_with_a_reason() {
        for ok in [
            "* * * * *",
            "*/15 2-4 * * MON-FRI",
            "0 3 1,15 * *",
            "30 4 * JAN sun",
            "  0 0 * * 0  ",
        ] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("0 0 * * * *", "6 fields"),
            ("@daily", "1 fields"),
            ("", "0 fields"),
            ("61 * * * *", "not a valid cron"),
            ("* * 32 * *", "not a valid cron"),
            ("* * * 13 *", "not a valid cron"),
            ("a b c d e", "not a valid cron"),
        ] {
            let err = Schedule::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn times_are_utc_and_next_is_strictly_after() {
        let s = Schedule::parse("0 3 * * *").expect("valid");
        assert_eq!(
            s.next_after(t("2026-12-07T02:59:59Z")),
            Some(t("2026-12-07T03:00:00Z"))
        );
        assert_eq!(
            s.next_after(t("2026-12-07T03:00:00Z")),
            Some(t("2026-12-08T03:00:00Z"))
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_either_match_as_in_cron() {
        // The 13th, or any Friday: 2026-12-04 is a Friday, the 13th a Sunday.
        let s = Schedule::parse("0 0 13 * FRI").expect("valid");
        assert_eq!(
            s.next_after(t("2026-12-01T00:00:00Z")),
            Some(t("2026-12-04T00:00:00Z"))
        );
        assert_eq!(
            s.next_after(t("2026-12-11T00:00:00Z")),
            Some(t("2026-12-13T00:00:00Z"))
        );
    }

    #[test]
    fn nothing_is_due_before_the_first_scheduled_time() {
        let d = decide(&hourly(), &state("2026-12-01T00:59:00Z"));
        assert_eq!(
            d,
            Decision::Wait {
                next: Some(t("2026-12-01T01:00:00Z"))
            }
        );
    }

    #[test]
    fn a_due_time_starts_one_run_standing_for_it() {
        let d = decide(&hourly(), &state("2026-12-01T01:00:02Z"));
        let Decision::Start {
            scheduled,
            trigger,
            covers,
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(scheduled, t("2026-12-01T01:00:00Z"));
        assert_eq!(trigger, Trigger::Schedule);
        assert_eq!(covers.map(|m| m.count), Some(1));
    }

    #[test]
    fn after_a_long_gap_one_catch_up_run_for_the_most_recent_time() {
        let mut s = state("2026-12-03T10:30:00Z");
        s.last_schedule = Some(t("2026-12-01T05:00:00Z"));
        let d = decide(&hourly(), &s);
        let Decision::Start {
            scheduled, covers, ..
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(scheduled, t("2026-12-03T10:00:00Z"), "the most recent");
        let missed = covers.expect("covers");
        // 06:00 on the 1st to 10:00 on the 3rd: 18 + 24 + 11.
        assert_eq!((missed.count, missed.capped), (53, false));
        assert_eq!(missed.count_text(), "53");
        // Once recorded, nothing more is due: no burst.
        s.last_schedule = Some(scheduled);
        assert_eq!(
            decide(&hourly(), &s),
            Decision::Wait {
                next: Some(t("2026-12-03T11:00:00Z"))
            }
        );
    }

    #[test]
    fn a_huge_gap_is_counted_up_to_the_cap() {
        let every_minute = Schedule::parse("* * * * *").expect("valid");
        let mut s = state("2026-12-31T00:00:10Z");
        s.last_schedule = Some(t("2026-12-01T00:00:00Z"));
        let Decision::Start {
            scheduled, covers, ..
        } = decide(&every_minute, &s)
        else {
            panic!("start")
        };
        assert_eq!(scheduled, t("2026-12-31T00:00:00Z"));
        let missed = covers.expect("covers");
        assert!(missed.capped);
        assert_eq!(missed.count_text(), "more than 1000");
    }

    #[test]
    fn a_new_scan_counts_from_its_creation_and_then_from_its_last_scheduled_time() {
        let s = state("2026-12-01T00:59:00Z");
        assert!(matches!(decide(&hourly(), &s), Decision::Wait { .. }));
        // A status carried over (restored from a backup, say) counts from lastScheduleTime.
        let mut restored = state("2026-12-01T00:59:00Z");
        restored.last_schedule = Some(t("2026-11-30T20:00:00Z"));
        let Decision::Start { covers, .. } = decide(&hourly(), &restored) else {
            panic!("start")
        };
        assert_eq!(covers.map(|m| m.count), Some(4));
    }

    #[test]
    fn suspend_stops_scheduled_runs_and_resuming_catches_up_once() {
        let mut s = state("2026-12-01T05:10:00Z");
        s.suspend = true;
        assert_eq!(decide(&hourly(), &s), Decision::Wait { next: None });
        s.suspend = false;
        let Decision::Start {
            scheduled, covers, ..
        } = decide(&hourly(), &s)
        else {
            panic!("start")
        };
        assert_eq!(scheduled, t("2026-12-01T05:00:00Z"));
        assert_eq!(covers.map(|m| m.count), Some(5));
    }

    #[test]
    fn run_now_starts_once_per_value_even_while_suspended() {
        let mut s = state("2026-12-01T00:20:00.700Z");
        s.suspend = true;
        s.run_now = Some("first");
        let d = decide(&hourly(), &s);
        assert_eq!(
            d,
            Decision::Start {
                scheduled: t("2026-12-01T00:20:00Z"),
                trigger: Trigger::RunNow("first".into()),
                covers: None,
            }
        );
        s.run_now_handled = Some("first");
        assert_eq!(decide(&hourly(), &s), Decision::Wait { next: None });
        s.run_now = Some("second");
        assert!(matches!(
            decide(&hourly(), &s),
            Decision::Start {
                trigger: Trigger::RunNow(v),
                ..
            } if v == "second"
        ));
        s.run_now = Some("");
        assert_eq!(
            decide(&hourly(), &s),
            Decision::Wait { next: None },
            "an empty value asks for nothing"
        );
    }

    #[test]
    fn run_now_and_a_due_time_are_one_run() {
        let mut s = state("2026-12-01T01:00:05Z");
        s.run_now = Some("x");
        let Decision::Start {
            scheduled,
            trigger,
            covers,
        } = decide(&hourly(), &s)
        else {
            panic!("start")
        };
        assert_eq!(scheduled, t("2026-12-01T01:00:05Z"));
        assert_eq!(trigger, Trigger::RunNow("x".into()));
        assert_eq!(covers.map(|m| m.latest), Some(t("2026-12-01T01:00:00Z")));
    }

    #[test]
    fn a_time_that_comes_during_a_run_is_skipped_not_queued() {
        let mut s = state("2026-12-01T02:00:01Z");
        s.last_schedule = Some(t("2026-12-01T01:00:00Z"));
        s.run_in_progress = true;
        let d = decide(&hourly(), &s);
        assert_eq!(
            d,
            Decision::Skip {
                missed: Missed {
                    latest: t("2026-12-01T02:00:00Z"),
                    count: 1,
                    capped: false
                },
                next: Some(t("2026-12-01T03:00:00Z")),
            }
        );
        // Recorded: once the run finishes, nothing starts late.
        s.last_schedule = Some(t("2026-12-01T02:00:00Z"));
        s.run_in_progress = false;
        s.now = t("2026-12-01T02:30:00Z");
        assert!(matches!(decide(&hourly(), &s), Decision::Wait { .. }));
    }

    #[test]
    fn run_now_waits_for_the_run_in_progress() {
        let mut s = state("2026-12-01T00:20:00Z");
        s.run_now = Some("x");
        s.run_in_progress = true;
        assert_eq!(
            decide(&hourly(), &s),
            Decision::Wait {
                next: Some(t("2026-12-01T01:00:00Z"))
            }
        );
        s.run_in_progress = false;
        assert!(matches!(decide(&hourly(), &s), Decision::Start { .. }));
    }
}
