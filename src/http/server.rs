//! Wiring the HTTP server: routes, shared state, listener, signals and the config watch.
//! Tests start the application through the same `Application::build` as `main`, on port 0.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header::CONTENT_ENCODING;
use actix_web::{guard, web, App, HttpResponse, HttpServer};
use log::{info, warn};
use sha2::{Digest, Sha256};

use super::admin::{healthy, metrics, ready, reload, render_preview};
use super::admission::Admission;
use super::alerts::{error_response, prepare_metrics, receive_alerts, wrong_method};
use super::callback;
use super::playground::{self, Renders};
use crate::service::Runtime;

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    runtime: Arc<Runtime>,
    /// The config and templates as loaded, so a change made before serving starts counts.
    loaded: [u8; 32],
}

impl Application {
    /// Binds the configured `listen` address (port 0 picks a free port).
    pub fn build(runtime: Runtime) -> std::io::Result<Application> {
        let service = runtime.service();
        let settings = &service.config.server;
        let listener = TcpListener::bind(service.config.listen)?;
        let port = listener.local_addr()?.port();
        let dry_run = service.notifier.dry_run_targets();
        if !dry_run.is_empty() {
            warn!(
                "DRY-RUN for {}: messages are rendered and logged, NOT sent to WeCom (no secret or robot key configured, or --dry-run)",
                dry_run.join(", ")
            );
        }
        prepare_metrics(&runtime.metrics);
        let admission = web::Data::new(Admission::new(
            settings.max_concurrent_requests,
            settings.max_queued_requests,
            settings.max_buffered_body_bytes,
        ));
        let renders = web::Data::new(Renders::new());
        let runtime = web::Data::new(runtime);
        let shared = runtime.clone().into_inner();
        shared.start_background();
        let server = HttpServer::new(move || {
            // One resource per path, so that a method it does not take is answered 405 with
            // `Allow` (by the resource's default service) instead of falling through to 404.
            App::new()
                .app_data(runtime.clone())
                .app_data(admission.clone())
                .app_data(renders.clone())
                .service(
                    web::resource("/alerts")
                        .route(web::post().to(receive_alerts))
                        .default_service(web::to(wrong_method)),
                )
                .service(web::resource("/metrics").route(web::get().to(metrics)))
                .service(web::resource("/-/healthy").route(web::get().to(healthy)))
                .service(web::resource("/-/ready").route(web::get().to(ready)))
                .service(web::resource("/-/reload").route(web::post().to(reload)))
                .service(
                    web::resource("/-/render")
                        .route(compressed().to(compression_refused))
                        .route(web::post().to(render_preview)),
                )
                // Answered 404 unless `server.playground` is on (asked per request: a reload
                // may turn it on or off).
                .service(web::resource("/playground").route(web::get().to(playground::page)))
                .service(web::resource("/playground/api/context").route(web::get().to(playground::context)))
                .service(
                    web::resource("/playground/api/render")
                        .route(compressed().to(compression_refused))
                        .route(web::post().to(playground::render)),
                )
                .service(web::resource("/playground/{file}").route(web::get().to(playground::asset)))
                .service(
                    web::resource("/wecom/callback/{app}")
                        .app_data(web::PayloadConfig::new(callback::MAX_CALLBACK_BYTES))
                        .route(compressed().to(compression_refused))
                        .route(web::get().to(callback::verify_url))
                        .route(web::post().to(callback::receive)),
                )
        })
        .workers(2)
        // Signals are ours: SIGTERM first turns /-/ready unready, SIGHUP reloads.
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace.as_secs().max(1))
        .client_request_timeout(settings.request_timeout)
        // A client that closes its connection ends the request: actix-http's h1 dispatcher
        // (actix-http/src/h1/dispatcher.rs, `poll`) then finishes the connection and drops
        // the handler's future at once. With half-closed connections allowed (actix's
        // default) it would instead go on polling the handler to the end, so a webhook whose
        // caller gave up would still wait for its turn and be delivered. No webhook sender
        // half-closes and then waits for an answer (Alertmanager's Go client does not).
        .h1_allow_half_closed(false)
        // Longer than Alertmanager's idle-connection timeout (5 min), so the client, not
        // the server, closes idle connections: otherwise a webhook sent on a connection the
        // server is closing fails and is only delivered on Alertmanager's retry.
        .keep_alive(Duration::from_secs(330))
        .listen(listener)?
        .run();
        info!(
            "listening on {}:{port} with config {} ({} route(s), {} app(s))",
            service.config.listen.ip(),
            service.config.source,
            service.config.routes.len(),
            service.config.apps.len()
        );
        let loaded = match shared.config_path() {
            Some(path) => fingerprint(path, service.config.templates.dir.as_deref()),
            None => [0; 32],
        };
        Ok(Application {
            port,
            server,
            runtime: shared,
            loaded,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.clone()
    }

    /// A handle to stop the server gracefully, as SIGTERM does.
    pub fn shutdown_handle(&self) -> Shutdown {
        Shutdown {
            server: self.server.handle(),
            runtime: self.runtime.clone(),
        }
    }

    /// Serves until SIGTERM or SIGINT, then finishes the requests in flight (within
    /// `server.shutdown_grace`) and returns. SIGHUP reloads the configuration.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let shutdown = self.shutdown_handle();
        let signals = tokio::spawn(handle_signals(shutdown.clone()));
        let watch = tokio::spawn(watch_config(self.runtime.clone(), self.loaded));
        let result = self.server.await;
        signals.abort();
        watch.abort();
        result
    }
}

