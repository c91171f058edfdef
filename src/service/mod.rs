//! The service: one configuration assembled into a pipeline (route → render → deliver),
//! used alike by the HTTP handler, the CLI and the tests. Replaced as a whole on reload; a
//! request keeps the `Service` it started with until it is done.

pub mod callback;
mod digest;
mod notify;
mod preview;
pub mod runtime;

use crate::config::{Config, ConfigError};
use crate::deliver::{Clients, Notifier};
use crate::metrics::Metrics;
use crate::render::{RenderError, Renderer, TemplateError};
use crate::route::recipients::RecipientTemplateError;
use crate::route::Router;
use crate::state::redis::StoreError;
use crate::state::DeliveryStore;

pub use callback::{CallbackQuery, CallbackRefusal, Callbacks};
pub use notify::{Prepared, Report, Verdict};
pub use preview::{EditedTemplate, Preview, PreviewError, EDITED_FILE};
pub use runtime::{ConfigSource, Runtime};

/// Why a configuration could not be turned into a running service.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Templates(#[from] TemplateError),
    /// A route's template failed on one of the sample notifications (the error names it).
    #[error("{0}")]
    Sample(RenderError),
    #[error(transparent)]
    Recipients(#[from] RecipientTemplateError),
    #[error("state: {0}")]
    State(#[from] StoreError),
    #[error("callback: {0}")]
    Callback(String),
}

/// What outlives a configuration reload: metrics, WeCom clients and tokens, and the
/// delivery state.
pub struct Lasting {
    pub metrics: Metrics,
    pub clients: Clients,
    pub store: DeliveryStore,
}

impl Lasting {
    /// Fresh metrics and clients, and the delivery state `config` asks for.
    pub fn for_config(config: &Config) -> Result<Lasting, AssemblyError> {
        let metrics = Metrics::new();
        Ok(Lasting {
            clients: Clients::new(metrics.clone()),
            store: DeliveryStore::from_settings(&config.state, &metrics)?,
            metrics,
        })
    }
}

/// The pipeline for one configuration.
pub struct Service {
    pub config: Config,
    pub router: Router,
    pub renderer: Renderer,
    pub notifier: Notifier,
    pub metrics: Metrics,
    /// The callback side of apps with `callback:` (clicks on cards).
    pub callbacks: Callbacks,
}

impl Service {
    /// Loads the templates, checks every route's template exists and renders each against
    /// sample notifications. `dry_run` makes every target log instead of send.
    /// Assembles the service for `config`; its warnings are for the caller to tell (the
    /// runtime logs them, `check` prints them).
    pub fn new(config: Config, dry_run: bool, lasting: &Lasting) -> Result<Service, AssemblyError> {
        let renderer = Renderer::new(&config.templates)?;
        renderer.check_routes(&config.routes)?;
        let metrics = lasting.metrics.clone();
        let notifier = Notifier::new(
            &config,
            &lasting.clients,
            lasting.store.clone(),
            metrics.clone(),
            dry_run,
        );
        renderer
            .check_with_samples(&config.routes, |route| notifier.limits(route))
            .map_err(AssemblyError::Sample)?;
        let callbacks = Callbacks::new(&config).map_err(AssemblyError::Callback)?;
        let router = Router::new(&config.routes)?;
        for route in &config.routes {
            metrics.messages_cut.with_label_values(&[&route.name]);
            metrics.recipients_unresolved.with_label_values(&[&route.name]);
            for reason in ["digest", "pending", "budget"] {
                metrics.storm_held.with_label_values(&[&route.name, reason]);
            }
            for outcome in ["sent", "retry", "failed"] {
                metrics.storm_digests.with_label_values(&[&route.name, outcome]);
            }
            metrics.storm_digested.with_label_values(&[&route.name]);
            metrics.storm_represented.with_label_values(&[&route.name]);
            if route.buttons.is_some() {
                metrics.silences_created.with_label_values(&[&route.name]);
                for reason in [
                    "acknowledged",
                    "silenced",
                    "silence_failed",
                    "resolved",
                    "refused",
                ] {
                    metrics.cards_updated.with_label_values(&[&route.name, reason]);
                }
            }
        }
        for app in config.apps.iter().filter(|app| app.callback.is_some()) {
            let series = [
                ("verify", "acted"),
                ("template_card_event", "acted"),
                ("template_card_event", "duplicate"),
                ("template_card_event", "not_allowed"),
                ("template_card_event", "unknown_task"),
                ("template_card_event", "failed"),
                ("unknown", "refused_signature"),
                ("unknown", "refused_stale"),
            ];
            for (event, outcome) in series {
                metrics.callbacks.with_label_values(&[&app.name, event, outcome]);
            }
        }
        Ok(Service {
            config,
            router,
            renderer,
            notifier,
            metrics,
            callbacks,
        })
    }

    /// A service with state of its own, for one-off use (`check`, `render`, tests).
    pub fn standalone(config: Config, dry_run: bool) -> Result<Service, AssemblyError> {
        let lasting = Lasting::for_config(&config)?;
        Service::new(config, dry_run, &lasting)
    }
}
