//! One configuration, assembled: routes, templates and senders. Replaced as a whole on
//! reload; a request keeps the `Service` it started with until it is done.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::deliver::state::DeliveryState;
use crate::deliver::Notifier;
use crate::ingest::payload::WebhookPayload;
use crate::metrics::Metrics;
use crate::render::{RenderedMessage, Renderer, TemplateError};
use crate::route::Router;

/// The pipeline for one configuration.
pub struct Service {
    pub config: Config,
    pub router: Router,
    pub renderer: Renderer,
    pub notifier: Notifier,
    pub metrics: Metrics,
}

impl Service {
    /// Loads the templates, checks every route's template exists and renders each against
    /// sample notifications. `dry_run` makes every app and robot log instead of send.
    pub fn new(
        config: Config,
        dry_run: bool,
        delivery: Arc<DeliveryState>,
    ) -> Result<Service, TemplateError> {
        let renderer = Renderer::new(&config.templates)?;
        renderer.check_routes(&config.routes)?;
        renderer
            .check_with_samples(&config.routes)
            .map_err(|e| TemplateError::Sample(e.to_string()))?;
        let router = Router::new(&config.routes).map_err(TemplateError::Recipients)?;
        let metrics = delivery.metrics.clone();
        metrics.prepare(&config);
        let notifier = Notifier::new(&config, delivery, dry_run);
        Ok(Service {
            config,
            router,
            renderer,
            notifier,
            metrics,
        })
    }

    /// A service with its own delivery state, for one-off use (`check`, tests).
    pub fn standalone(config: Config, dry_run: bool) -> Result<Service, TemplateError> {
        let delivery = Arc::new(DeliveryState::new(Metrics::new(), config.wecom.dedup_window));
        Service::new(config, dry_run, delivery)
    }
}

/// What one message would look like on the wire: for `render` and `POST /-/render`.
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
    /// Routes and renders `payload` exactly as a delivery would, without sending anything.
    /// `route` limits the output to one route.
    pub fn preview(&self, payload: &WebhookPayload, route: Option<&str>) -> Vec<Preview> {
        let plan = self.router.plan(&payload.alerts);
        let mut previews = Vec::new();
        for notification in plan
            .notifications
            .iter()
            .filter(|n| route.is_none_or(|r| n.route.name == r))
        {
            let config = notification.route;
            let base = Preview {
                route: config.name.clone(),
                target: config.target_name().to_string(),
                msgtype: config.msgtype.as_str(),
                part: 1,
                parts: 1,
                shown_alerts: 0,
                total_alerts: notification.alerts.len(),
                cut: false,
                sizes: BTreeMap::new(),
                requests: Vec::new(),
                error: None,
            };
            match self.renderer.render(
                config,
                payload,
                &notification.alerts,
                &notification.mentions.users,
            ) {
                Err(error) => previews.push(Preview {
                    error: Some(error.to_string()),
                    ..base
                }),
                Ok(message) => {
                    let parts = message.parts.len();
                    for (index, part) in message.parts.iter().enumerate() {
                        let single = RenderedMessage {
                            parts: vec![part.clone()],
                            ..message.clone()
                        };
                        let requests = self.notifier.requests(notification, &single);
                        previews.push(Preview {
                            route: base.route.clone(),
                            target: base.target.clone(),
                            part: index + 1,
                            parts,
                            shown_alerts: message.shown_alerts,
                            cut: message.cut,
                            sizes: part.sizes().into_iter().collect(),
                            requests: requests.into_iter().map(|r| r.body).collect(),
                            msgtype: base.msgtype,
                            total_alerts: base.total_alerts,
                            error: None,
                        });
                    }
                }
            }
        }
        previews
    }
}