/// Stops the server: `/-/ready` turns 503, the listener closes, requests in flight finish.
#[derive(Clone)]
pub struct Shutdown {
    server: ServerHandle,
    runtime: Arc<Runtime>,
}

impl Shutdown {
    pub async fn stop(&self) {
        self.runtime.set_unready();
        let grace = self.runtime.service().config.server.shutdown_grace;
        info!(
            "shutting down: finishing requests in flight (up to {}s)",
            grace.as_secs()
        );
        self.server.stop(true).await;
    }
}

/// Requests with a `Content-Encoding` other than identity. Those endpoints take small bodies
/// that nobody compresses; refusing them unread keeps actix's own decoder, which inflates a
/// whole chunk before any size limit applies, away from bodies nobody has authenticated yet.
fn compressed() -> actix_web::Route {
    web::route().guard(guard::fn_guard(|context| {
        context
            .head()
            .headers()
            .get_all(CONTENT_ENCODING)
            .any(|value| !value.as_bytes().eq_ignore_ascii_case(b"identity"))
    }))
}

async fn compression_refused() -> HttpResponse {
    error_response(
        actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "this endpoint takes uncompressed bodies only; send it without Content-Encoding",
    )
}

#[cfg(unix)]
async fn handle_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot listen for signals; stop the process with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                let runtime = shutdown.runtime.clone();
                let _ = tokio::task::spawn_blocking(move || runtime.reload()).await;
            }
        }
    }
    shutdown.stop().await;
}

#[cfg(not(unix))]
async fn handle_signals(shutdown: Shutdown) {
    if tokio::signal::ctrl_c().await.is_ok() {
        shutdown.stop().await;
    }
}

/// Reloads when the config file or a template changes. Polls the content rather than
/// watching inodes: a Kubernetes ConfigMap update swaps a symlink, which a watch on the
/// file itself never sees.
async fn watch_config(runtime: Arc<Runtime>, mut last: [u8; 32]) {
    let Some(path) = runtime.config_path().cloned() else {
        return;
    };
    let interval = runtime.service().config.server.reload_interval;
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(interval.max(Duration::from_millis(100))).await;
        let dir = runtime.service().config.templates.dir.clone();
        let path_for_hash = path.clone();
        let now = tokio::task::spawn_blocking(move || fingerprint(&path_for_hash, dir.as_deref()))
            .await
            .unwrap_or_default();
        if now != last {
            last = now;
            info!("{} or its templates changed: reloading", path.display());
            let runtime = runtime.clone();
            let _ = tokio::task::spawn_blocking(move || runtime.reload()).await;
        }
    }
}

/// A hash of the config file and every file of the template directory.
fn fingerprint(config: &Path, templates: Option<&Path>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(std::fs::read(config).unwrap_or_default());
    if let Some(dir) = templates {
        let mut files = Vec::new();
        collect_files(dir, &mut files);
        files.sort();
        for file in files {
            hasher.update(file.to_string_lossy().as_bytes());
            hasher.update(std::fs::read(&file).unwrap_or_default());
        }
    }
    hasher.finalize().into()
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Follows symlinks (ConfigMaps are symlinks into a `..data` directory).
        if path.is_dir() {
            if !entry.file_name().to_string_lossy().starts_with("..") {
                collect_files(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}
