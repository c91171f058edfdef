//! The running service across reloads: the current [`Service`] (swapped atomically when
//! the configuration is reloaded), what outlives it ([`Lasting`]), and readiness.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use log::{error, info, warn};

use super::{AssemblyError, Lasting, Service};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;

/// How often due storm digests are looked for.
const DIGEST_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Where the configuration comes from, so it can be read again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    /// The example compiled into the binary.
    Bundled,
    /// Text given directly (tests); reloading re-reads the same text.
    Text(String),
}

impl ConfigSource {
    /// `--config FILE`, or the bundled example without one.
    pub fn from_option(path: Option<&Path>) -> ConfigSource {
        path.map_or(ConfigSource::Bundled, |path| {
            ConfigSource::File(path.to_path_buf())
        })
    }

    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => Config::from_file(path),
            ConfigSource::Bundled => Config::bundled_example(),
            ConfigSource::Text(text) => Config::from_yaml(text, "<inline config>", Path::new("")),
        }
    }
}

/// Shared by every request handler.
pub struct Runtime {
    current: ArcSwap<Service>,
    pub metrics: Metrics,
    lasting: Lasting,
    source: ConfigSource,
    dry_run: bool,
    ready: AtomicBool,
    /// Serialises reloads (signal, endpoint and file watch may race).
    reloading: Mutex<()>,
    /// `--listen`, which wins over the config file's `listen` on every load.
    listen_override: Option<SocketAddr>,
}

impl Runtime {
    /// Loads the configuration from `source` and assembles the service.
    pub fn start(
        source: ConfigSource,
        listen: Option<SocketAddr>,
        dry_run: bool,
    ) -> Result<Runtime, AssemblyError> {
        let mut config = source.load()?;
        if let Some(listen) = listen {
            config.listen = listen;
        }
        Runtime::new(config, source, listen, dry_run)
    }

    fn new(
        config: Config,
        source: ConfigSource,
        listen_override: Option<SocketAddr>,
        dry_run: bool,
    ) -> Result<Runtime, AssemblyError> {
        let lasting = Lasting::for_config(&config)?;
        log_warnings(&config);
        let service = Service::new(config, dry_run, &lasting)?;
        lasting.metrics.record_reload(true);
        Ok(Runtime {
            current: ArcSwap::from_pointee(service),
            metrics: lasting.metrics.clone(),
            lasting,
            source,
            dry_run,
            ready: AtomicBool::new(true),
            reloading: Mutex::new(()),
            listen_override,
        })
    }

    /// Starts what runs beside requests (within the tokio runtime that serves them): the
    /// shared state's health watch and the storm digest flush, which uses whatever
    /// configuration is current and stops with the runtime.
    pub fn start_background(self: &Arc<Self>) {
        self.lasting.store.watch();
        let runtime = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DIGEST_FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(runtime) = runtime.upgrade() else { return };
                let service = runtime.service();
                drop(runtime);
                service.flush_digests().await;
            }
        });
    }

    /// The current configuration's pipeline. Hold on to it for a whole request.
    pub fn service(&self) -> Arc<Service> {
        self.current.load_full()
    }

    /// Reads the configuration and templates again and, if they are valid, swaps them in.
    /// A failed reload changes nothing: the running configuration keeps serving.
    pub fn reload(&self) -> Result<(), AssemblyError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let result = self
            .source
            .load()
            .map_err(AssemblyError::from)
            .and_then(|mut config| {
                if let Some(listen) = self.listen_override {
                    config.listen = listen;
                }
                let current = self.service();
                if config.listen != current.config.listen {
                    warn!(
                        "reload: listen changed to {} but takes effect only on restart",
                        config.listen
                    );
                }
                log_warnings(&config);
                Service::new(config, self.dry_run, &self.lasting)
            });
        match result {
            Ok(service) => {
                let routes = service.config.routes.len();
                self.current.store(Arc::new(service));
                self.metrics.record_reload(true);
                info!("configuration reloaded ({routes} route(s))");
                Ok(())
            }
            Err(message) => {
                self.metrics.record_reload(false);
                error!("configuration reload rejected, the running configuration stays");
                // One log record per problem, as at start-up: log pipelines take a record
                // per line.
                for problem in message.to_string().lines() {
                    error!("{problem}");
                }
                Err(message)
            }
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Shutting down: `/-/ready` answers 503 from now on.
    pub fn set_unready(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    /// Whether the config comes from a file that can change.
    pub fn config_path(&self) -> Option<&PathBuf> {
        match &self.source {
            ConfigSource::File(path) => Some(path),
            _ => None,
        }
    }
}

/// The configuration's warnings, one log record each, where the service starts or reloads.
fn log_warnings(config: &Config) {
    for warning in config.warnings() {
        warn!("{}: {warning}", config.source);
    }
}
