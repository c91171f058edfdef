//! `POST /alerts`: authenticates, reads the body whole (see [`body`]), waits for a turn,
//! parses the webhook, hands it to the service's pipeline, and answers with the status that
//! makes Alertmanager's retry logic do the right thing (200 delivered, 503 retry, 422
//! rejected, 4xx malformed). A caller that leaves before its delivery started is dropped
//! with nothing sent; a delivery that started finishes whether or not anyone waits for it.

mod body;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, ContentLength, HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use log::{error, warn};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use self::body::{BodyError, Coding, SUPPORTED_ENCODINGS};
use super::admission::{Admission, Place, Turn};
use super::auth::refusal;
use crate::config::ServerSettings;
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

/// What 503s that say "too busy" ask Alertmanager to wait (it backs off on its own anyway).
const RETRY_AFTER_SECS: &str = "5";

pub async fn receive_alerts(
    request: HttpRequest,
    payload: web::Payload,
    runtime: web::Data<Runtime>,
    admission: web::Data<Admission>,
) -> HttpResponse {
    // The configuration this request started with serves it to the end, reload or not.
    let service = runtime.service();
    let response = answer(&request, payload, service.clone(), &admission).await;
    count(&service.metrics, &response);
    response
}

/// `/alerts` with a method other than POST.
pub async fn wrong_method(runtime: web::Data<Runtime>) -> HttpResponse {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "/alerts takes POST with Alertmanager's webhook payload",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    count(&runtime.metrics, &response);
    response
}

fn count(metrics: &Metrics, response: &HttpResponse) {
    metrics
        .webhooks
        .with_label_values(&[response.status().as_str()])
        .inc();
}

async fn answer(
    request: &HttpRequest,
    payload: web::Payload,
    service: Arc<Service>,
    admission: &Admission,
) -> HttpResponse {
    let settings = &service.config.server;
    // Decided by the headers alone: no need to read a body we will refuse.
    if let Some(refused) = refusal(&settings.auth, request) {
        return refused;
    }
    if !is_json(request) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json (Alertmanager's webhook payload)",
        );
    }
    let coding = match Coding::of(request) {
        Ok(coding) => coding,
        Err(named) => {
            warn!("rejected webhook: Content-Encoding {named:?} is not supported");
            return error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "Content-Encoding {named:?} is not supported; send the body as {SUPPORTED_ENCODINGS}"
                ),
            );
        }
    };
    let limit = settings.max_body_bytes;
    let length = request
        .get_header::<ContentLength>()
        .map(|ContentLength(length)| length);
    if length.is_some_and(|length| length > limit) {
        return body_too_large(limit, false);
    }
    let Some(place) = admission.enter() else {
        warn!("refused a webhook: too many in flight (server.max_concurrent_requests + max_queued_requests)");
        return busy("too many webhooks in flight; retry later");
    };
    // The whole body first, before a turn: a slow sender then holds only its place and
    // the bytes it sent, never a turn others wait for.
    let deadline = Instant::now() + settings.body_timeout;
    let read = body::read(payload, coding, limit, length, admission.budget(), deadline).await;
    let body = match read {
        Ok(body) => body,
        Err(error) => return refuse_body(error, settings),
    };
    let Some(turn) = admission.turn(settings.queue_timeout).await else {
        warn!(
            "refused a webhook: no turn within server.queue_timeout ({}); deliveries are slower than webhooks arrive",
            humantime::format_duration(settings.queue_timeout)
        );
        return busy(&format!(
            "waited server.queue_timeout ({}) for a turn behind other webhooks; retry later",
            humantime::format_duration(settings.queue_timeout)
        ));
    };
    // From here the work runs in a task of its own: dropping this future (its caller closed
    // the connection) must not cut a delivery short once sending started, since a half-done
    // send leaves claims that hold back the retry. Before that point the task sees the
    // caller is gone and sends nothing.
    let caller = Caller::default();
    let task = actix_web::rt::spawn(process(body, service, place, turn, caller.clone()));
    let _watch = caller.watch();
    match task.await {
        Ok(response) => response,
        Err(failure) => {
            error!("processing a webhook failed unexpectedly: {failure}");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "processing this webhook failed unexpectedly (see the service's log); Alertmanager will retry",
            )
        }
    }
}

/// Whether the request a task works for is still waiting for its answer.
#[derive(Clone, Default)]
struct Caller(Arc<AtomicBool>);

impl Caller {
    /// A guard that marks the caller gone when dropped: either the task has answered by
    /// then, or the request future was dropped with its connection.
    fn watch(&self) -> CallerWatch {
        CallerWatch(self.0.clone())
    }

    fn is_gone(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

struct CallerWatch(Arc<AtomicBool>);

impl Drop for CallerWatch {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn process(
    body: body::Body,
    service: Arc<Service>,
    _place: Place,
    mut turn: Turn,
    caller: Caller,
) -> HttpResponse {
    if caller.is_gone() {
        return abandoned();
    }
    let payload = match WebhookPayload::parse(body.bytes()) {
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
    turn.end_processing();
    if caller.is_gone() {
        return abandoned();
    }
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

/// Nobody reads this answer: the caller left before anything was sent.
fn abandoned() -> HttpResponse {
    warn!(
        "dropped a webhook whose caller closed the connection while it waited; nothing was sent (Alertmanager sends it again)"
    );
    error_response(StatusCode::SERVICE_UNAVAILABLE, "the caller went away")
}

fn refuse_body(error: BodyError, settings: &ServerSettings) -> HttpResponse {
    let format = |duration: Duration| humantime::format_duration(duration).to_string();
    match error {
        BodyError::TooLarge { decoded } => body_too_large(settings.max_body_bytes, decoded),
        BodyError::TimedOut => {
            warn!("rejected webhook: the body did not arrive within server.body_timeout");
            error_response(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "request body not received in time: it must arrive whole within server.body_timeout ({})",
                    format(settings.body_timeout)
                ),
            )
        }
        BodyError::NoBudget => {
            warn!(
                "refused a webhook: bodies being read or waiting hold all of server.max_buffered_body_bytes ({} bytes)",
                settings.max_buffered_body_bytes
            );
            busy(&format!(
                "bodies being read or waiting already hold server.max_buffered_body_bytes ({} bytes); retry later",
                settings.max_buffered_body_bytes
            ))
        }
        BodyError::Read(error) => error_response(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the request body: {error}"),
        ),
        BodyError::Corrupt(why) => {
            warn!("rejected webhook: {why}");
            error_response(StatusCode::BAD_REQUEST, &why)
        }
    }
}

/// 503 with Retry-After: nothing was done, the same webhook may succeed later.
fn busy(message: &str) -> HttpResponse {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

fn body_too_large(limit: usize, decoded: bool) -> HttpResponse {
    let what = if decoded {
        "decoded request body"
    } else {
        "request body"
    };
    warn!("rejected webhook: {what} larger than server.max_body_bytes ({limit} bytes)");
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "{what} is larger than server.max_body_bytes ({limit} bytes); \
             lower max_alerts in Alertmanager or raise the limit"
        ),
    )
}

/// The statuses `/alerts` answers: the label values of `webhooks_received_total`.
const ANSWERED: [StatusCode; 10] = [
    StatusCode::OK,
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::REQUEST_TIMEOUT,
    StatusCode::PAYLOAD_TOO_LARGE,
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    StatusCode::UNPROCESSABLE_ENTITY,
    StatusCode::INTERNAL_SERVER_ERROR,
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
