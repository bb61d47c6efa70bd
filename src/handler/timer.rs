//! `RotateTimer`'s input: the timer trigger's `TimerInfo`
//! (`{"Schedule":{"AdjustForDST":…},"ScheduleStatus":{Last,Next,LastUpdated}|null,"IsPastDue":…}`).
//!
//! `ScheduleStatus` is null when schedule monitoring is off; before the first recorded run `Last` and
//! `LastUpdated` are .NET's `default(DateTime)` (year 0001), which this reads as "never ran".

use super::lenient::{self, PayloadError};
use super::payload::Request;
use serde::Serialize;
use time::OffsetDateTime;

/// The binding name in `RotateTimer/function.json`.
pub const BINDING: &str = "myTimer";

/// One timer firing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimerRun {
    /// The host started late (it was down or restarting when the schedule fired); treat as a normal run.
    pub is_past_due: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjust_for_dst: Option<bool>,
    /// `None` when schedule monitoring is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_status: Option<ScheduleStatus>,
}

/// What the host's schedule monitor recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The previous run; `None` = never ran.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_updated: Option<OffsetDateTime>,
}

impl TimerRun {
    pub fn from_request(req: &Request) -> Result<Self, PayloadError> {
        let (path, timer) = req.binding_object(BINDING)?;
        let is_past_due = match lenient::get(&timer, "IsPastDue") {
            None => false,
            Some(v) => lenient::flag(v, &format!("{path}.IsPastDue"))?,
        };
        let adjust_for_dst = match lenient::get(&timer, "Schedule") {
            None => None,
            Some(v) => {
                let p = format!("{path}.Schedule");
                let schedule = lenient::object(v, &p)?;
                lenient::get(&schedule, "AdjustForDST")
                    .map(|v| lenient::flag(v, &format!("{p}.AdjustForDST")))
                    .transpose()?
            }
        };
        let schedule_status = match lenient::get(&timer, "ScheduleStatus") {
            None => None,
            Some(v) => {
                let p = format!("{path}.ScheduleStatus");
                let st = lenient::object(v, &p)?;
                let field = |k: &str| lenient::opt_timestamp(lenient::get(&st, k), &format!("{p}.{k}"));
                Some(ScheduleStatus { last: field("Last")?, next: field("Next")?, last_updated: field("LastUpdated")? })
            }
        };
        Ok(Self { is_past_due, adjust_for_dst, schedule_status })
    }

    /// The previous run, if the host recorded one.
    pub fn last_run(&self) -> Option<OffsetDateTime> {
        self.schedule_status.as_ref().and_then(|s| s.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn parse(body: &str) -> Result<TimerRun, PayloadError> {
        TimerRun::from_request(&Request::parse(body.as_bytes()).unwrap())
    }

    #[test]
    fn schedule_status_null() {
        let t = parse(r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{}}"#).unwrap();
        assert_eq!(t, TimerRun { is_past_due: false, adjust_for_dst: Some(true), schedule_status: None });
        assert_eq!(t.last_run(), None);
    }

    #[test]
    fn monitored_with_mixed_offsets_and_precision() {
        let t = parse(
            r#"{"Data":{"myTimer":{"Schedule":{"AdjustForDST":true},"IsPastDue":true,
            "ScheduleStatus":{"Last":"2026-10-01T03:00:00.0123456+00:00","Next":"2026-10-02T03:00:00Z","LastUpdated":"2026-10-01T03:00:00.01"}}}}"#,
        )
        .unwrap();
        assert!(t.is_past_due);
        let st = t.schedule_status.unwrap();
        assert_eq!(st.last, Some(datetime!(2026-10-01 03:00:00.0123456 UTC)));
        assert_eq!(st.next, Some(datetime!(2026-10-02 03:00 UTC)));
        assert_eq!(st.last_updated, Some(datetime!(2026-10-01 03:00:00.01 UTC)));
    }

    #[test]
    fn year_one_means_never_ran() {
        let t = parse(
            r#"{"Data":{"myTimer":{"IsPastDue":false,"ScheduleStatus":{"Last":"0001-01-01T00:00:00","Next":"2026-10-02T03:00:00+00:00","LastUpdated":"0001-01-01T00:00:00+00:00"}}}}"#,
        )
        .unwrap();
        let st = t.schedule_status.as_ref().unwrap();
        assert_eq!((st.last, st.last_updated), (None, None));
        assert!(st.next.is_some());
        assert_eq!(t.last_run(), None);
    }

    #[test]
    fn minimal_and_odd_shapes() {
        let t = parse(r#"{"Data":{"myTimer":{}}}"#).unwrap();
        assert_eq!(t, TimerRun { is_past_due: false, adjust_for_dst: None, schedule_status: None });
        let t = parse(r#"{"Data":{"myTimer":"{\"IsPastDue\":\"True\"}"}}"#).unwrap();
        assert!(t.is_past_due);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(r#"{"Data":{"myTimer":{"IsPastDue":"perhaps"}}}"#).unwrap_err();
        assert_eq!(e.path, "Data.myTimer.IsPastDue");
        let e = parse(r#"{"Data":{"myTimer":{"ScheduleStatus":{"Next":"tomorrow"}}}}"#).unwrap_err();
        assert_eq!(e.path, "Data.myTimer.ScheduleStatus.Next");
        let e = parse(r#"{"Data":{"myTimer":[]}}"#).unwrap_err();
        assert_eq!(e.path, "Data.myTimer");
        let e = parse(r#"{"Data":{"myTimer":null}}"#).unwrap_err();
        assert_eq!(e.path, "Data.myTimer");
    }
}
