//! The configuration file exactly as written: serde types with defaults. Nothing here is
//! checked beyond its shape; `config::Config::from_file` turns it into validated values.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:9097";
pub const DEFAULT_API_URL: &str = "https://qyapi.weixin.qq.com/cgi-bin/";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub wecom: WeComSection,
    #[serde(default)]
    pub server: ServerSection,
    pub apps: Vec<AppSection>,
    #[serde(default)]
    pub robots: Vec<RobotSection>,
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub templates: TemplatesSection,
    #[serde(default)]
    pub state: StateSection,
    #[serde(default)]
    pub storm: StormSection,
    /// Where silence buttons create silences (docs/interactive-cards.md).
    #[serde(default)]
    pub alertmanager: AlertmanagerSection,
}

/// The Alertmanager API that silence buttons call.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSection {
    /// Default: each card's `externalURL` (what Alertmanager says it is reachable at).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuthSection>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// An app's callback URL settings (接收消息 / API接收 in WeCom's admin console).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackSection {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<String>,
    #[serde(default)]
    pub encoding_aes_key: Option<String>,
    #[serde(default)]
    pub encoding_aes_key_file: Option<String>,
    /// How far a callback's timestamp may be from our clock (replays older are refused).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

/// A `template_card` route's buttons.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonsSection {
    #[serde(default = "default_true")]
    pub acknowledge: bool,
    /// One silence button per duration.
    #[serde(default = "default_silences")]
    pub silence: Vec<humantime_serde::Serde<Duration>>,
    /// Who may click (default: the card's recipients).
    #[serde(default)]
    pub allowed_users: Vec<String>,
}

fn default_silences() -> Vec<humantime_serde::Serde<Duration>> {
    [1, 4, 24]
        .map(|hours| Duration::from_secs(hours * 3600).into())
        .to_vec()
}

/// How storms are handled (docs/storms.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormSection {
    #[serde(default = "default_true")]
    pub digest: bool,
    #[serde(default = "default_reserve")]
    pub reserve: usize,
    #[serde(default = "default_digest_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_never_digest")]
    pub never_digest: Vec<String>,
    #[serde(default = "default_severity_label")]
    pub severity_label: String,
    #[serde(default = "default_severities")]
    pub severities: Vec<String>,
    #[serde(default = "default_digest_hold", with = "humantime_serde")]
    pub hold: Duration,
}

impl Default for StormSection {
    fn default() -> Self {
        StormSection {
            digest: true,
            reserve: default_reserve(),
            interval: default_digest_interval(),
            never_digest: default_never_digest(),
            severity_label: default_severity_label(),
            severities: default_severities(),
            hold: default_digest_hold(),
        }
    }
}

/// A target's rate limits where they differ from WeCom's published ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    #[serde(default)]
    pub per_minute: Option<usize>,
    /// 0: no hourly limit.
    #[serde(default)]
    pub per_hour: Option<usize>,
}

