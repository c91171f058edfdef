//! The template playground (`server.playground: true`, off by default, behind
//! `server.auth`): a page where an SRE renders a built-in sample or a pasted webhook through
//! a route of the running configuration, with its template or an edited one, and sees what
//! WeCom will show. The page is static HTML, CSS and JS from `playground/`, built into the
//! binary; every render goes through the service's preview, so it shows what would be sent.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use super::alerts::error_response;
use super::auth::refusal;
use crate::config::{MsgType, RouteConfig};
use crate::model::WebhookPayload;
use crate::render::fit::{
    CUT_MARKER, TEXTCARD_BTNTXT_MAX_CHARS, TEXTCARD_DESCRIPTION_MAX_BYTES, TEXTCARD_TITLE_MAX_BYTES,
    TEXTCARD_URL_MAX_BYTES,
};
use crate::service::{EditedTemplate, Preview, PreviewError, Runtime, Service, EDITED_FILE};

/// The longest template source the playground compiles.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

const INDEX_HTML: &str = include_str!("playground/index.html");
const APP_JS: &str = include_str!("playground/app.js");
const STYLE_CSS: &str = include_str!("playground/style.css");

/// Nothing but the page's own files: no inline script or style, no other origin, not
/// framed (the page shows the configuration's routes and templates).
const CSP: &str =
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const OFF: &str = "the template playground is off; turn it on with `server: {playground: true}` in the configuration (it is served behind server.auth, like /-/render)";

/// `text_notice` fields and WeCom's suggested limits in characters, as `render::card`
/// fits them (shown here, enforced there).
const CARD_FIELDS: [(&str, &str, usize); 6] = crate::render::card::CARD_FIELD_LIMITS;

/// One render at a time, off the server's workers: a template from the editor can loop
/// over every alert many times over, and only one such render then holds a thread.
pub(super) struct Renders(Arc<Semaphore>);

impl Renders {
    pub(super) fn new() -> Renders {
        Renders(Arc::new(Semaphore::new(1)))
    }
}

/// `None` when the playground may answer; else the 404 (off) or 401 (auth).
fn closed(runtime: &Runtime, request: &HttpRequest) -> Option<HttpResponse> {
    let service = runtime.service();
    if !service.config.server.playground {
        return Some(
            HttpResponse::NotFound()
                .content_type("text/plain; charset=utf-8")
                .body(format!("{OFF}\n")),
        );
    }
    refusal(&service.config.server.auth, request)
}

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((CONTENT_SECURITY_POLICY, CSP))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // A new binary may bring a new page: always ask (it is small).
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// `GET /playground`
pub(super) async fn page(request: HttpRequest, runtime: web::Data<Runtime>) -> HttpResponse {
    closed(&runtime, &request).unwrap_or_else(|| file("text/html; charset=utf-8", INDEX_HTML))
}

/// `GET /playground/{file}`: the page's script and style sheet.
pub(super) async fn asset(
    request: HttpRequest,
    name: web::Path<String>,
    runtime: web::Data<Runtime>,
) -> HttpResponse {
    if let Some(closed) = closed(&runtime, &request) {
        return closed;
    }
    match name.as_str() {
        "" => file("text/html; charset=utf-8", INDEX_HTML),
        "app.js" => file("text/javascript; charset=utf-8", APP_JS),
        "style.css" => file("text/css; charset=utf-8", STYLE_CSS),
        _ => error_response(StatusCode::NOT_FOUND, "no such file of the playground"),
    }
}

/// `GET /playground/api/context`: what the page offers to pick from: the samples, the
/// routes with their template's source, and the limits each msgtype is fitted to.
pub(super) async fn context(request: HttpRequest, runtime: web::Data<Runtime>) -> HttpResponse {
    if let Some(closed) = closed(&runtime, &request) {
        return closed;
    }
    let service = runtime.service();
    let samples: Vec<Value> = service
        .samples(None)
        .iter()
        .map(|s| json!({ "name": s.name, "about": s.about, "alerts": s.payload.alerts.len() }))
        .collect();
    let routes: Vec<Value> = service
        .config
        .routes
        .iter()
        .map(|route| {
            let kind = route.target.kind();
            let limits: Map<String, Value> = kind
                .msgtypes()
                .iter()
                .map(|&msgtype| {
                    (
                        msgtype.as_str().to_string(),
                        json!(limits(&service, route, msgtype)),
                    )
                })
                .collect();
            json!({
                "name": route.name,
                "target": route.target_name(),
                "target_kind": kind.as_str(),
                "msgtype": route.msgtype.as_str(),
                "msgtypes": kind.msgtypes().iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "template": route.template,
                "source": service.renderer.template_source(&route.template),
                "send_resolved": route.send_resolved,
                "buttons": route.buttons.is_some(),
                "limits": limits,
            })
        })
        .collect();
    // Each msgtype's own template, for the editor when its msgtype is switched.
    let builtin: Map<String, Value> = MsgType::ALL
        .iter()
        .filter_map(|t| {
            Some((
                t.as_str().to_string(),
                json!(service.renderer.template_source(t.as_str())?),
            ))
        })
        .collect();
    no_store(HttpResponse::Ok()).json(json!({
        "samples": samples,
        "routes": routes,
        "builtin": builtin,
        "max_payload_bytes": service.config.server.max_body_bytes,
        "max_template_bytes": MAX_TEMPLATE_BYTES,
        "cut_marker": CUT_MARKER,
    }))
}

fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header((CACHE_CONTROL, "no-store"));
    builder
}

/// What a field of `msgtype` may hold on `route`'s target: `(field, limit, unit)`.
fn limits(service: &Service, route: &RouteConfig, msgtype: MsgType) -> Vec<(String, usize, &'static str)> {
    match msgtype {
        MsgType::Text | MsgType::Markdown | MsgType::MarkdownV2 => {
            let limits = service.notifier.limits(route);
            vec![("content".into(), limits.max_bytes(msgtype), "B")]
        }
        MsgType::Textcard => vec![
            ("title".into(), TEXTCARD_TITLE_MAX_BYTES, "B"),
            ("description".into(), TEXTCARD_DESCRIPTION_MAX_BYTES, "B"),
            ("url".into(), TEXTCARD_URL_MAX_BYTES, "B"),
            ("btntxt".into(), TEXTCARD_BTNTXT_MAX_CHARS, "chars"),
        ],
        MsgType::TemplateCard => CARD_FIELDS
            .iter()
            .map(|(outer, inner, limit)| (card_field(outer, inner), *limit, "chars"))
            .collect(),
    }
}

fn card_field(outer: &str, inner: &str) -> String {
    if inner.is_empty() {
        outer.to_string()
    } else {
        format!("{outer}.{inner}")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderRequest {
    /// A webhook payload: a JSON object, or its text as pasted.
    payload: Option<Value>,
    /// A built-in sample's name (as the route would get it).
    sample: Option<String>,
    route: Option<String>,
    template: Option<TemplateRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateRequest {
    msgtype: String,
    source: String,
}

/// `POST /playground/api/render` with `{payload | sample, route?, template?: {msgtype,
/// source}}`: the previews of `POST /-/render`, each with its fields' sizes against their
/// limits, and where an error is (file, line, column).
pub(super) async fn render(
    request: HttpRequest,
    mut body: web::Payload,
    runtime: web::Data<Runtime>,
    renders: web::Data<Renders>,
) -> HttpResponse {
    if let Some(closed) = closed(&runtime, &request) {
        return closed;
    }
    let service = runtime.service();
    let max_payload = service.config.server.max_body_bytes;
    // A pasted payload and the template come as JSON strings, which may escape each byte
    // into two: room for both, and the exact limits are checked once parsed.
    let max_request = 2 * (max_payload + MAX_TEMPLATE_BYTES) + 4096;
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return error_response(StatusCode::BAD_REQUEST, "the request body could not be read");
        };
        if bytes.len() + chunk.len() > max_request {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request is over {max_request} bytes: a payload of at most server.max_body_bytes ({max_payload}) and a template of at most {MAX_TEMPLATE_BYTES} bytes"),
            );
        }
        bytes.extend_from_slice(&chunk);
    }
    let asked: RenderRequest = match serde_json::from_slice(&bytes) {
        Ok(asked) => asked,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"payload\" or \"sample\", \"route\"?, \"template\"?: {{\"msgtype\", \"source\"}}}}: {error}"),
            )
        }
    };
    if let Some(template) = &asked.template {
        if template.source.len() > MAX_TEMPLATE_BYTES {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the template is {} bytes; the playground takes templates of at most {MAX_TEMPLATE_BYTES} bytes (64 KiB)",
                    template.source.len()
                ),
            );
        }
    }
    let Ok(permit) = renders.0.clone().try_acquire_owned() else {
        return error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "another playground render is still running; try again when it is done",
        );
    };
    let answer = web::block(move || {
        let _permit = permit;
        let started = Instant::now();
        let (status, mut answer) = match render_now(&service, &asked) {
            Ok(answer) => (StatusCode::OK, answer),
            Err((status, answer)) => (status, answer),
        };
        answer["elapsed_ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
        (status, answer)
    })
    .await;
    match answer {
        Ok((status, answer)) => no_store(HttpResponse::build(status)).json(answer),
        Err(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the render failed unexpectedly",
        ),
    }
}

type Refused = (StatusCode, Value);

fn refused(status: StatusCode, message: &str) -> Refused {
    (status, json!({ "status": "error", "error": message }))
}

