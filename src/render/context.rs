//! The data a template sees for one message.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::{json, Map, Value};

use crate::config::RouteConfig;
use crate::ingest::payload::{Alert, AlertStatus, LabelSet, WebhookPayload};

/// Built once per notification; `with_range` gives the view of some of its alerts (firing
/// first) for fitting and for a series of messages.
pub struct MessageContext<'a> {
    base: Map<String, Value>,
    /// Firing alerts first, then resolved; made template data only when shown.
    alerts: Vec<&'a Alert>,
}

impl<'a> MessageContext<'a> {
    pub fn new(
        route: &RouteConfig,
        payload: &WebhookPayload,
        alerts: &[&'a Alert],
        mentions: &[String],
    ) -> Self {
        let firing = alerts.iter().filter(|a| a.status == AlertStatus::Firing).count();
        let resolved = alerts.len() - firing;
        let mut base = Map::new();
        base.insert("route".into(), json!(route.name));
        base.insert("mentions".into(), json!(mentions));
        base.insert("receiver".into(), json!(payload.receiver));
        base.insert(
            "status".into(),
            json!(if firing > 0 { "firing" } else { "resolved" }),
        );
        base.insert("firingCount".into(), json!(firing));
        base.insert("resolvedCount".into(), json!(resolved));
        base.insert("groupLabels".into(), json!(payload.group_labels));
        base.insert(
            "commonLabels".into(),
            json!(common(alerts.iter().map(|a| &a.labels))),
        );
        base.insert(
            "commonAnnotations".into(),
            json!(common(alerts.iter().map(|a| &a.annotations))),
        );
        base.insert("externalURL".into(), json!(payload.external_url));
        base.insert("truncatedAlerts".into(), json!(payload.truncated_alerts));

        let mut ordered: Vec<&Alert> = alerts.to_vec();
        ordered.sort_by_key(|a| a.status == AlertStatus::Resolved); // stable: firing first
        MessageContext {
            base,
            alerts: ordered,
        }
    }

    /// The context showing the alerts in `range` (of the firing-first order).
    pub fn with_range(&self, range: Range<usize>) -> Value {
        let end = range.end.min(self.alerts.len());
        let shown: Vec<(AlertStatus, Value)> = self.alerts[range.start.min(end)..end]
            .iter()
            .map(|a| (a.status, alert_data(a)))
            .collect();
        let pick = |status: Option<AlertStatus>| -> Value {
            Value::Array(
                shown
                    .iter()
                    .filter(|(s, _)| status.is_none_or(|wanted| *s == wanted))
                    .map(|(_, data)| data.clone())
                    .collect(),
            )
        };
        let mut data = self.base.clone();
        data.insert("alerts".into(), pick(None));
        data.insert("firing".into(), pick(Some(AlertStatus::Firing)));
        data.insert("resolved".into(), pick(Some(AlertStatus::Resolved)));
        data.insert("omittedAlerts".into(), json!(self.alerts.len() - end));
        Value::Object(data)
    }
}

fn alert_data(alert: &Alert) -> Value {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    json!({
        "status": alert.status.as_str(),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": time(alert.starts_at),
        "endsAt": time(alert.ends_at),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    })
}

/// The pairs every set has in common.
fn common<'a>(mut sets: impl Iterator<Item = &'a LabelSet>) -> LabelSet {
    let Some(first) = sets.next() else {
        return BTreeMap::new();
    };
    let mut common = first.clone();
    for set in sets {
        common.retain(|key, value| set.get(key) == Some(value));
    }
    common
}