/// Where delivery state lives: this process (`memory`) or a store replicas share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Redis: `redis://[:PASSWORD@]HOST:PORT/DB` (`rediss://` for TLS is not built in).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<String>,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            backend: default_backend(),
            url: None,
            url_file: None,
            key_prefix: default_key_prefix(),
            connect_timeout: default_connect_timeout(),
            command_timeout: default_command_timeout(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeComSection {
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Timeout of one HTTP call to WeCom.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Time budget for delivering one message, retries included.
    #[serde(default = "default_delivery_deadline", with = "humantime_serde")]
    pub delivery_deadline: Duration,
    /// How long an accepted message is remembered so a re-sent group is not delivered twice.
    #[serde(default = "default_dedup_window", with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Ask WeCom to drop identical requests within `dedup_window` (`enable_duplicate_check`).
    #[serde(default = "default_true")]
    pub duplicate_check: bool,
    /// Added to every rate window: WeCom may count a message later than it answered.
    #[serde(default = "default_rate_margin", with = "humantime_serde")]
    pub rate_margin: Duration,
    /// WeCom calls in flight at once per app, robot or chat.
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: usize,
    /// Messages of one webhook being sent at once.
    #[serde(default = "default_max_parallel_sends")]
    pub max_parallel_sends: usize,
}

impl Default for WeComSection {
    fn default() -> Self {
        WeComSection {
            api_url: default_api_url(),
            timeout: default_timeout(),
            delivery_deadline: default_delivery_deadline(),
            dedup_window: default_dedup_window(),
            duplicate_check: true,
            rate_margin: default_rate_margin(),
            max_concurrent_calls: default_max_concurrent_calls(),
            max_parallel_sends: default_max_parallel_sends(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub auth: AuthSection,
    /// After SIGTERM: how long deliveries in flight may take before the process exits.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Webhooks processed at once; more wait in a queue.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Webhooks waiting for a turn; beyond this they are answered 503 with Retry-After.
    #[serde(default = "default_max_queued_requests")]
    pub max_queued_requests: usize,
    /// Time a client has to send its request headers.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Time a client has to send the whole body once its headers are in.
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a webhook whose body is read may wait for a turn; then 503 + Retry-After.
    #[serde(default = "default_queue_timeout", with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Bytes all bodies being read or waiting for a turn may hold together.
    #[serde(default = "default_max_buffered_body_bytes")]
    pub max_buffered_body_bytes: usize,
    /// Poll the config file and template directory for changes this often (0s: never).
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Serve the template playground at /playground (behind `auth`); off by default.
    #[serde(default)]
    pub playground: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            max_body_bytes: default_max_body_bytes(),
            auth: AuthSection::default(),
            shutdown_grace: default_shutdown_grace(),
            max_concurrent_requests: default_max_concurrent_requests(),
            max_queued_requests: default_max_queued_requests(),
            request_timeout: default_request_timeout(),
            body_timeout: default_body_timeout(),
            queue_timeout: default_queue_timeout(),
            max_buffered_body_bytes: default_max_buffered_body_bytes(),
            reload_interval: default_reload_interval(),
            playground: false,
        }
    }
}

/// Credentials callers of `/alerts` and the admin endpoints must present.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuthSection>,
    /// Require the credentials for `/metrics` too.
    #[serde(default)]
    pub protect_metrics: bool,
    /// Require the credentials for `/-/healthy` and `/-/ready` too.
    #[serde(default)]
    pub protect_health: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSection {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    pub name: String,
    pub corp_id: String,
    pub agent_id: i64,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
    /// `safe: true` sends confidential messages (no forwarding, watermark).
    #[serde(default)]
    pub safe: bool,
    /// Overrides `wecom.api_url` for this app (proxy, private deployment).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Messages one member may get from this app, if not WeCom's 30 a minute, 1,000 an hour.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSection>,
    /// Count parties and tags per member, read from WeCom's directory (needs read access).
    #[serde(default)]
    pub directory: bool,
    /// The app's callback URL settings, for cards with buttons.
    #[serde(default)]
    pub callback: Option<CallbackSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: String,
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Keep matching the following routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Labels whose values split this route's alerts into separate messages.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The WeCom app to send through (or `robot`).
    #[serde(default)]
    pub app: Option<String>,
    /// With `app`: an app group chat to post to instead of recipients.
    #[serde(default)]
    pub chat: Option<String>,
    /// A group robot of the `robots:` section to send through instead of an app.
    #[serde(default, deserialize_with = "robot_name")]
    pub robot: Option<String>,
    pub msgtype: String,
    #[serde(default)]
    pub template: Option<String>,
    /// The template of this route's storm digests (default `digest/MSGTYPE`).
    #[serde(default)]
    pub digest_template: Option<String>,
    /// Text and markdown: at most this many messages per notification.
    #[serde(default)]
    pub max_messages: Option<usize>,
    #[serde(default)]
    pub to: Option<RecipientsSection>,
    /// Used when `to` resolves to nobody for an alert (label-derived recipients missing).
    #[serde(default)]
    pub fallback_to: Option<RecipientsSection>,
    /// Robot routes: who to @-mention.
    #[serde(default)]
    pub mention: Option<MentionSection>,
    /// `template_card` app routes: acknowledge and silence buttons on firing cards.
    #[serde(default)]
    pub buttons: Option<ButtonsSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotSection {
    /// Routes refer to the robot by this name; it names the robot in metrics and logs.
    pub name: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub api_url: Option<String>,
    /// Messages a minute, if not WeCom's 20.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MentionSection {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub mobiles: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientsSection {
    #[serde(default, deserialize_with = "ids")]
    pub users: Vec<String>,
    #[serde(default, deserialize_with = "ids")]
    pub parties: Vec<String>,
    #[serde(default, deserialize_with = "ids")]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesSection {
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Default for routes' `max_messages`.
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
}

impl Default for TemplatesSection {
    fn default() -> Self {
        TemplatesSection {
            dir: None,
            timezone: default_timezone(),
            max_messages: default_max_messages(),
        }
    }
}

/// Party and tag ids are numbers in WeCom; accept `2` as well as `"2"` so YAML users do
/// not have to quote them.
fn ids<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    /// One id, with a visitor of its own: an untagged enum would say "did not match any
    /// variant of untagged enum", which tells a YAML author nothing.
    struct Id(String);
    impl<'de> Deserialize<'de> for Id {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Id, D::Error> {
            struct Visitor;
            impl serde::de::Visitor<'_> for Visitor {
                type Value = Id;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an id: a string, or a number for parties and tags")
                }
                fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Id, E> {
                    Ok(Id(value.to_string()))
                }
                fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Id, E> {
                    Ok(Id(value.to_string()))
                }
            }
            deserializer.deserialize_any(Visitor)
        }
    }
    let raw: Vec<Id> = Vec::deserialize(deserializer)?;
    Ok(raw.into_iter().map(|Id(id)| id).collect())
}

