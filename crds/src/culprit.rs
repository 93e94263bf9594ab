//! The culprit guard's attribution as it appears in a Report's layer (`culprit`) and in
//! `status.culprit` of a SnapshotRepair: the last change the guard attributed to a process
//! on that layer's snapshot before the damage was found.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest path-like text kept (`path`, `exe`, `cgroup`, `cmdline`), in characters.
pub const TEXT_MAX: usize = 4096;
/// Longest short text kept (`podUid`, `containerId`, `systemdUnit`), in characters.
pub const NAME_MAX: usize = 256;
/// Longest `time`, `op` and `snapshotId`, in characters.
pub const SHORT_MAX: usize = 64;

/// What /proc said about a writer when the guard first saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CulpritProcess {
    pub pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub exe: Option<String>,
    /// Arguments joined by spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The process's cgroup path (the unified one on cgroup v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub cgroup: Option<String>,
    /// From a kubepods cgroup: the Pod's UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub pod_uid: Option<String>,
    /// From a kubepods cgroup: the container's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub container_id: Option<String>,
    /// From a system.slice cgroup: the systemd unit, e.g. `cron.service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub systemd_unit: Option<String>,
    /// The process had exited before /proc could be read: only the event's pid is known.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exited: bool,
}

impl CulpritProcess {
    /// One line for people: `pid 4711 `/bin/sh /etc/cron.daily/cleanup` (systemd unit cron.service)`.
    pub fn describe(&self) -> String {
        let mut s = format!("pid {}", self.pid);
        if self.exited {
            s.push_str(" (exited before it could be identified)");
            return s;
        }
        if let Some(cmd) = self.cmdline.as_deref().filter(|c| !c.is_empty()) {
            s.push_str(&format!(" `{cmd}`"));
        } else if let Some(exe) = &self.exe {
            s.push_str(&format!(" `{exe}`"));
        }
        if let (Some(pod), container) = (&self.pod_uid, &self.container_id) {
            s.push_str(&format!(" (pod {pod}"));
            if let Some(c) = container {
                s.push_str(&format!(", container {}", prefix(c, 12)));
            }
            s.push(')');
        } else if let Some(unit) = &self.systemd_unit {
            s.push_str(&format!(" (systemd unit {unit})"));
        } else if let Some(cg) = &self.cgroup {
            s.push_str(&format!(" (cgroup {cg})"));
        }
        if let Some(uid) = self.uid {
            s.push_str(&format!(" uid {uid}"));
        }
        s
    }

    /// Every text within the schema's limits (cut on character boundaries).
    pub fn bounded(mut self) -> CulpritProcess {
        for (field, max) in [
            (&mut self.exe, TEXT_MAX),
            (&mut self.cmdline, TEXT_MAX),
            (&mut self.cgroup, TEXT_MAX),
            (&mut self.pod_uid, NAME_MAX),
            (&mut self.container_id, NAME_MAX),
            (&mut self.systemd_unit, NAME_MAX),
        ] {
            if let Some(text) = field.as_mut() {
                cut(text, max);
            }
        }
        self
    }
}

/// The last change the guard attributed to a process on one snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Culprit {
    /// When the change (the last of `count` aggregated ones) happened, RFC 3339.
    #[schemars(length(max = 64))]
    pub time: String,
    /// The first path changed, inside the layer, as in findings.
    #[schemars(length(max = 4096))]
    pub path: String,
    /// `delete`, `create`, `moveFrom`, `moveTo`, `modify` or `attrib`.
    #[schemars(length(max = 64))]
    pub op: String,
    /// How many changes of this kind the process made to the snapshot (aggregated).
    pub count: u64,
    pub process: CulpritProcess,
}

impl Culprit {
    /// One line for people:
    /// ``damaged by pid 4711 `/bin/sh /etc/cron.daily/cleanup` (systemd unit cron.service) at 03:12:09``
    /// followed by what it did, e.g. `(delete /pause)`.
    pub fn summary(&self) -> String {
        let times = if self.count > 1 {
            format!(", {} changes", self.count)
        } else {
            String::new()
        };
        format!(
            "damaged by {} at {} ({} {}{times})",
            self.process.describe(),
            whole_seconds(&self.time),
            self.op,
            self.path
        )
    }

    /// Every text within the schema's limits (cut on character boundaries).
    pub fn bounded(mut self) -> Culprit {
        cut(&mut self.time, SHORT_MAX);
        cut(&mut self.path, TEXT_MAX);
        cut(&mut self.op, SHORT_MAX);
        self.process = self.process.bounded();
        self
    }
}

/// `status.culprit`: which layer's snapshot the culprit damaged, a line for people, and the
/// attribution itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepairCulprit {
    /// e.g. ``damaged by pid 4711 `/bin/sh /etc/cron.daily/cleanup` (systemd unit cron.service) at 2026-12-07T03:12:09Z (delete /pause)``.
    #[schemars(length(max = 10240))]
    pub summary: String,
    /// The layer (its index in the Report) whose snapshot was changed.
    pub layer: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub snapshot_id: Option<String>,
    #[serde(flatten)]
    pub change: Culprit,
}

