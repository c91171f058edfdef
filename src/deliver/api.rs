//! The WeCom HTTP API: one call per method, no retries. Success is decided by the JSON
//! body (`errcode` absent or 0), never by the HTTP status alone.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::error::{errcode_labels, Endpoint, WeComError};
use crate::metrics::Metrics;
use crate::secret::Secret;

/// An access token and how long WeCom says it lives.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub token: Secret,
    pub expires_in: Duration,
}

/// What an accepted message reports back: the recipients WeCom did not deliver to (only
/// `message/send` names them; other targets answer an empty receipt).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReceipt {
    pub invalid_users: Vec<String>,
    pub invalid_parties: Vec<String>,
    pub invalid_tags: Vec<String>,
    pub unlicensed_users: Vec<String>,
    /// For interactive cards: the code `message/update_template_card` takes, once, within
    /// 72 hours.
    pub response_code: Option<String>,
}

/// The kinds of recipient WeCom reports as not delivered to (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientKind {
    User,
    Party,
    Tag,
    UnlicensedUser,
}

impl RecipientKind {
    pub const ALL: [RecipientKind; 4] = [
        RecipientKind::User,
        RecipientKind::Party,
        RecipientKind::Tag,
        RecipientKind::UnlicensedUser,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::User => "user",
            RecipientKind::Party => "party",
            RecipientKind::Tag => "tag",
            RecipientKind::UnlicensedUser => "unlicensed_user",
        }
    }
}

impl SendReceipt {
    /// The recipients not delivered to, by kind.
    pub fn undelivered(&self) -> [(RecipientKind, &[String]); 4] {
        [
            (RecipientKind::User, &self.invalid_users),
            (RecipientKind::Party, &self.invalid_parties),
            (RecipientKind::Tag, &self.invalid_tags),
            (RecipientKind::UnlicensedUser, &self.unlicensed_users),
        ]
    }
}

/// A list of ids as WeCom answers them: `"a|b"` from `message/send`, `["a", "b"]` (or
/// numbers, for parties and tags) from `update_template_card`.
fn id_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    let id = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    Ok(match &value {
        Value::String(joined) => joined
            .split('|')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Value::Array(ids) => ids.iter().filter_map(id).filter(|s| !s.is_empty()).collect(),
        _ => Vec::new(),
    })
}

/// The receipt in a `message/send` or `update_template_card` reply.
fn receipt(reply: Reply) -> SendReceipt {
    SendReceipt {
        invalid_users: reply.invaliduser,
        invalid_parties: reply.invalidparty,
        invalid_tags: reply.invalidtag,
        unlicensed_users: reply.unlicenseduser,
        response_code: reply.response_code.filter(|code| !code.is_empty()),
    }
}

/// How long one call may take: WeCom's per-call timeout, never past the delivery deadline.
#[derive(Debug, Clone, Copy)]
pub struct CallLimit {
    pub deadline: Instant,
    pub cap: Duration,
}

impl CallLimit {
    pub fn timeout(&self) -> Duration {
        self.cap
            .min(self.deadline.saturating_duration_since(Instant::now()))
    }
}

/// The URL of one API method (`…/cgi-bin/message/send`), parsed once per configuration:
/// given a string, reqwest parses the URL on every call, host name (IDNA) mapping
/// included, which callgrind put at 5% of the CPU a one-alert webhook costs.
#[derive(Debug, Clone)]
pub struct MethodUrl {
    url: Result<reqwest::Url, String>,
}

impl MethodUrl {
    /// `base` is a configured `api_url`, which validation has parsed and ended with `/`.
    pub fn new(base: &str, method: &'static str) -> MethodUrl {
        let url = reqwest::Url::parse(base)
            .and_then(|base| base.join(method))
            .map_err(|e| format!("api_url {base:?} + {method}: {e}"));
        MethodUrl { url }
    }

    fn get(&self, endpoint: Endpoint) -> Result<reqwest::Url, WeComError> {
        self.url
            .clone()
            .map_err(|detail| WeComError::Transport { endpoint, detail })
    }
}

