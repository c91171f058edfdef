//! The Alertmanager API v2 calls a silence button needs: create a silence of literal
//! equality matchers, and list silences so that a second click can find the one the first
//! made. Field names, validation and answers follow Alertmanager's OpenAPI spec
//! (`api/v2/openapi.yaml`) and its handlers (`api/v2/api.go`, `silence/silence.go`).
//!
//! Every failure is classified once here, because the card that answers a click, the
//! metric and the decision to let the user click again all need the same verdict.
//! Credentials travel only in the `Authorization` header: never in the URL (rejected), an
//! error, a log line or `Debug`.

use std::fmt;
use std::time::Duration;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// How we prove ourselves to Alertmanager, or to the proxy in front of it (Alertmanager
/// itself checks only with `--web.config.file`).
#[derive(Debug, Clone)]
pub enum AlertmanagerAuth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

/// A silence to create: every matcher is `name="value"`, matched literally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSilence {
    pub matchers: Vec<(String, String)>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
}

/// A silence as Alertmanager reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub id: String,
    /// `active`, `pending` or `expired`.
    pub state: String,
    pub matchers: Vec<SilenceMatcher>,
    pub created_by: String,
    pub comment: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    pub is_equal: bool,
}

impl Silence {
    /// Whether this silence is exactly the literal matchers given, in any order: the test
    /// for "this click was already done", so a silence with more matchers (silencing
    /// less) or a regex one does not count.
    pub fn has_exactly(&self, matchers: &[(String, String)]) -> bool {
        let mut ours: Vec<(&str, &str)> = matchers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut theirs = Vec::with_capacity(self.matchers.len());
        for m in &self.matchers {
            if m.is_regex || !m.is_equal {
                return false;
            }
            theirs.push((m.name.as_str(), m.value.as_str()));
        }
        ours.sort_unstable();
        ours.dedup();
        theirs.sort_unstable();
        theirs.dedup();
        ours == theirs
    }
}

/// A failed call to Alertmanager. Holds URLs (never with credentials, which `new` refuses
/// in a URL) and Alertmanager's own words, never a header.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// No answer: connection refused, DNS, TLS, a timeout, a connection dropped mid-answer.
    #[error("Alertmanager at {url} unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    /// 401 or 403, from Alertmanager's web config or the proxy in front of it.
    #[error("Alertmanager refused our credentials (HTTP {status})")]
    Unauthorized { status: u16 },
    /// Any other 4xx (and a redirect, which we do not follow): the request itself was
    /// refused, and sending it again gets the same answer.
    #[error("Alertmanager refused the silence (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// 5xx, or a proxy saying it is overloaded (408, 429).
    #[error("Alertmanager unavailable (HTTP {status})")]
    Unavailable { status: u16 },
    #[error("unreadable answer from Alertmanager: {0}")]
    BadAnswer(String),
    #[error("invalid Alertmanager URL: {0}")]
    InvalidUrl(String),
}

impl SilenceError {
    /// A short, fixed reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SilenceError::Unreachable { .. } => "unreachable",
            SilenceError::Unauthorized { .. } => "unauthorized",
            SilenceError::Refused { .. } => "refused",
            SilenceError::Unavailable { .. } => "unavailable",
            SilenceError::BadAnswer(_) => "bad_answer",
            SilenceError::InvalidUrl(_) => "invalid_url",
        }
    }

    /// What the card tells the person who clicked: short enough for one line, and
    /// without details only an operator can act on (those go to the log).
    pub fn card_text(&self) -> &'static str {
        match self {
            SilenceError::Unreachable { .. } => "Alertmanager 不可达",
            SilenceError::Unauthorized { .. } => "无权限",
            SilenceError::Refused { .. } => "Alertmanager 拒绝",
            SilenceError::Unavailable { .. } => "Alertmanager 不可用",
            SilenceError::BadAnswer(_) => "Alertmanager 异常",
            SilenceError::InvalidUrl(_) => "地址配置错误",
        }
    }

    /// Whether a second click may work without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SilenceError::Unreachable { .. } | SilenceError::Unavailable { .. }
        )
    }
}

/// Alertmanager's explanation of a refusal is cut to this many characters: enough for its
/// messages ("invalid label matcher 0: invalid label name \"…\""), short enough for a log
/// line even when a proxy answers with an HTML page.
const MESSAGE_CHARS: usize = 200;

/// How much of a refusal's body is read: the explanation is at its start.
const ERROR_BODY_BYTES: usize = 4096;

/// A client for one Alertmanager (one connection pool, one timeout per call).
#[derive(Clone)]
pub struct AlertmanagerClient {
    http: reqwest::Client,
    base: String,
    /// `{base}api/v2/silences`, parsed once.
    silences_url: reqwest::Url,
    auth: AlertmanagerAuth,
    timeout: Duration,
}