fn render_now(service: &Service, asked: &RenderRequest) -> Result<Value, Refused> {
    let route = match &asked.route {
        Some(name) => Some(
            service
                .route(name)
                .ok_or_else(|| refused(StatusCode::BAD_REQUEST, &format!("no route named {name:?}")))?,
        ),
        None => None,
    };
    let payload = match (&asked.payload, &asked.sample) {
        (Some(_), Some(_)) => {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "give a payload or a sample, not both",
            ));
        }
        (None, None) => return Err(refused(StatusCode::BAD_REQUEST, "give a payload or a sample")),
        (None, Some(name)) => service
            .samples(route)
            .into_iter()
            .find(|sample| sample.name == name)
            .map(|sample| sample.payload)
            .ok_or_else(|| refused(StatusCode::BAD_REQUEST, &format!("no sample named {name:?}")))?,
        (Some(given), None) => {
            let text = match given {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let max = service.config.server.max_body_bytes;
            if text.len() > max {
                return Err(refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "the payload is {} bytes, over server.max_body_bytes ({max})",
                        text.len()
                    ),
                ));
            }
            WebhookPayload::parse(text.as_bytes())
                .map_err(|e| refused(StatusCode::BAD_REQUEST, &e.to_string()))?
        }
    };
    let route_name = asked.route.as_deref();
    let (previews, edited) = match &asked.template {
        None => (service.preview(&payload, route_name), false),
        Some(template) => {
            let msgtype = MsgType::ALL
                .into_iter()
                .find(|t| t.as_str() == template.msgtype)
                .ok_or_else(|| {
                    refused(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "no msgtype {:?} (text, markdown, markdown_v2, textcard, template_card)",
                            template.msgtype
                        ),
                    )
                })?;
            let edited = EditedTemplate {
                msgtype,
                source: &template.source,
            };
            match service.preview_edited(&payload, route_name, edited) {
                Ok(previews) => (previews, true),
                Err(PreviewError::Template(message)) => {
                    return Err((
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({ "status": "error", "error": message, "error_at": location(&message) }),
                    ))
                }
                Err(other) => return Err(refused(StatusCode::BAD_REQUEST, &other.to_string())),
            }
        }
    };
    let plan = service.router.plan(&payload.alerts);
    let mut reached: Vec<&str> = plan.notifications.iter().map(|n| n.route.name.as_str()).collect();
    reached.dedup();
    let notice = match (route, previews.is_empty()) {
        (Some(route), true) => Some(format!(
            "no alert of this payload reaches route {:?}{}; the samples are adapted to the chosen route, a pasted payload is routed as it is",
            route.name,
            if reached.is_empty() {
                " (they match no route)".to_string()
            } else {
                format!(" (they go to {})", reached.join(", "))
            }
        )),
        (None, true) => Some("no alert of this payload matches a route".to_string()),
        _ => None,
    };
    let previews: Vec<Value> = previews
        .iter()
        .map(|preview| describe(service, preview, edited))
        .collect();
    Ok(json!({
        "status": "ok",
        "payload": payload,
        "previews": previews,
        "routed": reached,
        "unrouted": plan.unrouted.len(),
        "notice": notice,
    }))
}

/// A preview with its fields' sizes against their limits and its error's location.
fn describe(service: &Service, preview: &Preview, edited: bool) -> Value {
    let mut value = serde_json::to_value(preview).unwrap_or_default();
    let msgtype = MsgType::ALL.into_iter().find(|t| t.as_str() == preview.msgtype);
    let route = service.route(&preview.route);
    let content = preview
        .requests
        .first()
        .and_then(|body| body.get(preview.msgtype))
        .cloned()
        .unwrap_or(Value::Null);
    let fields: Vec<Value> = match (msgtype, route) {
        (Some(msgtype), Some(route)) => limits(service, route, msgtype)
            .into_iter()
            .map(|(field, limit, unit)| {
                let text = field_text(&content, &field);
                let size = if unit == "B" {
                    text.len()
                } else {
                    text.chars().count()
                };
                json!({
                    "field": field, "size": size, "limit": limit, "unit": unit,
                    "cut": text.contains(CUT_MARKER),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    value["fields"] = json!(fields);
    value["edited"] = json!(edited);
    if let Some(error) = &preview.error {
        value["error_at"] = json!(location(error));
    }
    value
}

/// The text of `field` (`description`, `main_title.title`) in a msgtype's object.
fn field_text(content: &Value, field: &str) -> String {
    let value = field.split('.').fold(content, |value, key| &value[key]);
    value.as_str().unwrap_or_default().to_string()
}

/// Where a template error is, from its message (`FILE:LINE:COLUMN: …`, `errors.rs`);
/// `edited` when it is in the template being edited.
fn location(message: &str) -> Option<Value> {
    static AT: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| Regex::new(r"(?:^|: )([^:\n]+):(\d+):(\d+): ").expect("a valid regex"));
    let found = at.captures(message)?;
    let file = found[1].to_string();
    Some(json!({
        "edited": file == EDITED_FILE,
        "file": file,
        "line": found[2].parse::<usize>().ok()?,
        "column": found[3].parse::<usize>().ok()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_errors_location_is_read_from_its_message() {
        let at =
            location("route \"db\", template \"x\": edited template:3:7: not valid handlebars here\n 3 | …")
                .unwrap();
        assert_eq!(
            at,
            json!({"edited": true, "file": "edited template", "line": 3, "column": 7})
        );
        let at = location("built-in template textcard:2:1: boom").unwrap();
        assert_eq!(at["file"], "built-in template textcard");
        assert_eq!(at["edited"], false);
        assert!(location("no route named \"x\"").is_none());
    }
}