/// HTTP client for the WeCom API (one connection pool for all apps).
#[derive(Clone)]
pub struct WeComApi {
    http: reqwest::Client,
    metrics: Metrics,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "id_list")]
    invaliduser: Vec<String>,
    #[serde(default, deserialize_with = "id_list")]
    invalidparty: Vec<String>,
    #[serde(default, deserialize_with = "id_list")]
    invalidtag: Vec<String>,
    #[serde(default, deserialize_with = "id_list")]
    unlicenseduser: Vec<String>,
    #[serde(default)]
    response_code: Option<String>,
    /// The whole reply, for the calls whose answer is more than a verdict.
    #[serde(skip)]
    whole: Value,
}

impl WeComApi {
    pub fn new(metrics: Metrics) -> WeComApi {
        let http = reqwest::Client::builder()
            .user_agent(concat!("alertmanager-wecom/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("the TLS backend initialises");
        for endpoint in Endpoint::ALL {
            metrics.api_duration.with_label_values(&[endpoint.as_str()]);
            for errcode in errcode_labels() {
                metrics
                    .api_requests
                    .with_label_values(&[endpoint.as_str(), errcode]);
            }
        }
        WeComApi { http, metrics }
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// `GET gettoken?corpid=…&corpsecret=…`
    pub async fn get_token(
        &self,
        url: &MethodUrl,
        corp_id: &str,
        secret: &Secret,
        timeout: Duration,
    ) -> Result<TokenGrant, WeComError> {
        let request = self
            .http
            .get(url.get(Endpoint::GetToken)?)
            .query(&[("corpid", corp_id), ("corpsecret", secret.expose())])
            .timeout(timeout);
        let reply = self.call(Endpoint::GetToken, request).await?;
        let token = reply
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| WeComError::BadReply {
                endpoint: Endpoint::GetToken,
                detail: "no access_token in a successful reply".into(),
            })?;
        Ok(TokenGrant {
            token: Secret::new(token),
            expires_in: Duration::from_secs(reply.expires_in.unwrap_or(7200)),
        })
    }

    /// `POST message/send?access_token=…`, or `message/update_template_card` (which
    /// changes a sent interactive card for the recipients the body names, with a
    /// `response_code` WeCom accepts once): both answer a receipt.
    pub async fn send_message(
        &self,
        endpoint: Endpoint,
        url: &MethodUrl,
        token: &Secret,
        body: &Value,
        timeout: Duration,
    ) -> Result<SendReceipt, WeComError> {
        let reply = self
            .post(endpoint, url, ("access_token", token), body, timeout)
            .await?;
        Ok(receipt(reply))
    }

    /// `POST webhook/send?key=…` (a group robot; the key is the credential).
    pub async fn send_robot(
        &self,
        url: &MethodUrl,
        key: &Secret,
        body: &Value,
        timeout: Duration,
    ) -> Result<(), WeComError> {
        self.post(Endpoint::RobotSend, url, ("key", key), body, timeout)
            .await
            .map(|_| ())
    }

    /// `POST appchat/send?access_token=…` (an app group chat).
    pub async fn send_appchat(
        &self,
        url: &MethodUrl,
        token: &Secret,
        body: &Value,
        timeout: Duration,
    ) -> Result<SendReceipt, WeComError> {
        self.post(Endpoint::AppchatSend, url, ("access_token", token), body, timeout)
            .await
            .map(|_| SendReceipt::default())
    }

    /// A JSON `POST` with its credential (`access_token` or a robot's `key`) in the query.
    async fn post(
        &self,
        endpoint: Endpoint,
        url: &MethodUrl,
        (name, credential): (&'static str, &Secret),
        body: &Value,
        timeout: Duration,
    ) -> Result<Reply, WeComError> {
        let request = self
            .http
            .post(url.get(endpoint)?)
            .query(&[(name, credential.expose())])
            .json(body)
            .timeout(timeout);
        self.call(endpoint, request).await
    }

    /// `POST endpoint?access_token=…` with `body`, answering the whole reply: for the
    /// calls that manage app group chats (`appchat/create`, `appchat/get`).
    pub async fn call_json(
        &self,
        endpoint: Endpoint,
        url: &MethodUrl,
        token: &Secret,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, WeComError> {
        match endpoint {
            // appchat/get takes its chatid as a query parameter.
            Endpoint::AppchatGet => {
                let chat_id = body["chatid"].as_str().unwrap_or_default();
                self.get_json(endpoint, url, token, &[("chatid", chat_id)], timeout)
                    .await
            }
            _ => Ok(self
                .post(endpoint, url, ("access_token", token), body, timeout)
                .await?
                .whole),
        }
    }

    /// `GET endpoint?access_token=…&query…`, answering the whole reply: for the reads
    /// whose answer is more than a verdict (`appchat/get`, the directory reads
    /// `user/simplelist`, `department/simplelist` and `tag/get`).
    pub async fn get_json(
        &self,
        endpoint: Endpoint,
        url: &MethodUrl,
        token: &Secret,
        query: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Value, WeComError> {
        let request = self
            .http
            .get(url.get(endpoint)?)
            .query(&[("access_token", token.expose())])
            .query(query)
            .timeout(timeout);
        Ok(self.call(endpoint, request).await?.whole)
    }

    async fn call(&self, endpoint: Endpoint, request: reqwest::RequestBuilder) -> Result<Reply, WeComError> {
        let started = Instant::now();
        let result = self.exchange(endpoint, request).await;
        self.metrics
            .api_duration
            .with_label_values(&[endpoint.as_str()])
            .observe(started.elapsed().as_secs_f64());
        let errcode = match &result {
            Ok(_) => "0",
            Err(error) => error.errcode_label(),
        };
        self.metrics
            .api_requests
            .with_label_values(&[endpoint.as_str(), errcode])
            .inc();
        result
    }

    async fn exchange(
        &self,
        endpoint: Endpoint,
        request: reqwest::RequestBuilder,
    ) -> Result<Reply, WeComError> {
        let response = request
            .send()
            .await
            .map_err(|e| WeComError::transport(endpoint, e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(WeComError::HttpStatus {
                endpoint,
                status: status.as_u16(),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| WeComError::transport(endpoint, e))?;
        let bad_reply = |e: serde_json::Error| WeComError::BadReply {
            endpoint,
            detail: format!("not a WeCom JSON reply ({e})"),
        };
        // The calls whose whole answer matters are read once as a JSON value.
        let reply = if endpoint.answers_whole() {
            let whole: Value = serde_json::from_slice(&body).map_err(bad_reply)?;
            let mut reply = Reply::deserialize(&whole).map_err(bad_reply)?;
            reply.whole = whole;
            reply
        } else {
            serde_json::from_slice(&body).map_err(bad_reply)?
        };
        if reply.errcode != 0 {
            return Err(WeComError::Api {
                endpoint,
                errcode: reply.errcode,
                errmsg: reply.errmsg.chars().take(200).collect(),
            });
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_ids_are_read_as_either_reply_spells_them() {
        let send: Reply = serde_json::from_str(
            r#"{"errcode":0,"invaliduser":"a|b","invalidparty":"","response_code":"c"}"#,
        )
        .unwrap();
        assert_eq!(send.invaliduser, ["a", "b"]);
        assert!(send.invalidparty.is_empty());
        let update: Reply = serde_json::from_str(
            r#"{"errcode":0,"invaliduser":["x"],"invalidparty":[2,3],"invalidtag":null}"#,
        )
        .unwrap();
        assert_eq!(update.invaliduser, ["x"]);
        assert_eq!(update.invalidparty, ["2", "3"]);
        assert!(update.invalidtag.is_empty());
        assert_eq!(receipt(send).response_code.as_deref(), Some("c"));
    }

    #[test]
    fn method_urls_keep_the_configured_path_prefix() {
        let url = MethodUrl::new("https://proxy.example.com/wecom/cgi-bin/", "message/send");
        assert_eq!(
            url.get(Endpoint::MessageSend).unwrap().as_str(),
            "https://proxy.example.com/wecom/cgi-bin/message/send"
        );
    }

    #[test]
    fn an_unparsable_base_is_an_error_at_call_time_not_a_panic() {
        let url = MethodUrl::new("not a url", "gettoken");
        let error = url.get(Endpoint::GetToken).unwrap_err().to_string();
        assert!(error.contains("not a url"), "{error}");
    }
}