/// An RFC 3339 time without its fraction of a second (`…T03:12:09.123Z` → `…T03:12:09Z`).
fn whole_seconds(time: &str) -> String {
    match (time.find('.'), time.rfind(['Z', '+', '-'])) {
        (Some(dot), Some(zone)) if zone > dot => format!("{}{}", &time[..dot], &time[zone..]),
        (Some(dot), _) if time[dot + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            time[..dot].to_string()
        }
        _ => time.to_string(),
    }
}

/// The first `max` characters of `text`.
fn prefix(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Cuts `text` to at most `max` characters.
fn cut(text: &mut String, max: usize) {
    let keep = prefix(text, max).len();
    text.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron() -> Culprit {
        Culprit {
            time: "2026-12-07T03:12:09.481516Z".into(),
            path: "/pause".into(),
            op: "delete".into(),
            count: 1,
            process: CulpritProcess {
                pid: 4711,
                cmdline: Some("/bin/sh /etc/cron.daily/cleanup".into()),
                systemd_unit: Some("cron.service".into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn summary_reads_like_the_issue() {
        assert_eq!(
            cron().summary(),
            "damaged by pid 4711 `/bin/sh /etc/cron.daily/cleanup` (systemd unit cron.service) at 2026-12-07T03:12:09Z (delete /pause)"
        );
        let mut many = cron();
        many.count = 7;
        assert!(many.summary().ends_with("(delete /pause, 7 changes)"));
    }

    #[test]
    fn process_described_by_pod_unit_or_cgroup() {
        let mut p = cron().process;
        p.uid = Some(0);
        assert_eq!(
            p.describe(),
            "pid 4711 `/bin/sh /etc/cron.daily/cleanup` (systemd unit cron.service) uid 0"
        );
        p.pod_uid = Some("5f0c".into());
        p.container_id = Some("0123456789abcdef0123".into());
        assert_eq!(
            p.describe(),
            "pid 4711 `/bin/sh /etc/cron.daily/cleanup` (pod 5f0c, container 0123456789ab) uid 0"
        );
        let bare = CulpritProcess {
            pid: 9,
            exe: Some("/usr/bin/rm".into()),
            cgroup: Some("/user.slice/x".into()),
            ..Default::default()
        };
        assert_eq!(
            bare.describe(),
            "pid 9 `/usr/bin/rm` (cgroup /user.slice/x)"
        );
        let gone = CulpritProcess {
            pid: 3,
            exited: true,
            cmdline: Some("ignored".into()),
            ..Default::default()
        };
        assert_eq!(
            gone.describe(),
            "pid 3 (exited before it could be identified)"
        );
    }

    #[test]
    fn times_lose_only_their_fraction() {
        assert_eq!(
            whole_seconds("2026-12-07T03:12:09.5Z"),
            "2026-12-07T03:12:09Z"
        );
        assert_eq!(
            whole_seconds("2026-12-07T03:12:09.5+01:00"),
            "2026-12-07T03:12:09+01:00"
        );
        assert_eq!(
            whole_seconds("2026-12-07T03:12:09Z"),
            "2026-12-07T03:12:09Z"
        );
        assert_eq!(whole_seconds("03:12:09.25"), "03:12:09");
        assert_eq!(whole_seconds("garbage"), "garbage");
    }

    #[test]
    fn bounded_cuts_every_text_to_the_schema_on_char_boundaries() {
        let mut c = cron();
        c.path = "é".repeat(TEXT_MAX + 10);
        c.op = "x".repeat(100);
        c.process.cmdline = Some("ü".repeat(TEXT_MAX * 2));
        c.process.systemd_unit = Some("u".repeat(NAME_MAX + 1));
        let b = c.bounded();
        assert_eq!(b.path.chars().count(), TEXT_MAX);
        assert_eq!(b.op.len(), SHORT_MAX);
        assert_eq!(
            b.process.cmdline.as_deref().map(|s| s.chars().count()),
            Some(TEXT_MAX)
        );
        assert_eq!(
            b.process.systemd_unit.as_deref().map(str::len),
            Some(NAME_MAX)
        );
        assert_eq!(cron().bounded(), cron(), "short texts are kept whole");
    }

    #[test]
    fn json_is_camel_case_and_status_culprit_is_flat() {
        let rc = RepairCulprit {
            summary: cron().summary(),
            layer: 0,
            snapshot_id: Some("1".into()),
            change: cron(),
        };
        let v = serde_json::to_value(&rc).expect("serialize");
        assert_eq!(v["snapshotId"], "1");
        assert_eq!(v["op"], "delete");
        assert_eq!(v["process"]["pid"], 4711);
        assert_eq!(v["process"]["systemdUnit"], "cron.service");
        assert!(v["process"].get("exited").is_none());
        let back: RepairCulprit = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, rc);
    }
}
