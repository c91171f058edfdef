//! The admin endpoints: metrics, health, readiness, reload and the render preview.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::alerts::error_response;
use super::auth::refusal;
use crate::model::WebhookPayload;
use crate::service::Runtime;

pub(super) async fn metrics(request: HttpRequest, runtime: web::Data<Runtime>) -> HttpResponse {
    let auth = &runtime.service().config.server.auth;
    if auth.protect_metrics {
        if let Some(refused) = refusal(auth, &request) {
            return refused;
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(runtime.metrics.encode())
}

pub(super) async fn healthy(request: HttpRequest, runtime: web::Data<Runtime>) -> HttpResponse {
    let auth = &runtime.service().config.server.auth;
    if auth.protect_health {
        if let Some(refused) = refusal(auth, &request) {
            return refused;
        }
    }
    HttpResponse::Ok().body("OK\n")
}

pub(super) async fn ready(request: HttpRequest, runtime: web::Data<Runtime>) -> HttpResponse {
    if !runtime.is_ready() {
        return HttpResponse::ServiceUnavailable().body("shutting down\n");
    }
    healthy(request, runtime).await
}

#[derive(serde::Deserialize)]
pub(super) struct RenderQuery {
    route: Option<String>,
}

/// `POST /-/render[?route=NAME]` with a webhook payload: the exact WeCom requests it would
/// produce, as `alertmanager-wecom render` prints them. Sends nothing.
pub(super) async fn render_preview(
    request: HttpRequest,
    body: web::Bytes,
    query: web::Query<RenderQuery>,
    runtime: web::Data<Runtime>,
) -> HttpResponse {
    let service = runtime.service();
    if let Some(refused) = refusal(&service.config.server.auth, &request) {
        return refused;
    }
    match WebhookPayload::parse(&body) {
        Ok(payload) => HttpResponse::Ok().json(service.preview(&payload, query.route.as_deref())),
        Err(error) => error_response(StatusCode::BAD_REQUEST, &error.to_string()),
    }
}

/// `POST /-/reload`: 200 when the new configuration is in use, 400 with the reason when it
/// was rejected (the old one keeps serving).
pub(super) async fn reload(request: HttpRequest, runtime: web::Data<Runtime>) -> HttpResponse {
    if let Some(refused) = refusal(&runtime.service().config.server.auth, &request) {
        return refused;
    }
    let worker = runtime.clone().into_inner();
    match tokio::task::spawn_blocking(move || worker.reload()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(serde_json::json!({ "status": "reloaded" })),
        Ok(Err(error)) => error_response(StatusCode::BAD_REQUEST, &error.to_string()),
        Err(_) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "reload failed unexpectedly"),
    }
}
