//! What a webhook would look like on the wire, without sending anything: for the `render`
//! command and `POST /-/render`. Routes and renders exactly as a delivery does.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::Service;
use crate::model::WebhookPayload;
use crate::render::RenderedMessage;

/// One message of a route's notification.
#[derive(Debug, Serialize)]
pub struct Preview {
    pub route: String,
    pub target: String,
    pub msgtype: &'static str,
    /// 1-based position in a series, and the series' length.
    pub part: usize,
    pub parts: usize,
    pub shown_alerts: usize,
    pub total_alerts: usize,
    /// Whether fitting left anything out or cut any text.
    pub cut: bool,
    /// UTF-8 bytes of each field WeCom limits.
    pub sizes: BTreeMap<&'static str, usize>,
    /// The exact WeCom request bodies (one per recipient batch).
    pub requests: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Service {
    /// Routes and renders `payload` exactly as a delivery would; `route` limits the output
    /// to one route. Counts nothing in the metrics.
    pub fn preview(&self, payload: &WebhookPayload, route: Option<&str>) -> Vec<Preview> {
        let plan = self.router.plan(&payload.alerts);
        let mut previews = Vec::new();
        for notification in plan
            .notifications
            .iter()
            .filter(|n| route.is_none_or(|r| n.route.name == r))
        {
            let config = notification.route;
            let preview = |part: usize, parts: usize| Preview {
                route: config.name.clone(),
                target: config.target_name().to_string(),
                msgtype: config.msgtype.as_str(),
                part,
                parts,
                shown_alerts: 0,
                total_alerts: notification.alerts.len(),
                cut: false,
                sizes: BTreeMap::new(),
                requests: Vec::new(),
                error: None,
            };
            let message = match self.render(payload, notification) {
                Ok(message) => message,
                Err(error) => {
                    previews.push(Preview {
                        error: Some(error.to_string()),
                        ..preview(1, 1)
                    });
                    continue;
                }
            };
            let parts = message.parts.len();
            for (index, part) in message.parts.iter().enumerate() {
                let single = RenderedMessage {
                    parts: vec![part.clone()],
                    ..message.clone()
                };
                let requests =
                    self.notifier
                        .requests(config, &notification.recipients, &notification.mentions, &single);
                previews.push(Preview {
                    shown_alerts: message.shown_alerts,
                    cut: message.cut,
                    sizes: part.sizes().into_iter().collect(),
                    requests: requests.into_iter().map(|r| r.body).collect(),
                    ..preview(index + 1, parts)
                });
            }
        }
        previews
    }
}
