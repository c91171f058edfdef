//! The data a template sees for one message.

use std::ops::Range;

use serde_json::{json, Map, Value};

use crate::config::{RouteConfig, Target};
use crate::model::{Alert, AlertStatus, LabelSet, WebhookPayload};

/// Built once per notification; [`MessageContext::render`] shows some of its alerts
/// (firing first) for fitting and for a series of messages.
pub struct MessageContext<'a> {
    /// The template data: the notification's fields, plus the shown alerts while rendering.
    context: handlebars::Context,
    /// Firing alerts first, then resolved.
    alerts: Vec<&'a Alert>,
    /// Each alert's template data, built the first time the alert is shown and reused by
    /// the next renders (fitting renders the first alerts several times).
    data: Vec<Option<Value>>,
    /// Robot routes' userids to @-mention: only the first message of a series shows them,
    /// so a long series pings once (the first part holds the firing alerts and arrives first).
    mentions: Value,
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
        // Group robots show `<a href>` in text as written: the built-in text gives them
        // bare URLs.
        base.insert(
            "robot".into(),
            json!(matches!(route.target, Target::Robot { .. })),
        );
        base.insert("compact".into(), json!(false));
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
            context: handlebars::Context::from(Value::Object(base)),
            data: vec![None; ordered.len()],
            alerts: ordered,
            mentions: json!(mentions),
        }
    }

    /// `compact`: the built-in templates list one line per alert under a header with the
    /// counts and the group's links; set when the full form does not fit one message.
    pub fn set_compact(&mut self, compact: bool) {
        self.fields().insert("compact".into(), json!(compact));
    }

    /// Calls `render` with the context showing the alerts in `range` (of the firing-first
    /// order) as `alerts`, `firing` and `resolved`.
    pub fn render<T>(&mut self, range: Range<usize>, render: impl FnOnce(&handlebars::Context) -> T) -> T {
        let end = range.end.min(self.alerts.len());
        let start = range.start.min(end);
        let mut shown = Vec::with_capacity(end - start);
        let (mut firing, mut resolved) = (Vec::new(), Vec::new());
        for (alert, data) in self.alerts[start..end].iter().zip(&mut self.data[start..end]) {
            // Moved into the context for this render and back afterwards: no copy.
            let data = data.take().unwrap_or_else(|| alert_data(alert));
            match alert.status {
                AlertStatus::Firing => firing.push(data.clone()),
                AlertStatus::Resolved => resolved.push(data.clone()),
            }
            shown.push(data);
        }
        let omitted = self.alerts.len() - end;
        let fields = self.fields();
        fields.insert("alerts".into(), Value::Array(shown));
        fields.insert("firing".into(), Value::Array(firing));
        fields.insert("resolved".into(), Value::Array(resolved));
        fields.insert("omittedAlerts".into(), json!(omitted));
        let mentions = if start == 0 {
            self.mentions.clone()
        } else {
            json!([])
        };
        self.fields().insert("mentions".into(), mentions);

        let output = render(&self.context);

        if let Some(Value::Array(shown)) = self.fields().remove("alerts") {
            for (slot, data) in self.data[start..end].iter_mut().zip(shown) {
                *slot = Some(data);
            }
        }
        output
    }

    fn fields(&mut self) -> &mut Map<String, Value> {
        self.context
            .data_mut()
            .as_object_mut()
            .expect("the context is built as an object")
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
        return LabelSet::new();
    };
    let mut common = first.clone();
    for set in sets {
        common.retain(|key, value| set.get(key) == Some(value));
    }
    common
}
