//! Everything a webhook request needs, built from a validated configuration.

use crate::config::Config;
use crate::deliver::Notifier;
use crate::metrics::Metrics;
use crate::render::{Renderer, TemplateError};
use crate::route::Router;

/// The assembled pipeline: config, templates, delivery and metrics.
pub struct Service {
    pub config: Config,
    pub router: Router,
    pub renderer: Renderer,
    pub notifier: Notifier,
    pub metrics: Metrics,
}

impl Service {
    /// Loads the templates and checks every route's template exists. `dry_run` makes every
    /// app log its messages instead of sending them.
    pub fn new(config: Config, dry_run: bool) -> Result<Service, TemplateError> {
        let renderer = Renderer::new(&config.templates)?;
        renderer.check_routes(&config.routes)?;
        let router = Router::new(&config.routes).map_err(TemplateError::Recipients)?;
        let metrics = Metrics::new(&config);
        let notifier = Notifier::new(&config, metrics.clone(), dry_run);
        Ok(Service {
            config,
            router,
            renderer,
            notifier,
            metrics,
        })
    }
}