/// A route's `robot:` is a name. Robots used to be declared inline in the route; say
/// where they went instead of serde's "expected a string".
fn robot_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Reference {
        Name(String),
        Inline(serde::de::IgnoredAny),
    }
    match Option::<Reference>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Reference::Name(name)) => Ok(Some(name)),
        Some(Reference::Inline(_)) => Err(serde::de::Error::custom(
            "a route names its robot (`robot: NAME`); declare the robot, with its key, \
             in the top-level `robots:` section",
        )),
    }
}

fn default_backend() -> String {
    "memory".to_string()
}
fn default_key_prefix() -> String {
    "alertmanager-wecom:".to_string()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_command_timeout() -> Duration {
    Duration::from_millis(250)
}
fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_api_url() -> String {
    DEFAULT_API_URL.to_string()
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_delivery_deadline() -> Duration {
    Duration::from_secs(6)
}
fn default_dedup_window() -> Duration {
    Duration::from_secs(600)
}
fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_max_concurrent_requests() -> usize {
    32
}
fn default_max_queued_requests() -> usize {
    256
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
/// Alertmanager sends a body from memory right after its headers: a 4 MiB one arrives in
/// 5 s even at 7 Mbit/s, in milliseconds in a cluster. Slower is a client in trouble or one
/// holding a place on purpose.
fn default_body_timeout() -> Duration {
    Duration::from_secs(5)
}
/// Alertmanager gives a notification max(group_interval, 10s) at the least (its notify
/// timeout), and a delivery may take `wecom.delivery_deadline` (6s) once it has its turn;
/// with about a second for the body and rendering, 10 - 6 - 1 = 3s is the longest a
/// webhook can wait and still be answered before Alertmanager gives up on it. Past that,
/// an immediate 503 serves it better than an answer nobody reads.
fn default_queue_timeout() -> Duration {
    Duration::from_secs(3)
}
/// Eight bodies at the 4 MiB limit, or hundreds of ordinary ones, read or waiting at once.
fn default_max_buffered_body_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(20)
}
fn default_timezone() -> String {
    "UTC".to_string()
}
fn default_max_messages() -> usize {
    3
}
fn default_rate_margin() -> Duration {
    Duration::from_secs(5)
}
/// Well under what makes WeCom answer 45033 (too many concurrent calls; its pages give no
/// number) and enough for a few hundred messages a second at WeCom's usual latency.
fn default_max_concurrent_calls() -> usize {
    8
}
/// A 1,000-owner group is 1,000 messages: at most this many of them in flight (and holding
/// sockets and buffers) at once.
fn default_max_parallel_sends() -> usize {
    8
}
fn default_reserve() -> usize {
    3
}
fn default_digest_interval() -> Duration {
    Duration::from_secs(20)
}
fn default_digest_hold() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_never_digest() -> Vec<String> {
    vec!["critical".to_string()]
}
fn default_severity_label() -> String {
    "severity".to_string()
}
fn default_severities() -> Vec<String> {
    ["critical", "error", "warning", "info"]
        .map(String::from)
        .to_vec()
}
fn default_true() -> bool {
    true
}