impl fmt::Debug for AlertmanagerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The derived form would print reqwest's client; the auth prints `<redacted>`.
        f.debug_struct("AlertmanagerClient")
            .field("base_url", &self.base)
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AlertmanagerClient {
    /// `base_url` is Alertmanager's external URL, path prefix included
    /// (`http://am.example/alertmanager/`); a missing final `/` is added, since without
    /// it the prefix's last segment would be replaced instead of kept.
    pub fn new(
        base_url: &str,
        auth: AlertmanagerAuth,
        timeout: Duration,
    ) -> Result<AlertmanagerClient, SilenceError> {
        let mut base = reqwest::Url::parse(base_url.trim())
            // The input is not echoed: where a credential sits in a string that is not a
            // URL cannot be known.
            .map_err(|e| SilenceError::InvalidUrl(format!("not an absolute URL ({e})")))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(SilenceError::InvalidUrl(format!(
                "scheme {:?} is not http or https",
                base.scheme()
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(SilenceError::InvalidUrl(format!(
                "{} carries credentials; configure them as basic auth instead",
                without_credentials(&base)
            )));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(SilenceError::InvalidUrl(format!(
                "{} has a query or fragment, which API paths cannot keep",
                without_credentials(&base)
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let silences_url = base
            .join("api/v2/silences")
            .map_err(|e| SilenceError::InvalidUrl(format!("{base} + api/v2/silences: {e}")))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("alertmanager-wecom/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirected POST comes back as a GET (which lists silences instead of
            // creating one), and the credentials would follow it; a redirect means the
            // configured URL is wrong, so it is reported, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the TLS backend initialises");
        Ok(AlertmanagerClient {
            http,
            base: base.into(),
            silences_url,
            auth,
            timeout,
        })
    }

    /// The normalised base URL, ending in `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST api/v2/silences`: creates the silence and answers its ID. Alertmanager moves
    /// a start in the past to the moment it receives the silence.
    pub async fn create_silence(&self, silence: &NewSilence) -> Result<String, SilenceError> {
        let body = PostableSilence {
            matchers: silence
                .matchers
                .iter()
                .map(|(name, value)| WireMatcher {
                    name,
                    value,
                    is_regex: false,
                    is_equal: true,
                })
                .collect(),
            starts_at: wire_time(silence.starts_at),
            ends_at: wire_time(silence.ends_at),
            created_by: &silence.created_by,
            comment: &silence.comment,
        };
        let request = self.http.post(self.silences_url.clone()).json(&body);
        let answer = self.call(request).await?;
        let created: Created = serde_json::from_slice(&answer)
            .map_err(|e| SilenceError::BadAnswer(format!("not a created-silence answer ({e})")))?;
        if created.silence_id.is_empty() {
            return Err(SilenceError::BadAnswer("an empty silenceID".into()));
        }
        Ok(created.silence_id)
    }

    /// `GET api/v2/silences`: every silence Alertmanager holds, expired ones included
    /// (it keeps them for `--data.retention`, 5 days by default).
    pub async fn silences(&self) -> Result<Vec<Silence>, SilenceError> {
        self.list(&[]).await
    }

    /// The active silence that is exactly these literal matchers, if there is one (the
    /// one ending last if several are): a click on a card already acted on finds the
    /// silence the first click made instead of stacking another.
    pub async fn find_active(&self, matchers: &[(String, String)]) -> Result<Option<Silence>, SilenceError> {
        // Alertmanager keeps only the silences holding each filter's matcher, same type
        // and value; names its filter syntax cannot spell are left to the check below.
        let filters: Vec<String> = matchers
            .iter()
            .filter_map(|(name, value)| filter_expression(name, value))
            .collect();
        let found = self.list(&filters).await?;
        Ok(found
            .into_iter()
            .filter(|s| s.state == "active" && s.has_exactly(matchers))
            .max_by_key(|s| s.ends_at))
    }

    async fn list(&self, filters: &[String]) -> Result<Vec<Silence>, SilenceError> {
        let mut request = self.http.get(self.silences_url.clone());
        for filter in filters {
            request = request.query(&[("filter", filter)]);
        }
        let answer = self.call(request).await?;
        let listed: Vec<GettableSilence> = serde_json::from_slice(&answer)
            .map_err(|e| SilenceError::BadAnswer(format!("not a list of silences ({e})")))?;
        Ok(listed.into_iter().map(Silence::from).collect())
    }

    /// Sends a request with our credentials and classifies the answer; a 2xx answers its
    /// body.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, SilenceError> {
        let request = match &self.auth {
            AlertmanagerAuth::None => request,
            AlertmanagerAuth::Bearer(token) => request.bearer_auth(token.expose()),
            AlertmanagerAuth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
        };
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let code = status.as_u16();
        match code {
            200..=299 => {
                let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
                Ok(body.to_vec())
            }
            401 | 403 => Err(SilenceError::Unauthorized { status: code }),
            408 | 429 | 500..=599 => Err(SilenceError::Unavailable { status: code }),
            300..=399 => {
                let to = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| self.silences_url.join(l).ok())
                    .map(|l| without_credentials(&l))
                    .unwrap_or_else(|| "an unnamed place".into());
                Err(SilenceError::Refused {
                    status: code,
                    message: format!("redirected to {to}; configure the URL it redirects to"),
                })
            }
            400..=499 => {
                let body = self.error_body(response).await;
                Err(SilenceError::Refused {
                    status: code,
                    message: self.scrub(&explanation(&body)),
                })
            }
            _ => Err(SilenceError::BadAnswer(format!("HTTP status {code}"))),
        }
    }

    /// The start of a refusal's body; a body that breaks off is explanation enough.
    async fn error_body(&self, mut response: reqwest::Response) -> Vec<u8> {
        let mut body = Vec::new();
        while body.len() < ERROR_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(ERROR_BODY_BYTES);
        body
    }

    fn unreachable(&self, error: reqwest::Error) -> SilenceError {
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        let url = error
            .url()
            .map(without_credentials)
            .unwrap_or_else(|| without_credentials(&self.silences_url));
        let error = error.without_url();
        let mut detail = format!("{kind}: {error}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        SilenceError::Unreachable {
            url,
            detail: self.scrub(&detail),
        }
    }

    /// Removes our credentials from text a server wrote, in case a proxy echoes a request
    /// header back.
    fn scrub(&self, text: &str) -> String {
        let (secret, header) = match &self.auth {
            AlertmanagerAuth::None => return text.to_string(),
            AlertmanagerAuth::Bearer(token) => (token, None),
            AlertmanagerAuth::Basic { username, password } => {
                let header = BASE64_STANDARD.encode(format!("{username}:{}", password.expose()));
                (password, Some(header))
            }
        };
        let mut text = text.to_string();
        for credential in [Some(secret.expose()), header.as_deref()].into_iter().flatten() {
            if !credential.is_empty() {
                text = text.replace(credential, "<redacted>");
            }
        }
        text
    }
}

/// A URL as it may appear in an error: scheme, host, port and path.
fn without_credentials(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

/// Alertmanager writes times back with milliseconds (go-openapi's `strfmt.DateTime`) and
/// in the offset they came with; UTC at that precision makes a silence read back equal to
/// the one sent.
fn wire_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What a 4xx body says. Alertmanager's handlers answer a JSON string; its request
/// validation (a missing field, an empty matcher list) answers `{"code":…,"message":…}`;
/// a proxy answers text or HTML.
fn explanation(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::String(message)) => message,
        Ok(serde_json::Value::Object(object)) => match object.get("message") {
            Some(serde_json::Value::String(message)) => message.clone(),
            _ => String::from_utf8_lossy(body).into_owned(),
        },
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    // One line for a log, cut on a character boundary.
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return "no explanation given".into();
    }
    let mut chars = line.chars();
    let mut cut: String = chars.by_ref().take(MESSAGE_CHARS).collect();
    if chars.next().is_some() {
        cut.push('…');
    }
    cut
}

/// `name="value"` in the filter syntax both of Alertmanager's matcher parsers read (the
/// classic one, and the UTF-8 one of newer releases), or `None` for a name that is not a
/// classic label name, which the classic parser refuses.
fn filter_expression(name: &str, value: &str) -> Option<String> {
    let mut chars = name.chars();
    let classic = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !classic {
        return None;
    }
    let mut out = String::with_capacity(name.len() + value.len() + 4);
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    Some(out)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence<'a> {
    matchers: Vec<WireMatcher<'a>>,
    starts_at: String,
    ends_at: String,
    created_by: &'a str,
    comment: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireMatcher<'a> {
    name: &'a str,
    value: &'a str,
    is_regex: bool,
    is_equal: bool,
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "silenceID")]
    silence_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableSilence {
    id: String,
    status: GettableStatus,
    matchers: Vec<GettableMatcher>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct GettableStatus {
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableMatcher {
    name: String,
    value: String,
    is_regex: bool,
    /// The spec's default: Alertmanager before 0.22 did not write it.
    #[serde(default = "default_is_equal")]
    is_equal: bool,
}

fn default_is_equal() -> bool {
    true
}

impl From<GettableSilence> for Silence {
    fn from(s: GettableSilence) -> Silence {
        Silence {
            id: s.id,
            state: s.status.state,
            matchers: s
                .matchers
                .into_iter()
                .map(|m| SilenceMatcher {
                    name: m.name,
                    value: m.value,
                    is_regex: m.is_regex,
                    is_equal: m.is_equal,
                })
                .collect(),
            created_by: s.created_by,
            comment: s.comment,
            starts_at: s.starts_at,
            ends_at: s.ends_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use chrono::TimeZone;
    use serde_json::{json, Value};

    use super::*;

    /// One request as the stand-in Alertmanager received it.
    #[derive(Debug, Clone)]
    struct Received {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).expect("a JSON body")
        }
    }

    /// A stand-in Alertmanager on a loopback port: answers every request the same way and
    /// records what it received. Plain threads and sockets, so that what goes over the
    /// wire is exactly what the test wrote.
    struct Stub {
        url: String,
        received: Arc<Mutex<Vec<Received>>>,
    }

    impl Stub {
        fn new(status: u16, body: &str) -> Stub {
            Stub::with_headers(status, &[("Content-Type", "application/json")], body)
        }

        fn with_headers(status: u16, headers: &[(&str, &str)], body: &str) -> Stub {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/", listener.local_addr().unwrap());
            let mut answer = format!("HTTP/1.1 {status} Whatever\r\n");
            for (name, value) in headers {
                answer.push_str(&format!("{name}: {value}\r\n"));
            }
            answer.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ));
            let received = Arc::new(Mutex::new(Vec::new()));
            let record = received.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let mut stream = stream.unwrap();
                    if let Some(request) = read_request(&mut stream) {
                        record.lock().unwrap().push(request);
                    }
                    let _ = stream.write_all(answer.as_bytes());
                }
            });
            Stub { url, received }
        }

        fn only_request(&self) -> Received {
            let received = self.received.lock().unwrap();
            assert_eq!(received.len(), 1, "{received:?}");
            received[0].clone()
        }
    }

    fn read_request(stream: &mut TcpStream) -> Option<Received> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap().split(' ');
        let method = request_line.next().unwrap().to_string();
        let target = request_line.next().unwrap().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Received {
            method,
            target,
            headers,
            body,
        })
    }

    fn client(url: &str, auth: AlertmanagerAuth) -> AlertmanagerClient {
        AlertmanagerClient::new(url, auth, Duration::from_secs(5)).unwrap()
    }

    fn new_silence() -> NewSilence {
        NewSilence {
            matchers: vec![
                ("alertname".into(), "DiskFull".into()),
                ("path".into(), "/api/v1/(users|orders)".into()),
            ],
            starts_at: Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, 0).unwrap()
                + chrono::Duration::nanoseconds(123_456_789),
            ends_at: Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 0).unwrap(),
            created_by: "zhangsan (WeCom)".into(),
            comment: "静默 2 小时，来自企业微信卡片".into(),
        }
    }

    const CREATED: &str = r#"{"silenceID":"3aef5fa3-cd54-41f6-a193-29ade75a323f"}"#;

    #[tokio::test]
    async fn a_silence_is_posted_as_literal_equality_matchers_with_utc_millisecond_times() {
        let stub = Stub::new(200, CREATED);
        let id = client(&stub.url, AlertmanagerAuth::None)
            .create_silence(&new_silence())
            .await
            .unwrap();
        assert_eq!(id, "3aef5fa3-cd54-41f6-a193-29ade75a323f");

        let request = stub.only_request();
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/api/v2/silences");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.header("user-agent"),
            Some(concat!("alertmanager-wecom/", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(request.header("authorization"), None);
        assert_eq!(
            request.json(),
            json!({
                "matchers": [
                    {"name": "alertname", "value": "DiskFull", "isRegex": false, "isEqual": true},
                    {"name": "path", "value": "/api/v1/(users|orders)", "isRegex": false, "isEqual": true},
                ],
                "startsAt": "2030-01-01T08:00:00.123Z",
                "endsAt": "2030-01-01T10:00:00.000Z",
                "createdBy": "zhangsan (WeCom)",
                "comment": "静默 2 小时，来自企业微信卡片",
            })
        );
    }

    #[tokio::test]
    async fn a_path_prefix_is_kept_with_or_without_its_final_slash() {
        for prefix in ["alertmanager", "alertmanager/"] {
            let stub = Stub::new(200, CREATED);
            let client = client(&format!("{}{prefix}", stub.url), AlertmanagerAuth::None);
            assert_eq!(client.base_url(), format!("{}alertmanager/", stub.url));
            client.create_silence(&new_silence()).await.unwrap();
            assert_eq!(stub.only_request().target, "/alertmanager/api/v2/silences");
        }
        let stub = Stub::new(200, CREATED);
        assert_eq!(
            client(stub.url.trim_end_matches('/'), AlertmanagerAuth::None).base_url(),
            stub.url
        );
    }

    #[tokio::test]
    async fn bearer_and_basic_credentials_go_in_the_authorization_header() {
        let stub = Stub::new(200, CREATED);
        client(&stub.url, AlertmanagerAuth::Bearer(Secret::new("t0ken")))
            .create_silence(&new_silence())
            .await
            .unwrap();
        assert_eq!(stub.only_request().header("authorization"), Some("Bearer t0ken"));

        let stub = Stub::new(200, "[]");
        let auth = AlertmanagerAuth::Basic {
            username: "alice".into(),
            password: Secret::new("s3cret"),
        };
        client(&stub.url, auth).silences().await.unwrap();
        let request = stub.only_request();
        // base64("alice:s3cret")
        assert_eq!(request.header("authorization"), Some("Basic YWxpY2U6czNjcmV0"));
        assert!(!request.target.contains("s3cret"), "{}", request.target);
    }

    /// The shape Alertmanager 0.25 answers, plus what other releases add or omit: an
    /// `annotations` field (newer), no `isEqual` (before 0.22), an end time in the offset
    /// it was posted with.
    const LISTED: &str = r#"[
        {"id": "3aef5fa3-cd54-41f6-a193-29ade75a323f", "status": {"state": "active"},
         "updatedAt": "2026-12-02T02:06:26.365Z", "comment": "静默", "createdBy": "zhangsan",
         "endsAt": "2030-01-01T18:00:00.000+08:00", "annotations": {},
         "matchers": [{"isEqual": true, "isRegex": false, "name": "path", "value": "/api/v1/(users|orders)"}],
         "startsAt": "2030-01-01T08:00:00.123Z"},
        {"id": "89d979f8-a602-4eb6-8d03-3e8663268ce9", "status": {"state": "expired"},
         "updatedAt": "2026-12-02T02:06:26.462Z", "comment": "", "createdBy": "",
         "endsAt": "2026-12-02T03:06:26.000Z",
         "matchers": [{"isRegex": true, "name": "job", "value": "node.*"},
                      {"isEqual": false, "isRegex": false, "name": "env", "value": "dev"}],
         "startsAt": "2026-12-02T02:06:26.462Z"}
    ]"#;

    #[tokio::test]
    async fn listed_silences_are_parsed() {
        let stub = Stub::new(200, LISTED);
        let silences = client(&stub.url, AlertmanagerAuth::None)
            .silences()
            .await
            .unwrap();
        let request = stub.only_request();
        assert_eq!(
            (request.method.as_str(), request.target.as_str()),
            ("GET", "/api/v2/silences")
        );
        assert_eq!(
            silences,
            vec![
                Silence {
                    id: "3aef5fa3-cd54-41f6-a193-29ade75a323f".into(),
                    state: "active".into(),
                    matchers: vec![SilenceMatcher {
                        name: "path".into(),
                        value: "/api/v1/(users|orders)".into(),
                        is_regex: false,
                        is_equal: true,
                    }],
                    created_by: "zhangsan".into(),
                    comment: "静默".into(),
                    starts_at: Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, 0).unwrap()
                        + chrono::Duration::milliseconds(123),
                    ends_at: Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 0).unwrap(),
                },
                Silence {
                    id: "89d979f8-a602-4eb6-8d03-3e8663268ce9".into(),
                    state: "expired".into(),
                    matchers: vec![
                        SilenceMatcher {
                            name: "job".into(),
                            value: "node.*".into(),
                            is_regex: true,
                            is_equal: true,
                        },
                        SilenceMatcher {
                            name: "env".into(),
                            value: "dev".into(),
                            is_regex: false,
                            is_equal: false,
                        },
                    ],
                    created_by: String::new(),
                    comment: String::new(),
                    starts_at: Utc.with_ymd_and_hms(2026, 12, 2, 2, 6, 26).unwrap()
                        + chrono::Duration::milliseconds(462),
                    ends_at: Utc.with_ymd_and_hms(2026, 12, 2, 3, 6, 26).unwrap(),
                },
            ]
        );
    }

    #[tokio::test]
    async fn find_active_filters_on_each_matcher_and_wants_exactly_them() {
        let at = |hour| Utc.with_ymd_and_hms(2030, 1, 1, hour, 0, 0).unwrap().to_rfc3339();
        let silence = |id: &str, state: &str, ends: String, matchers: Value| {
            json!({"id": id, "status": {"state": state}, "updatedAt": at(0), "comment": "",
                   "createdBy": "", "startsAt": at(0), "endsAt": ends, "matchers": matchers})
        };
        let literal = |name: &str, value: &str| json!({"name": name, "value": value, "isRegex": false, "isEqual": true});
        let ours = json!([literal("path", "/a\"b\\c"), literal("team", "支付")]);
        let listed = json!([
            silence("expired", "expired", at(9), ours.clone()),
            silence(
                "wider",
                "active",
                at(9),
                json!([
                    literal("team", "支付"),
                    literal("path", "/a\"b\\c"),
                    literal("x", "y")
                ])
            ),
            silence("early", "active", at(3), ours.clone()),
            silence(
                "late",
                "active",
                at(5),
                json!([literal("team", "支付"), literal("path", "/a\"b\\c")])
            ),
            silence("pending", "pending", at(9), ours),
        ]);
        let stub = Stub::new(200, &listed.to_string());
        let matchers = vec![
            ("path".to_string(), "/a\"b\\c".to_string()),
            ("team".to_string(), "支付".to_string()),
            ("team-name".to_string(), "x".to_string()),
        ];
        let found = client(&stub.url, AlertmanagerAuth::None)
            .find_active(&matchers[..2])
            .await
            .unwrap()
            .expect("an active silence");
        assert_eq!(found.id, "late");

        let target = stub.only_request().target;
        let query = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
        let filters: Vec<String> = query
            .query_pairs()
            .filter(|(k, _)| k == "filter")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(filters, [r#"path="/a\"b\\c""#, r#"team="支付""#]);

        // A name the filter syntax cannot spell is only checked on our side.
        let stub = Stub::new(200, &listed.to_string());
        let found = client(&stub.url, AlertmanagerAuth::None)
            .find_active(&matchers)
            .await
            .unwrap();
        assert_eq!(found, None);
        assert!(!stub.only_request().target.contains("team-name"));
    }

    #[tokio::test]
    async fn a_refusal_carries_alertmanagers_explanation() {
        let cases = [
            // Its handlers answer a JSON string…
            (
                400,
                r#""Failed to create silence: start time must be before end time""#,
                "Failed to create silence: start time must be before end time",
            ),
            // …its request validation an object…
            (
                422,
                r#"{"code":612,"message":"matchers in body should have at least 1 items"}"#,
                "matchers in body should have at least 1 items",
            ),
            // …and a proxy anything.
            (404, "404 page not found\n", "404 page not found"),
            (400, "", "no explanation given"),
        ];
        for (status, body, message) in cases {
            let stub = Stub::with_headers(status, &[("Content-Type", "text/plain")], body);
            let error = client(&stub.url, AlertmanagerAuth::None)
                .create_silence(&new_silence())
                .await
                .unwrap_err();
            match &error {
                SilenceError::Refused {
                    status: s,
                    message: m,
                } => {
                    assert_eq!((*s, m.as_str()), (status, message));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(error.reason(), "refused");
            assert!(!error.is_retryable());
        }
    }

    #[tokio::test]
    async fn a_long_explanation_is_cut_to_one_short_line() {
        let body = format!("<html>\n<body>{}</body></html>", "拒".repeat(1000));
        let stub = Stub::with_headers(400, &[("Content-Type", "text/html")], &body);
        let error = client(&stub.url, AlertmanagerAuth::None)
            .silences()
            .await
            .unwrap_err();
        let SilenceError::Refused { message, .. } = error else {
            panic!("{error:?}");
        };
        assert_eq!(message.chars().count(), MESSAGE_CHARS + 1, "{message}");
        assert!(message.starts_with("<html> <body>拒拒"), "{message}");
        assert!(message.ends_with('…'));
    }

    #[tokio::test]
    async fn statuses_are_classified() {
        let cases = [
            (401, "unauthorized", false),
            (403, "unauthorized", false),
            (429, "unavailable", true),
            (500, "unavailable", true),
            (502, "unavailable", true),
            (503, "unavailable", true),
        ];
        for (status, reason, retryable) in cases {
            let stub = Stub::new(status, r#""go away""#);
            let error = client(&stub.url, AlertmanagerAuth::None)
                .create_silence(&new_silence())
                .await
                .unwrap_err();
            assert_eq!(
                (error.reason(), error.is_retryable()),
                (reason, retryable),
                "{status}: {error:?}"
            );
            match error {
                SilenceError::Unauthorized { status: s } | SilenceError::Unavailable { status: s } => {
                    assert_eq!(s, status);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_redirect_is_reported_not_followed() {
        let stub = Stub::with_headers(
            301,
            &[("Location", "https://am.example/alertmanager/api/v2/silences?x=1")],
            "",
        );
        let error = client(&stub.url, AlertmanagerAuth::None)
            .create_silence(&new_silence())
            .await
            .unwrap_err();
        let SilenceError::Refused { status: 301, message } = &error else {
            panic!("{error:?}");
        };
        assert!(
            message.contains("https://am.example/alertmanager/api/v2/silences;"),
            "{message}"
        );
        assert_eq!(stub.received.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/am/");
        let error = client(&url, AlertmanagerAuth::None)
            .create_silence(&new_silence())
            .await
            .unwrap_err();
        let SilenceError::Unreachable { url: at, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(at, &format!("{url}api/v2/silences"));
        assert_eq!((error.reason(), error.is_retryable()), ("unreachable", true));
        assert!(error.to_string().contains("connection failed"), "{error}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_unreachable_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                // Reads until the client gives up and closes, never answering.
                let mut stream = stream.unwrap();
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
            }
        });
        let client =
            AlertmanagerClient::new(&url, AlertmanagerAuth::None, Duration::from_millis(300)).unwrap();
        let started = Instant::now();
        let error = client.create_silence(&new_silence()).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert!(matches!(error, SilenceError::Unreachable { .. }), "{error:?}");
        assert!(error.to_string().contains("timed out"), "{error}");
        assert!(error.is_retryable());
    }

    #[tokio::test]
    async fn an_answer_that_is_not_alertmanagers_is_a_bad_answer() {
        for body in ["<html>hello</html>", "{}", r#"{"silenceID":""}"#, r#"[]"#] {
            let stub = Stub::new(200, body);
            let error = client(&stub.url, AlertmanagerAuth::None)
                .create_silence(&new_silence())
                .await
                .unwrap_err();
            assert!(matches!(error, SilenceError::BadAnswer(_)), "{body}: {error:?}");
            assert_eq!((error.reason(), error.is_retryable()), ("bad_answer", false));
        }
        for body in ["not json", CREATED, r#"[{"id":"x"}]"#] {
            let stub = Stub::new(200, body);
            let error = client(&stub.url, AlertmanagerAuth::None)
                .silences()
                .await
                .unwrap_err();
            assert!(matches!(error, SilenceError::BadAnswer(_)), "{body}: {error:?}");
        }
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        let none = || AlertmanagerAuth::None;
        let timeout = Duration::from_secs(1);
        for (url, problem) in [
            ("not a url", "not an absolute URL"),
            ("am.example:9093", "scheme \"am.example\""),
            ("ftp://am.example/", "scheme \"ftp\""),
            ("http://alice:hunter2@am.example/", "carries credentials"),
            ("http://hunter2@am.example/", "carries credentials"),
            ("http://am.example/?token=hunter2", "query or fragment"),
        ] {
            let error = AlertmanagerClient::new(url, none(), timeout).unwrap_err();
            assert!(matches!(error, SilenceError::InvalidUrl(_)), "{url}: {error:?}");
            assert_eq!(error.reason(), "invalid_url");
            let text = error.to_string();
            assert!(text.contains(problem), "{url}: {text}");
            assert!(
                !text.contains("hunter2") && !format!("{error:?}").contains("hunter2"),
                "{text}"
            );
        }
        let client = AlertmanagerClient::new(" https://am.example:9093 ", none(), timeout).unwrap();
        assert_eq!(client.base_url(), "https://am.example:9093/");
    }

    #[tokio::test]
    async fn credentials_never_show_in_debug_or_errors() {
        let auths = || {
            [
                AlertmanagerAuth::Bearer(Secret::new("hunter2")),
                AlertmanagerAuth::Basic {
                    username: "alice".into(),
                    password: Secret::new("hunter2"),
                },
            ]
        };
        for auth in auths() {
            let client = client("http://127.0.0.1:1/", auth);
            let debug = format!("{client:?}");
            assert!(
                !debug.contains("hunter2") && debug.contains("<redacted>"),
                "{debug}"
            );
        }
        // A proxy echoing the request's header in its refusal.
        for auth in auths() {
            let echo = match &auth {
                AlertmanagerAuth::Basic { .. } => "Authorization: Basic YWxpY2U6aHVudGVyMg== (hunter2)",
                _ => "Authorization: Bearer hunter2",
            };
            for status in [400, 401, 503] {
                let stub = Stub::with_headers(status, &[("Content-Type", "text/plain")], echo);
                let error = client(&stub.url, auth.clone()).silences().await.unwrap_err();
                for text in [error.to_string(), format!("{error:?}")] {
                    assert!(!text.contains("hunter2"), "{text}");
                    assert!(!text.contains("YWxpY2U6aHVudGVyMg"), "{text}");
                }
            }
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let error = client(&format!("http://127.0.0.1:{port}/"), auth.clone())
                .silences()
                .await
                .unwrap_err();
            for text in [error.to_string(), format!("{error:?}")] {
                assert!(!text.contains("hunter2"), "{text}");
            }
        }
    }

    #[test]
    fn card_texts_are_short_and_distinct_per_kind_of_trouble() {
        let errors = [
            SilenceError::Unreachable {
                url: String::new(),
                detail: String::new(),
            },
            SilenceError::Unauthorized { status: 401 },
            SilenceError::Refused {
                status: 400,
                message: String::new(),
            },
            SilenceError::Unavailable { status: 503 },
            SilenceError::BadAnswer(String::new()),
            SilenceError::InvalidUrl(String::new()),
        ];
        let mut texts: Vec<&str> = errors.iter().map(SilenceError::card_text).collect();
        for text in &texts {
            // At most 12 characters of Chinese wide, a Latin letter counting half: one
            // line on a card even on a phone.
            let halves: usize = text.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum();
            assert!(halves <= 24, "{text}");
        }
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), errors.len());
        let reasons: Vec<&str> = errors.iter().map(SilenceError::reason).collect();
        assert_eq!(
            reasons,
            [
                "unreachable",
                "unauthorized",
                "refused",
                "unavailable",
                "bad_answer",
                "invalid_url"
            ]
        );
    }

    #[test]
    fn has_exactly_ignores_order_but_not_extra_or_regex_matchers() {
        let literal = |name: &str, value: &str| SilenceMatcher {
            name: name.into(),
            value: value.into(),
            is_regex: false,
            is_equal: true,
        };
        let mut silence = Silence {
            id: "x".into(),
            state: "active".into(),
            matchers: vec![literal("b", "2"), literal("a", "1")],
            created_by: String::new(),
            comment: String::new(),
            starts_at: Utc::now(),
            ends_at: Utc::now(),
        };
        let ours = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ];
        assert!(silence.has_exactly(&ours));
        assert!(!silence.has_exactly(&ours[..1]));
        silence.matchers[0].is_regex = true;
        assert!(!silence.has_exactly(&ours));
        silence.matchers[0].is_regex = false;
        silence.matchers[0].is_equal = false;
        assert!(!silence.has_exactly(&ours));
    }

    /// A real Alertmanager on a loopback port, stopped when dropped.
    struct RealAlertmanager {
        child: std::process::Child,
        base: String,
        dir: tempfile::TempDir,
    }

    impl Drop for RealAlertmanager {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl RealAlertmanager {
        /// Serves below `/alertmanager/`, as behind a proxy, so that the prefix is tested
        /// against Alertmanager's own routing.
        async fn start(binary: &str) -> RealAlertmanager {
            let dir = tempfile::tempdir().unwrap();
            // `null` unquoted would be YAML's null, which leaves the route without a receiver.
            let config = dir.path().join("alertmanager.yml");
            std::fs::write(
                &config,
                "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
            )
            .unwrap();
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let base = format!("http://127.0.0.1:{port}/alertmanager/");
            let log = std::fs::File::create(dir.path().join("log")).unwrap();
            let child = std::process::Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", dir.path().join("data").display()))
                .arg("--cluster.listen-address=")
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--web.external-url={base}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{binary}: {e}"));
            let mut am = RealAlertmanager { child, base, dir };
            let ready = format!("{}-/ready", am.base);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(response) = reqwest::get(&ready).await {
                    if response.status() == 200 {
                        return am;
                    }
                }
                if let Some(status) = am.child.try_wait().unwrap() {
                    panic!("Alertmanager exited ({status}):\n{}", am.log());
                }
                assert!(Instant::now() < deadline, "Alertmanager not ready:\n{}", am.log());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        }
    }

    /// Whether Alertmanager says a firing alert with these labels is silenced.
    async fn silenced(base: &str, labels: Value) -> bool {
        let http = reqwest::Client::new();
        let posted = http
            .post(format!("{base}api/v2/alerts"))
            .json(&json!([{ "labels": labels }]))
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 200);
        let alerts: Value = http
            .get(format!("{base}api/v2/alerts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let alert = alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"] == labels)
            .unwrap_or_else(|| panic!("{labels} not in {alerts}"));
        !alert["status"]["silencedBy"].as_array().unwrap().is_empty()
    }

    /// Runs the Debian package's binary (or `$ALERTMANAGER`): last passed with Alertmanager
    /// 0.25.0 (Debian 0.25.0-1+b4).
    #[tokio::test]
    #[ignore = "starts a real Alertmanager (/usr/bin/prometheus-alertmanager)"]
    async fn against_a_real_alertmanager() {
        let binary =
            std::env::var("ALERTMANAGER").unwrap_or_else(|_| "/usr/bin/prometheus-alertmanager".into());
        let version = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .unwrap();
        eprintln!(
            "{}",
            String::from_utf8_lossy(&version.stdout)
                .lines()
                .next()
                .unwrap_or_default()
        );
        let am = RealAlertmanager::start(&binary).await;
        let client = client(am.base.trim_end_matches('/'), AlertmanagerAuth::None);

        let now = Utc::now();
        let matchers = vec![
            ("path".to_string(), "/api/v1/(users|orders)".to_string()),
            ("team".to_string(), "支付".to_string()),
        ];
        let wanted = NewSilence {
            matchers: matchers.clone(),
            // A start in the past is moved to the moment Alertmanager receives it.
            starts_at: now - chrono::Duration::minutes(5),
            ends_at: now + chrono::Duration::hours(2) + chrono::Duration::nanoseconds(123_456_789),
            created_by: "zhangsan (WeCom)".into(),
            comment: "静默 2 小时，来自企业微信卡片".into(),
        };
        let id = client.create_silence(&wanted).await.unwrap();

        let silences = client.silences().await.unwrap();
        let read = silences
            .iter()
            .find(|s| s.id == id)
            .expect("the new silence listed");
        let literal = |(name, value): &(String, String)| SilenceMatcher {
            name: name.clone(),
            value: value.clone(),
            is_regex: false,
            is_equal: true,
        };
        assert_eq!(read.matchers, matchers.iter().map(literal).collect::<Vec<_>>());
        assert_eq!(read.state, "active");
        assert_eq!(
            (read.created_by.as_str(), read.comment.as_str()),
            (wanted.created_by.as_str(), wanted.comment.as_str())
        );
        assert!(read.starts_at >= now - chrono::Duration::seconds(1), "{read:?}");
        assert_eq!(
            read.ends_at,
            chrono::SubsecRound::trunc_subsecs(wanted.ends_at, 3)
        );

        // Literal: the value silences itself, not what it would match as a regex.
        assert!(
            silenced(
                &am.base,
                json!({"alertname": "A", "path": "/api/v1/(users|orders)", "team": "支付"})
            )
            .await
        );
        assert!(
            !silenced(
                &am.base,
                json!({"alertname": "A", "path": "/api/v1/users", "team": "支付"})
            )
            .await
        );

        // The filters (metacharacters, non-ASCII) read as the matchers they spell.
        let found = client.find_active(&matchers).await.unwrap().expect("found");
        assert_eq!(found.id, id);
        assert_eq!(client.find_active(&matchers[1..]).await.unwrap(), None);

        // What Alertmanager refuses, and in which words.
        let refusal = |matchers: &[(&str, &str)], ends_at| NewSilence {
            matchers: matchers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ends_at,
            ..wanted.clone()
        };
        let later = now + chrono::Duration::hours(1);
        for (silence, status) in [
            (refusal(&[("a", "b")], now - chrono::Duration::hours(1)), 400),
            (refusal(&[("a", "b")], now - chrono::Duration::minutes(1)), 400),
            (refusal(&[], later), 422),
            (refusal(&[("a", "")], later), 400),
            (refusal(&[("", "b")], later), 400),
            (refusal(&[("team-name", "b")], later), 400),
        ] {
            let error = client.create_silence(&silence).await.unwrap_err();
            let SilenceError::Refused { status: s, message } = &error else {
                panic!("{silence:?}: {error:?}");
            };
            eprintln!("{:?} until {}: {s} {message}", silence.matchers, silence.ends_at);
            assert_eq!(*s, status, "{message}");
            assert_ne!(message, "no explanation given");
        }
        // An empty value is allowed beside one that is not: it matches a missing label.
        client
            .create_silence(&refusal(&[("a", ""), ("b", "x")], later))
            .await
            .unwrap();
        drop(am);
    }
}
