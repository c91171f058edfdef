//! What a webhook would look like on the wire, without sending anything: for the `render`
//! command, `POST /-/render` and the playground (which may render an edited template in
//! place of a route's own). Routes and renders exactly as a delivery does.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::Service;
use crate::config::{MsgType, RouteConfig};
use crate::model::WebhookPayload;
use crate::render::samples::{self, Sample};
use crate::render::{RenderedMessage, Renderer};

pub use crate::render::{EDITED_FILE, EDITED_TEMPLATE};

/// A template to render a route's notifications with instead of its own, as the
/// playground's editor holds it.
#[derive(Debug, Clone, Copy)]
pub struct EditedTemplate<'a> {
    pub msgtype: MsgType,
    pub source: &'a str,
}

/// Why a preview with an edited template could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no route named {0:?}")]
    NoRoute(String),
    #[error("an edited template is rendered for one route: name it")]
    RouteNeeded,
    #[error("route {route:?} sends to {kind} {target}, which takes {allowed}, not {msgtype}")]
    MsgType {
        route: String,
        kind: &'static str,
        target: String,
        allowed: String,
        msgtype: &'static str,
    },
    /// The edited template does not compile (located in [`EDITED_FILE`]).
    #[error("{0}")]
    Template(String),
}

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
        self.preview_routed(payload, route, None)
    }

    /// [`Service::preview`], with `edited` rendering the route's notifications in place of
    /// its template (and msgtype): compiled into a one-off renderer with that msgtype's
    /// escaping, helpers and partials, and fitted and addressed as the route's own would be.
    pub fn preview_edited(
        &self,
        payload: &WebhookPayload,
        route: Option<&str>,
        edited: EditedTemplate<'_>,
    ) -> Result<Vec<Preview>, PreviewError> {
        let name = route.ok_or(PreviewError::RouteNeeded)?;
        let original = self
            .route(name)
            .ok_or_else(|| PreviewError::NoRoute(name.to_string()))?;
        let kind = original.target.kind();
        if !kind.msgtypes().contains(&edited.msgtype) {
            return Err(PreviewError::MsgType {
                route: name.to_string(),
                kind: kind.as_str(),
                target: original.target_name().to_string(),
                allowed: kind.msgtype_list(),
                msgtype: edited.msgtype.as_str(),
            });
        }
        let renderer = self
            .renderer
            .with_template(edited.msgtype, EDITED_TEMPLATE, edited.source)
            .map_err(|e| PreviewError::Template(e.to_string()))?;
        let mut config = original.clone();
        config.msgtype = edited.msgtype;
        config.template = EDITED_TEMPLATE.to_string();
        Ok(self.preview_routed(payload, route, Some((&renderer, &config))))
    }

    /// The route named `name` of the configuration.
    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.config.routes.iter().find(|route| route.name == name)
    }

    /// The built-in samples as `route` would get them ([`samples::for_route`]), or as they
    /// are (every alert, no labels added) without a route.
    pub fn samples(&self, route: Option<&RouteConfig>) -> Vec<Sample> {
        let payloads = samples::payloads();
        match route {
            Some(route) => samples::for_route(route, &payloads),
            None => match self.config.routes.first() {
                Some(first) => {
                    let mut any = first.clone();
                    any.matchers.clear();
                    any.send_resolved = true;
                    samples::for_route(&any, &payloads)
                }
                None => Vec::new(),
            },
        }
    }

    /// `replace`: a renderer and the route config to render the route's notifications with
    /// instead (an edited template).
    fn preview_routed(
        &self,
        payload: &WebhookPayload,
        route: Option<&str>,
        replace: Option<(&Renderer, &RouteConfig)>,
    ) -> Vec<Preview> {
        let plan = self.router.plan(&payload.alerts);
        let mut previews = Vec::new();
        for notification in plan
            .notifications
            .iter()
            .filter(|n| route.is_none_or(|r| n.route.name == r))
        {
            let (renderer, config) = match replace {
                Some((renderer, config)) if config.name == notification.route.name => (renderer, config),
                _ => (&self.renderer, notification.route),
            };
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
            let rendered = renderer.render(
                config,
                payload,
                &notification.alerts,
                &notification.mentions.users,
                &self.notifier.limits(config),
            );
            let message = match rendered {
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
