//! `POST /alerts`.

use actix_web::http::header::{ContentLength, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::future::join_all;
use futures_util::StreamExt;
use log::{debug, warn};
use serde::Serialize;
use serde_json::json;
use tokio::sync::SemaphorePermit;

use super::auth::refusal;
use super::payload::{AlertStatus, WebhookPayload};
use crate::config::RouteConfig;
use crate::deliver::{Outcome, RouteReport};
use crate::route::{Notification, RoutingPlan};
use crate::runtime::{Admission, Runtime};
use crate::service::Service;

/// The response body: what happened to each route's share of the notification.
#[derive(Debug, Serialize)]
pub struct WebhookReport {
    pub status: &'static str,
    pub routes: Vec<RouteReport>,
    pub unrouted: usize,
}

pub async fn receive_alerts(
    request: HttpRequest,
    body: web::Payload,
    runtime: web::Data<Runtime>,
) -> HttpResponse {
    // The configuration this request started with serves it to the end, reload or not.
    let service = runtime.service();
    let response = match refusal(&service.config.server.auth, &request) {
        Some(refused) => refused,
        None => match runtime.admission().enter().await {
            Some(_slot) => read_and_handle(&request, body, &service, runtime.admission()).await,
            None => {
                warn!("refused a webhook: too many in flight (server.max_concurrent_requests + max_queued_requests)");
                let mut response = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many webhooks in flight; retry later",
                );
                response.headers_mut().insert(
                    RETRY_AFTER,
                    actix_web::http::header::HeaderValue::from_static("5"),
                );
                response
            }
        },
    };
    service
        .metrics
        .webhooks
        .with_label_values(&[response.status().as_str()])
        .inc();
    response
}

async fn read_and_handle(
    request: &HttpRequest,
    body: web::Payload,
    service: &Service,
    admission: &Admission,
) -> HttpResponse {
    // Decided by the headers alone: no need to read a body we will refuse.
    if !is_json(request) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json (Alertmanager's webhook payload)",
        );
    }
    let limit = service.config.server.max_body_bytes;
    let timeout = service.config.server.request_timeout;
    let length = request
        .get_header::<ContentLength>()
        .map(|ContentLength(length)| length);
    if length.is_some_and(|length| length > limit) {
        return body_too_large(limit);
    }
    // Bodies are read, parsed and rendered a few at a time (CPU-bound work anyway); the
    // others wait in their sockets instead of in memory. Sending is not limited.
    let permit = admission.process().await;
    let Ok(read) = tokio::time::timeout(timeout, read_body(body, limit, length)).await else {
        warn!("rejected webhook: the body did not arrive within server.request_timeout");
        return error_response(StatusCode::REQUEST_TIMEOUT, "request body not received in time");
    };
    match read {
        Ok(body) => handle(body.freeze(), service, permit).await,
        Err(BodyError::Read(error)) => error_response(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the request body: {error}"),
        ),
        Err(BodyError::TooLarge) => body_too_large(limit),
    }
}

enum BodyError {
    Read(actix_web::error::PayloadError),
    TooLarge,
}

/// The whole body, refusing more than `limit` bytes. The buffer is sized from
/// Content-Length (Alertmanager always sends it) instead of doubling as chunks arrive:
/// doubling copied a 700 KB body six times and left a 1 MiB buffer per request.
async fn read_body(
    mut body: web::Payload,
    limit: usize,
    length: Option<usize>,
) -> Result<web::BytesMut, BodyError> {
    let mut buffer = web::BytesMut::with_capacity(length.unwrap_or(0).min(limit));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        if buffer.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer)
}

fn body_too_large(limit: usize) -> HttpResponse {
    warn!("rejected webhook: body larger than server.max_body_bytes ({limit} bytes)");
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "request body is larger than server.max_body_bytes ({limit} bytes); \
             lower max_alerts in Alertmanager or raise the limit"
        ),
    )
}

