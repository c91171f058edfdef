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
            SilenceError::BadAnswer(_) => "Alertmanager 应答异常",
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
        let secret = match &self.auth {
            AlertmanagerAuth::None => return text.to_string(),
            AlertmanagerAuth::Bearer(token) => token,
            AlertmanagerAuth::Basic { password, .. } => password,
        };
        if secret.is_empty() {
            return text.to_string();
        }
        text.replace(secret.expose(), "<redacted>")
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
