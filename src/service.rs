//! One configuration, assembled: routes, templates and senders. Replaced as a whole on
//! reload; a request keeps the `Service` it started with until it is done.

use std::sync::Arc;

use crate::config::Config;
use crate::deliver::state::DeliveryState;
use crate::deliver::Notifier;
use crate::metrics::Metrics;
use crate::render::{Renderer, TemplateError};
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
