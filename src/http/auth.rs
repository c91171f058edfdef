//! Inbound authentication: the bearer token or basic-auth credentials Alertmanager sends
//! (`http_config.authorization` / `basic_auth`), compared in constant time.

use actix_web::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use actix_web_httpauth::headers::authorization::{Basic, Bearer, Scheme};
use log::warn;
use subtle::ConstantTimeEq;

use crate::config::AuthSettings;

const REALM: &str = "alertmanager-wecom";

/// `None` when the request may proceed; otherwise the 401 to answer.
pub fn refusal(settings: &AuthSettings, request: &HttpRequest) -> Option<HttpResponse> {
    if !settings.is_enabled() || is_authorized(settings, request) {
        return None;
    }
    let peer = request
        .peer_addr()
        .map_or_else(|| "unknown".to_string(), |addr| addr.ip().to_string());
    warn!(
        "refused {} {} from {peer}: missing or wrong credentials",
        request.method(),
        request.path()
    );
    let challenge = if settings.bearer_token.is_some() {
        format!("Bearer realm=\"{REALM}\"")
    } else {
        format!("Basic realm=\"{REALM}\"")
    };
    Some(
        HttpResponse::build(StatusCode::UNAUTHORIZED)
            .insert_header((WWW_AUTHENTICATE, challenge))
            .json(serde_json::json!({ "status": "error", "error": "missing or wrong credentials" })),
    )
}

fn is_authorized(settings: &AuthSettings, request: &HttpRequest) -> bool {
    let Some(header) = request.headers().get(AUTHORIZATION) else {
        return false;
    };
    if let Some(expected) = &settings.bearer_token {
        if let Ok(bearer) = Bearer::parse(header) {
            return same(bearer.token(), expected.expose());
        }
    }
    if let Some((username, password)) = &settings.basic_auth {
        if let Ok(basic) = Basic::parse(header) {
            // Evaluate both comparisons, so timing does not reveal which one failed.
            let user_ok = same(basic.user_id(), username);
            let password_ok = same(basic.password().unwrap_or(""), password.expose());
            return user_ok & password_ok;
        }
    }
    false
}

fn same(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use actix_web::test::TestRequest;

    fn settings() -> AuthSettings {
        AuthSettings {
            bearer_token: Some(Secret::new("TESTSECRET-token")),
            basic_auth: Some(("am".into(), Secret::new("TESTSECRET-pw"))),
            ..AuthSettings::default()
        }
    }

    fn with_header(value: &str) -> HttpRequest {
        TestRequest::default()
            .insert_header((AUTHORIZATION, value))
            .to_http_request()
    }

    #[test]
    fn the_right_bearer_token_or_basic_credentials_are_let_in() {
        assert!(refusal(&settings(), &with_header("Bearer TESTSECRET-token")).is_none());
        // am:TESTSECRET-pw
        assert!(refusal(&settings(), &with_header("Basic YW06VEVTVFNFQ1JFVC1wdw==")).is_none());
    }

    #[test]
    fn anything_else_is_refused_with_a_challenge() {
        for header in [
            "Bearer TESTSECRET-toke",
            "Bearer TESTSECRET-token-and-more",
            "Bearer ",
            "Basic YW06d3Jvbmc=", // am:wrong
            "Token TESTSECRET-token",
            "",
        ] {
            let response = refusal(&settings(), &with_header(header)).unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
            assert!(response.headers().contains_key(WWW_AUTHENTICATE));
        }
        let no_header = TestRequest::default().to_http_request();
        assert!(refusal(&settings(), &no_header).is_some());
    }

    #[test]
    fn without_configured_credentials_everyone_is_let_in() {
        let open = TestRequest::default().to_http_request();
        assert!(refusal(&AuthSettings::default(), &open).is_none());
    }
}
