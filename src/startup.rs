//! Wiring the HTTP server: routes, shared state, listener. Tests start the application
//! through the same `Application::build` as `main`, on port 0.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use log::{info, warn};

use crate::ingest::auth::refusal;
use crate::ingest::handler::receive_alerts;
use crate::service::Service;

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    service: Arc<Service>,
}

impl Application {
    /// Binds `service.config.listen` (port 0 picks a free port) and prepares the server.
    pub fn build(service: Service) -> std::io::Result<Application> {
        let listener = TcpListener::bind(service.config.listen)?;
        let port = listener.local_addr()?.port();
        let service = web::Data::new(service);
        let shared = service.clone().into_inner();
        let dry_run = shared.notifier.dry_run_targets();
        if !dry_run.is_empty() {
            warn!(
                "DRY-RUN for {}: messages are rendered and logged, NOT sent to WeCom (no secret or robot key configured, or --dry-run)",
                dry_run.join(", ")
            );
        }
        let server = HttpServer::new(move || {
            App::new()
                .app_data(service.clone())
                .route("/alerts", web::post().to(receive_alerts))
                .route("/metrics", web::get().to(metrics))
                .route("/-/healthy", web::get().to(healthy))
                .route("/-/ready", web::get().to(ready))
        })
        .workers(2)
        .listen(listener)?
        .run();
        info!(
            "listening on {}:{port} with config {} ({} route(s), {} app(s))",
            shared.config.listen.ip(),
            shared.config.source,
            shared.config.routes.len(),
            shared.config.apps.len()
        );
        Ok(Application {
            port,
            server,
            service: shared,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn service(&self) -> Arc<Service> {
        self.service.clone()
    }

    /// Serves until the process is asked to stop (SIGINT/SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

async fn metrics(request: HttpRequest, service: web::Data<Service>) -> HttpResponse {
    let auth = &service.config.server.auth;
    if auth.protect_metrics {
        if let Some(refused) = refusal(auth, &request) {
            return refused;
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(service.metrics.encode())
}

async fn healthy(request: HttpRequest, service: web::Data<Service>) -> HttpResponse {
    let auth = &service.config.server.auth;
    if auth.protect_health {
        if let Some(refused) = refusal(auth, &request) {
            return refused;
        }
    }
    HttpResponse::Ok().body("OK\n")
}

async fn ready(request: HttpRequest, service: web::Data<Service>) -> HttpResponse {
    healthy(request, service).await
}
