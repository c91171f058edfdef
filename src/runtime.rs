//! The running service across reloads: the current [`Service`] (swapped atomically when
//! the configuration is reloaded), and what outlives it — metrics, delivery state,
//! readiness and admission control.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use log::{error, info, warn};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::Config;
use crate::deliver::state::DeliveryState;
use crate::metrics::Metrics;
use crate::service::Service;

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
    pub fn load(&self) -> Result<Config, String> {
        match self {
            ConfigSource::File(path) => Config::from_file(path),
            ConfigSource::Bundled => Config::bundled_example(),
            ConfigSource::Text(text) => Config::from_yaml(text, "<inline config>", std::path::Path::new("")),
        }
        .map_err(|e| e.to_string())
    }
}

/// Shared by every request handler.
pub struct Runtime {
    current: ArcSwap<Service>,
    pub metrics: Metrics,
    delivery: Arc<DeliveryState>,
    source: ConfigSource,
    dry_run: bool,
    ready: AtomicBool,
    admission: Admission,
    /// Serialises reloads (signal, endpoint and file watch may race).
    reloading: Mutex<()>,
    /// `--listen`, which wins over the config file's `listen` on every load.
    listen_override: Option<SocketAddr>,
}

impl Runtime {
    /// Loads the configuration from `source` and assembles the service.
    pub fn start(source: ConfigSource, listen: Option<SocketAddr>, dry_run: bool) -> Result<Runtime, String> {
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
    ) -> Result<Runtime, String> {
        let metrics = Metrics::new();
        let delivery = Arc::new(DeliveryState::new(metrics.clone(), config.wecom.dedup_window));
        let admission = Admission::new(
            config.server.max_concurrent_requests,
            config.server.max_queued_requests,
        );
        let service = Service::new(config, dry_run, delivery.clone()).map_err(|e| e.to_string())?;
        metrics.record_reload(true);
        Ok(Runtime {
            current: ArcSwap::from_pointee(service),
            metrics,
            delivery,
            source,
            dry_run,
            ready: AtomicBool::new(true),
            admission,
            reloading: Mutex::new(()),
            listen_override,
        })
    }

    /// The current configuration's pipeline. Hold on to it for a whole request.
    pub fn service(&self) -> Arc<Service> {
        self.current.load_full()
    }

    /// Reads the configuration and templates again and, if they are valid, swaps them in.
    /// A failed reload changes nothing: the running configuration keeps serving.
    pub fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.source.load().and_then(|mut config| {
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
            Service::new(config, self.dry_run, self.delivery.clone()).map_err(|e| e.to_string())
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
                error!("configuration reload rejected, the running configuration stays: {message}");
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

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Whether the config comes from a file that can change.
    pub fn config_path(&self) -> Option<&PathBuf> {
        match &self.source {
            ConfigSource::File(path) => Some(path),
            _ => None,
        }
    }
}

/// Webhooks read, parsed and rendered at the same time: the work is CPU-bound, so more
/// than the two workers' worth only holds more bodies and payloads in memory.
const PROCESSING_PERMITS: usize = 2;

/// Bounds work: at most `concurrent` webhooks are in flight and at most `queued` wait for a
/// turn; beyond that requests are refused (503) instead of growing memory. Of those in
/// flight, only [`PROCESSING_PERMITS`] hold a body and its parsed payload at once.
pub struct Admission {
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    processing: Semaphore,
}

impl Admission {
    pub fn new(concurrent: usize, queued: usize) -> Admission {
        Admission {
            slots: Semaphore::new(concurrent.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting: queued,
            processing: Semaphore::new(PROCESSING_PERMITS),
        }
    }

    /// A turn to read, parse and render a body; the others wait in their sockets.
    pub async fn process(&self) -> Option<SemaphorePermit<'_>> {
        self.processing.acquire().await.ok()
    }

    /// A processing slot, waiting for one if the queue has room; `None` when full.
    pub async fn enter(&self) -> Option<SemaphorePermit<'_>> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let permit = self.slots.acquire().await.ok();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit
    }
}