async fn handle(body: web::Bytes, service: &Service, permit: Option<SemaphorePermit<'_>>) -> HttpResponse {
    let payload = match WebhookPayload::parse(&body) {
        Ok(payload) => payload,
        Err(error) => {
            warn!("rejected webhook: {error}");
            return error_response(StatusCode::BAD_REQUEST, &error.to_string());
        }
    };
    if payload.version != "4" {
        debug!(
            "webhook payload version {:?}; handling it as version 4",
            payload.version
        );
    }
    for alert in &payload.alerts {
        service
            .metrics
            .alerts_received
            .with_label_values(&[alert.status.as_str()])
            .inc();
    }

    let RoutingPlan {
        notifications,
        unresolved,
        unrouted,
    } = service.router.plan(&payload.alerts);
    if !unrouted.is_empty() {
        service.metrics.alerts_unrouted.inc_by(unrouted.len() as u64);
        let names: Vec<&str> = unrouted.iter().map(|a| a.name()).collect();
        warn!(
            "{} alert(s) of group {} matched no route and were not delivered (add a catch-all route): {}",
            names.len(),
            payload.group_key,
            names.join(", ")
        );
    }

    drop(body);
    // Render everything, then let go of the payload (a 1,000-alert group is megabytes of
    // label maps) before waiting on WeCom: a delivery needs the route, the recipients, the
    // rendered message and the alerts' identity, not the alerts.
    let prepared: Vec<_> = notifications
        .into_iter()
        .map(|notification| {
            let rendered = service.renderer.render(
                notification.route,
                &payload,
                &notification.alerts,
                &notification.mentions.users,
            );
            let identity = service.notifier.alerts_identity(&notification.alerts);
            let alerts = notification.alerts.len();
            // The same notification without its alerts, so it no longer borrows the payload.
            let addressed = Notification {
                route: notification.route,
                alerts: Vec::new(),
                recipients: notification.recipients,
                mentions: notification.mentions,
                group: notification.group,
            };
            (addressed, alerts, identity, rendered)
        })
        .collect();
    // Recipients that resolved to nobody: fail loudly rather than drop the alerts.
    let mut failed = Vec::new();
    for unresolved in &unresolved {
        let route = unresolved.route;
        service
            .metrics
            .recipients_unresolved
            .with_label_values(&[&route.name])
            .inc_by(unresolved.alerts.len() as u64);
        let names: Vec<&str> = unresolved.alerts.iter().map(|a| a.name()).collect();
        let error = format!(
            "route {:?}: the recipients in `to` resolved to nobody for {} alert(s) ({}) and the route has no fallback_to",
            route.name,
            names.len(),
            names.join(", ")
        );
        failed.push(failed_before_sending(
            service,
            route,
            unresolved.alerts.len(),
            error,
        ));
    }
    // Counted only for the debug line; a big group is thousands of alerts.
    let firing = if log::log_enabled!(log::Level::Debug) {
        payload
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .count()
    } else {
        0
    };
    let total_alerts = payload.alerts.len();
    let unrouted = unrouted.len();
    let group_key = payload.group_key.clone();
    drop(unresolved);
    drop(payload);
    drop(permit);
    let group_key = &group_key;
    let deliveries = prepared
        .iter()
        .map(|(notification, alerts, identity, rendered)| async move {
            let route = notification.route;
            match rendered {
                Ok(message) => {
                    service
                        .notifier
                        .deliver(notification, identity.as_deref(), group_key, message)
                        .await
                }
                Err(error) => failed_before_sending(service, route, *alerts, error.to_string()),
            }
        });
    let mut routes = join_all(deliveries).await;
    routes.extend(failed);

    // Retryable trouble anywhere: 503, so Alertmanager retries; routes already accepted
    // are remembered and not sent again. Otherwise a permanent refusal: 422, so
    // Alertmanager counts the failure without hammering.
    let (status, summary) = if routes.iter().any(|r| r.outcome == Outcome::FailedTransient) {
        (StatusCode::SERVICE_UNAVAILABLE, "retry")
    } else if routes.iter().any(|r| r.outcome == Outcome::FailedPermanent) {
        (StatusCode::UNPROCESSABLE_ENTITY, "rejected")
    } else {
        (StatusCode::OK, "ok")
    };
    debug!(
        "group {}: {} alert(s) ({} firing), answered {}",
        group_key,
        total_alerts,
        firing,
        status.as_u16()
    );
    HttpResponse::build(status).json(WebhookReport {
        status: summary,
        routes,
        unrouted,
    })
}

/// The report (and metric, and log line) for a message that could not even be built.
fn failed_before_sending(
    service: &Service,
    route: &RouteConfig,
    alerts: usize,
    error: String,
) -> RouteReport {
    warn!("{error}");
    service
        .metrics
        .notifications
        .with_label_values(&[
            &route.name,
            route.target_name(),
            Outcome::FailedPermanent.as_str(),
        ])
        .inc();
    RouteReport {
        route: route.name.clone(),
        target: route.target_name().to_string(),
        msgtype: route.msgtype.as_str(),
        alerts,
        messages: 0,
        outcome: Outcome::FailedPermanent,
        cut: false,
        errcode: None,
        error: Some(error),
    }
}

fn is_json(request: &HttpRequest) -> bool {
    use actix_web::mime::{APPLICATION, JSON};
    matches!(
        request.mime_type(),
        Ok(Some(mime)) if mime.type_() == APPLICATION && (mime.subtype() == JSON || mime.suffix() == Some(JSON))
    )
}

pub fn error_response(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "status": "error", "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn json_content_types_are_recognised_with_parameters_any_case_and_suffixes() {
        let declared = |content_type: &str| {
            is_json(
                &TestRequest::default()
                    .insert_header(("Content-Type", content_type))
                    .to_http_request(),
            )
        };
        for accepted in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.alertmanager+json",
        ] {
            assert!(declared(accepted), "{accepted}");
        }
        for refused in ["text/plain", "application/jsonx", "text/json", "json", ""] {
            assert!(!declared(refused), "{refused}");
        }
        assert!(!is_json(&TestRequest::default().to_http_request()));
    }
}
