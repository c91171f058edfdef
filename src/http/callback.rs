//! `GET`/`POST /wecom/callback/{app}`: where WeCom calls an app back (URL verification and
//! clicks on cards). Authenticated by WeCom's signature, not by `server.auth` (WeCom sends
//! no credentials of ours); answered at once, whatever the click then does, because WeCom
//! waits only 5 s before delivering it again.

use actix_web::{web, HttpResponse};

use crate::service::{CallbackQuery, CallbackRefusal, Runtime};

/// Callbacks are small XML envelopes; anything bigger is not WeCom.
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024;

pub(super) async fn verify_url(
    app: web::Path<String>,
    query: web::Query<CallbackQuery>,
    runtime: web::Data<Runtime>,
) -> HttpResponse {
    match runtime.service().verify_callback_url(&app, &query) {
        // WeCom expects the plaintext alone, no quotes, no newline.
        Ok(echo) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(echo),
        Err(refusal) => refused(&refusal),
    }
}

pub(super) async fn receive(
    app: web::Path<String>,
    query: web::Query<CallbackQuery>,
    body: web::Bytes,
    runtime: web::Data<Runtime>,
) -> HttpResponse {
    match runtime.service().receive_callback(&app, &query, &body).await {
        // An empty body is WeCom's "received, nothing to reply".
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(""),
        Err(refusal) => refused(&refusal),
    }
}

fn refused(refusal: &CallbackRefusal) -> HttpResponse {
    let reply = format!("{refusal}\n");
    match refusal {
        CallbackRefusal::UnknownApp(_) => HttpResponse::NotFound().body(reply),
        CallbackRefusal::Invalid(_) => HttpResponse::Forbidden().body(reply),
    }
}
