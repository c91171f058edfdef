//! `POST /alerts`: authenticates, admits, reads and parses the webhook, hands it to the
//! service's pipeline, and answers with the status that makes Alertmanager's retry logic
//! do the right thing (200 delivered, 503 retry, 422 rejected, 4xx malformed).

use actix_web::http::header::{ContentLength, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use log::warn;
use serde::Serialize;
use serde_json::json;
use tokio::sync::SemaphorePermit;

use super::admission::Admission;
use super::auth::refusal;
use crate::deliver::RouteReport;
use crate::metrics::Metrics;
use crate::model::WebhookPayload;
use crate::service::{Runtime, Service, Verdict};

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
    admission: web::Data<Admission>,
) -> HttpResponse {
    // The configuration this request started with serves it to the end, reload or not.
    let service = runtime.service();
    let response = match refusal(&service.config.server.auth, &request) {
        Some(refused) => refused,
        None => match admission.enter().await {
            Some(_slot) => read_and_handle(&request, body, &service, &admission).await,
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
    drop(body);
    let prepared = service.prepare(&payload).await;
    // Let go of the payload and the processing turn before waiting on WeCom: a delivery
    // needs what was prepared, not the alerts.
    drop(payload);
    drop(permit);
    let report = service.deliver(prepared).await;
    let verdict = report.verdict();
    let status = match verdict {
        Verdict::Delivered => StatusCode::OK,
        Verdict::Retry => StatusCode::SERVICE_UNAVAILABLE,
        Verdict::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
    };
    HttpResponse::build(status).json(WebhookReport {
        status: verdict.as_str(),
        routes: report.routes,
        unrouted: report.unrouted,
    })
}

/// The statuses `/alerts` answers: the label values of `webhooks_received_total`.
const ANSWERED: [StatusCode; 8] = [
    StatusCode::OK,
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::REQUEST_TIMEOUT,
    StatusCode::PAYLOAD_TOO_LARGE,
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    StatusCode::UNPROCESSABLE_ENTITY,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// Pre-initialises the series of every status `/alerts` answers.
pub fn prepare_metrics(metrics: &Metrics) {
    for status in ANSWERED {
        metrics.webhooks.with_label_values(&[status.as_str()]);
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
