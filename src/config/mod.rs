//! Configuration: the YAML file (`file`), validated into typed values that the rest of the
//! service relies on without re-checking. Imports only the data model (for matchers).

mod file;
mod interactive;
mod route;
mod storm;
mod target;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::model::matcher::Matcher;
use crate::secret::Secret;

pub use file::{DEFAULT_API_URL, DEFAULT_LISTEN};
pub use interactive::{AlertmanagerSettings, ButtonSettings, CallbackSettings, MAX_BUTTONS};
pub use storm::{RateLimit, StormSettings};
pub use target::{check_chat_id, MsgType, RobotConfig, Target, TargetKind};

/// The example configuration shipped inside the binary; used when no `--config` is given.
pub const BUNDLED_EXAMPLE: &str = include_str!("../../examples/config.yml");
const BUNDLED_NAME: &str = "<bundled examples/config.yml>";

/// How long Alertmanager waits for a webhook at the least: its notifications time out
/// after max(group_interval, 10s).
pub const ALERTMANAGER_SHORTEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from, for messages (a path, or the bundled example).
    pub source: String,
    pub listen: SocketAddr,
    pub wecom: WeComSettings,
    pub server: ServerSettings,
    pub apps: Vec<AppConfig>,
    /// Group robots (群机器人), referenced by routes by name.
    pub robots: Vec<RobotConfig>,
    pub routes: Vec<RouteConfig>,
    pub templates: TemplateSettings,
    pub state: StateSettings,
    pub storm: StormSettings,
    /// The API silence buttons call.
    pub alertmanager: AlertmanagerSettings,
}

/// Where delivery state lives (chosen at start-up; a reload does not move it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSettings {
    /// In this process: right for a single replica.
    Memory,
    /// A Redis-protocol store several replicas share.
    Redis(RedisSettings),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://…`, possibly with a password: a secret.
    pub url: Secret,
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

impl StateSettings {
    pub fn backend(&self) -> &'static str {
        match self {
            StateSettings::Memory => "memory",
            StateSettings::Redis(_) => "redis",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WeComSettings {
    /// Base URL of the WeCom API, always ending in `/`.
    pub api_url: String,
    pub timeout: Duration,
    pub delivery_deadline: Duration,
    pub dedup_window: Duration,
    pub duplicate_check: bool,
    /// Added to every rate window (docs/storms.md#budgets).
    pub rate_margin: Duration,
    /// WeCom calls in flight at once per app, robot or chat (the others wait their turn).
    pub max_concurrent_calls: usize,
    /// Messages of one webhook being sent at once.
    pub max_parallel_sends: usize,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub max_body_bytes: usize,
    pub auth: AuthSettings,
    pub shutdown_grace: Duration,
    pub max_concurrent_requests: usize,
    pub max_queued_requests: usize,
    pub request_timeout: Duration,
    /// From the end of the headers to the end of the body.
    pub body_timeout: Duration,
    /// From a body read whole to its turn.
    pub queue_timeout: Duration,
    pub max_buffered_body_bytes: usize,
    pub reload_interval: Duration,
    /// Whether `/playground` (the template playground) is served.
    pub playground: bool,
}

/// Inbound authentication. With no credentials configured, every caller is accepted.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub bearer_token: Option<Secret>,
    pub basic_auth: Option<(String, Secret)>,
    pub protect_metrics: bool,
    pub protect_health: bool,
}

impl AuthSettings {
    pub fn is_enabled(&self) -> bool {
        self.bearer_token.is_some() || self.basic_auth.is_some()
    }
}

/// One WeCom app (企业应用): the credentials a token is fetched with.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub corp_id: String,
    pub agent_id: i64,
    /// `None` when no secret is configured: the app runs in dry-run mode.
    pub secret: Option<Secret>,
    pub safe: bool,
    /// Base URL of the WeCom API for this app, ending in `/`.
    pub api_url: String,
    /// What one member may get from this app.
    pub rate_limit: RateLimit,
    /// Parties and tags are counted per member, read from WeCom's directory.
    pub directory: bool,
    /// Where WeCom posts clicks on this app's cards; needed for cards with buttons.
    pub callback: Option<CallbackSettings>,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub matchers: Vec<Matcher>,
    /// Alertmanager's `continue`: after matching, keep trying the following routes.
    pub continue_matching: bool,
    pub send_resolved: bool,
    pub group_by: Vec<String>,
    pub target: Target,
    pub msgtype: MsgType,
    /// Template name: a built-in or a file of `templates.dir` (without `.hbs`).
    pub template: String,
    /// The template its storm digests are rendered with.
    pub digest_template: String,
    /// Text and markdown: at most this many messages per notification (a numbered series);
    /// what does not fit is summarised in the last one.
    pub max_messages: usize,
    /// App routes: recipients; entries may be templates over the alert (`{{labels.owner}}`).
    /// Empty for routes to a robot or a chat, which post to everyone in the chat.
    pub to: Recipients,
    pub fallback_to: Option<Recipients>,
    /// Robot routes: userids (templates allowed) and mobile numbers to @-mention.
    pub mention: Mentions,
    /// `template_card` app routes: buttons on firing cards (docs/interactive-cards.md).
    pub buttons: Option<ButtonSettings>,
}

impl RouteConfig {
    /// The app, robot or chat this route sends to (a metric label).
    pub fn target_name(&self) -> &str {
        self.target.name()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mentions {
    pub users: Vec<String>,
    pub mobiles: Vec<String>,
}

/// WeCom recipients: user ids, department (party) ids and tag ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipients {
    pub users: Vec<String>,
    pub parties: Vec<String>,
    pub tags: Vec<String>,
}

impl Recipients {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.parties.is_empty() && self.tags.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct TemplateSettings {
    pub dir: Option<PathBuf>,
    pub timezone: TimeZone,
    /// Default of `routes[].max_messages`.
    pub max_messages: usize,
}

/// Why a configuration was refused. Messages name the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates a configuration file. Relative paths inside it (template
    /// directory, secret files) are resolved against the file's directory.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::from_yaml(&text, &path.display().to_string(), &base_dir)
    }

    /// The bundled example configuration (relative paths resolve against the working directory).
    pub fn bundled_example() -> Result<Config, ConfigError> {
        Config::from_yaml(BUNDLED_EXAMPLE, BUNDLED_NAME, Path::new(""))
    }

    /// Validates configuration text; `source` names it in error messages.
    pub fn from_yaml(text: &str, source: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: source.to_string(),
            key: key.to_string(),
            message,
        };
        let raw: file::ConfigFile = parse_yaml(text).map_err(|(key, message)| invalid(&key, message))?;

        let listen: SocketAddr = raw.listen.parse().map_err(|e| {
            invalid(
                "listen",
                format!("{:?} is not an address like 0.0.0.0:9097: {e}", raw.listen),
            )
        })?;

        let wecom = WeComSettings {
            api_url: normalize_api_url(&raw.wecom.api_url).map_err(|m| invalid("wecom.api_url", m))?,
            timeout: positive(raw.wecom.timeout).map_err(|m| invalid("wecom.timeout", m))?,
            delivery_deadline: positive(raw.wecom.delivery_deadline)
                .map_err(|m| invalid("wecom.delivery_deadline", m))?,
            dedup_window: raw.wecom.dedup_window,
            duplicate_check: raw.wecom.duplicate_check,
            rate_margin: raw.wecom.rate_margin,
            max_concurrent_calls: at_least_one(raw.wecom.max_concurrent_calls)
                .map_err(|m| invalid("wecom.max_concurrent_calls", m))?,
            max_parallel_sends: at_least_one(raw.wecom.max_parallel_sends)
                .map_err(|m| invalid("wecom.max_parallel_sends", m))?,
        };
        if raw.wecom.duplicate_check && wecom.dedup_window > Duration::from_secs(4 * 3600) {
            return Err(invalid(
                "wecom.dedup_window",
                "WeCom's duplicate check allows at most 4h; lower it or set wecom.duplicate_check: false"
                    .into(),
            ));
        }
        if raw.server.max_concurrent_requests == 0 {
            return Err(invalid(
                "server.max_concurrent_requests",
                "must be greater than 0".into(),
            ));
        }
        if raw.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0".into()));
        }
        if raw.server.max_buffered_body_bytes < raw.server.max_body_bytes {
            return Err(invalid(
                "server.max_buffered_body_bytes",
                format!(
                    "must be at least server.max_body_bytes ({}), or a body of the largest accepted size could never be read",
                    raw.server.max_body_bytes
                ),
            ));
        }
        let raw_auth = raw.server.auth;
        let bearer_token = resolve_secret(raw_auth.bearer_token, raw_auth.bearer_token_file, base_dir)
            .map_err(|(field, message)| {
                invalid(
                    &format!("server.auth.{}", field.replace("secret", "bearer_token")),
                    message,
                )
            })?;
        let basic_auth = raw_auth
            .basic_auth
            .map(|basic| validate_basic_auth(basic, "server.auth.basic_auth", base_dir))
            .transpose()
            .map_err(|(key, message)| invalid(&key, message))?;
        let auth = AuthSettings {
            bearer_token,
            basic_auth,
            protect_metrics: raw_auth.protect_metrics,
            protect_health: raw_auth.protect_health,
        };

        let mut apps = Vec::with_capacity(raw.apps.len());
        let mut app_names = HashSet::new();
        for (i, app) in raw.apps.into_iter().enumerate() {
            let key = |field: &str| format!("apps[{i}].{field}");
            if app.name.trim().is_empty() {
                return Err(invalid(&key("name"), "must not be empty".into()));
            }
            if !app_names.insert(app.name.clone()) {
                return Err(invalid(
                    &key("name"),
                    format!("duplicate app name {:?}", app.name),
                ));
            }
            let corp_id = expand_env(&app.corp_id).map_err(|m| invalid(&key("corp_id"), m))?;
            if corp_id.trim().is_empty() {
                return Err(invalid(&key("corp_id"), "must not be empty".into()));
            }
            if app.agent_id <= 0 {
                return Err(invalid(
                    &key("agent_id"),
                    "must be the app's positive AgentId".into(),
                ));
            }
            let secret = resolve_secret(app.secret, app.secret_file, base_dir)
                .map_err(|(field, message)| invalid(&key(field), message))?;
            let callback = app
                .callback
                .map(|raw| {
                    interactive::validate_callback(raw, &|field| key(&format!("callback.{field}")), base_dir)
                })
                .transpose()
                .map_err(|(key, message)| invalid(&key, message))?;
            let rate_limit =
                storm::validate_rate_limit(app.rate_limit, RateLimit::APP_MEMBER, &key("rate_limit"))
                    .map_err(|(key, message)| invalid(&key, message))?;
            apps.push(AppConfig {
                callback,
                rate_limit,
                directory: app.directory,
                name: app.name,
                corp_id,
                agent_id: app.agent_id,
                secret,
                safe: app.safe,
                api_url: match &app.api_url {
                    Some(url) => normalize_api_url(url).map_err(|m| invalid(&key("api_url"), m))?,
                    None => wecom.api_url.clone(),
                },
            });
        }

        let robots = target::validate_robots(raw.robots, &app_names, &wecom.api_url, base_dir)
            .map_err(|(key, message)| invalid(&key, message))?;

        if raw.routes.is_empty() {
            return Err(invalid("routes", "at least one route is needed".into()));
        }
        if raw.templates.max_messages == 0 {
            return Err(invalid("templates.max_messages", "must be at least 1".into()));
        }
        let robot_names: HashSet<String> = robots.iter().map(|r| r.name.clone()).collect();
        let callback_apps: HashSet<String> = apps
            .iter()
            .filter(|app| app.callback.is_some())
            .map(|app| app.name.clone())
            .collect();
        let context = route::Context {
            app_names: &app_names,
            callback_apps: &callback_apps,
            robot_names: &robot_names,
            max_messages: raw.templates.max_messages,
        };
        let routes =
            route::validate_routes(raw.routes, &context).map_err(|(key, message)| invalid(&key, message))?;

        let timezone = TimeZone::get(&raw.templates.timezone).map_err(|_| {
            invalid(
                "templates.timezone",
                format!(
                    "unknown time zone {:?} (use an IANA name like Asia/Shanghai)",
                    raw.templates.timezone
                ),
            )
        })?;
        let dir = raw.templates.dir.map(|dir| base_dir.join(dir));
        if let Some(dir) = &dir {
            if !dir.is_dir() {
                return Err(invalid(
                    "templates.dir",
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }

        let state = validate_state(raw.state, base_dir).map_err(|(key, message)| invalid(&key, message))?;
        let smallest_per_minute = apps
            .iter()
            .map(|app| app.rate_limit.per_minute)
            .chain(robots.iter().map(|robot| robot.rate_limit.per_minute))
            .min()
            .unwrap_or(RateLimit::APP_MEMBER.per_minute);
        let storm = storm::validate_storm(raw.storm, smallest_per_minute)
            .map_err(|(key, message)| invalid(&key, message))?;

        let alertmanager = interactive::validate_alertmanager(raw.alertmanager, base_dir)
            .map_err(|(key, message)| invalid(&key, message))?;

        Ok(Config {
            alertmanager,
            source: source.to_string(),
            state,
            storm,
            listen,
            wecom,
            server: ServerSettings {
                max_body_bytes: raw.server.max_body_bytes,
                auth,
                shutdown_grace: raw.server.shutdown_grace,
                max_concurrent_requests: raw.server.max_concurrent_requests,
                max_queued_requests: raw.server.max_queued_requests,
                request_timeout: positive(raw.server.request_timeout)
                    .map_err(|m| invalid("server.request_timeout", m))?,
                body_timeout: positive(raw.server.body_timeout)
                    .map_err(|m| invalid("server.body_timeout", m))?,
                queue_timeout: positive(raw.server.queue_timeout)
                    .map_err(|m| invalid("server.queue_timeout", m))?,
                max_buffered_body_bytes: raw.server.max_buffered_body_bytes,
                reload_interval: raw.server.reload_interval,
                playground: raw.server.playground,
            },
            apps,
            robots,
            routes,
            templates: TemplateSettings {
                dir,
                timezone,
                max_messages: raw.templates.max_messages,
            },
        })
    }

    /// Settings that are valid but lose or delay notifications, in words an operator can
    /// act on: `check` prints them, the service logs them when it starts.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let wecom = &self.wecom;
        if self.server.shutdown_grace < wecom.delivery_deadline {
            warnings.push(format!(
                "server.shutdown_grace ({}) is shorter than wecom.delivery_deadline ({}): on SIGTERM, webhooks still being delivered are cut off unanswered (Alertmanager retries them, possibly after WeCom took them); set shutdown_grace to at least the deadline",
                humantime::format_duration(self.server.shutdown_grace),
                humantime::format_duration(wecom.delivery_deadline)
            ));
        }
        let waited = self.server.queue_timeout + wecom.delivery_deadline;
        if wecom.delivery_deadline < ALERTMANAGER_SHORTEST_TIMEOUT && waited >= ALERTMANAGER_SHORTEST_TIMEOUT
        {
            warnings.push(format!(
                "server.queue_timeout ({}) + wecom.delivery_deadline ({}) is not under {}: a webhook that waited its whole turn can be answered after Alertmanager stopped waiting (max(group_interval, 10s)); lower one of them",
                humantime::format_duration(self.server.queue_timeout),
                humantime::format_duration(wecom.delivery_deadline),
                humantime::format_duration(ALERTMANAGER_SHORTEST_TIMEOUT)
            ));
        }
        if wecom.delivery_deadline >= ALERTMANAGER_SHORTEST_TIMEOUT {
            warnings.push(format!(
                "wecom.delivery_deadline ({}) is not under {}: Alertmanager gives up on a webhook after max(group_interval, 10s), so a slow delivery is answered after Alertmanager stopped waiting (and retried); keep it under 10s",
                humantime::format_duration(wecom.delivery_deadline),
                humantime::format_duration(ALERTMANAGER_SHORTEST_TIMEOUT)
            ));
        }
        if wecom.timeout > wecom.delivery_deadline {
            warnings.push(format!(
                "wecom.timeout ({}) is longer than wecom.delivery_deadline ({}): no call can take longer than the deadline, so the deadline is what applies",
                humantime::format_duration(wecom.timeout),
                humantime::format_duration(wecom.delivery_deadline)
            ));
        }
        // Routes are tried in order and the first match wins unless it has `continue`: a
        // route behind a catch-all, or behind one with the very same matchers, never sees
        // an alert.
        for (i, route) in self.routes.iter().enumerate() {
            let shadow = self.routes[..i].iter().find(|earlier| {
                !earlier.continue_matching
                    && (earlier.matchers.is_empty() || earlier.matchers == route.matchers)
            });
            if let Some(earlier) = shadow {
                let why = if earlier.matchers.is_empty() {
                    "has no matchers (it takes every alert)"
                } else {
                    "has the same matchers"
                };
                warnings.push(format!(
                    "route {:?} can never match: route {:?} before it {why} and no `continue: true`; move it up, or add `continue: true` to {:?}",
                    route.name, earlier.name, earlier.name
                ));
            }
        }
        warnings
    }

    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|app| app.name == name)
    }
}

/// Validates `state:`.
fn validate_state(raw: file::StateSection, base_dir: &Path) -> Result<StateSettings, (String, String)> {
    let key = |field: &str| format!("state.{field}");
    match raw.backend.as_str() {
        "memory" => {
            if raw.url.is_some() || raw.url_file.is_some() {
                return Err((key("url"), "only `backend: redis` takes a url".into()));
            }
            Ok(StateSettings::Memory)
        }
        "redis" => {
            let url = resolve_secret(raw.url, raw.url_file, base_dir)
                .map_err(|(field, message)| (key(&field.replace("secret", "url")), message))?
                .ok_or_else(|| (key("url"), "backend redis needs `url` or `url_file`".to_string()))?;
            check_redis_url(url.expose()).map_err(|m| (key("url"), m))?;
            if raw.key_prefix.contains(['{', '}']) {
                return Err((
                    key("key_prefix"),
                    "must not contain { or }: they choose the Redis Cluster slot of each key".into(),
                ));
            }
            for (field, value) in [
                ("connect_timeout", raw.connect_timeout),
                ("command_timeout", raw.command_timeout),
            ] {
                positive(value).map_err(|m| (key(field), m))?;
            }
            Ok(StateSettings::Redis(RedisSettings {
                url,
                key_prefix: raw.key_prefix,
                connect_timeout: raw.connect_timeout,
                command_timeout: raw.command_timeout,
            }))
        }
        other => Err((
            key("backend"),
            format!("{other:?} is not a state backend (memory or redis)"),
        )),
    }
}

/// A Redis URL's shape, without ever echoing it (it may hold a password).
fn check_redis_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("not a URL ({e}); expected redis://[:PASSWORD@]HOST:PORT/DB"))?;
    match parsed.scheme() {
        "redis" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "redis" => Err("names no host; expected redis://[:PASSWORD@]HOST:PORT/DB".into()),
        "rediss" => Err(
            "TLS (rediss://) is not supported; reach Redis over a trusted network or a TLS sidecar".into(),
        ),
        scheme => Err(format!("scheme {scheme:?} is not redis://")),
    }
}

/// Parses YAML, reporting the path of the offending key and the position on failure.
fn parse_yaml(text: &str) -> Result<file::ConfigFile, (String, String)> {
    let deserializer = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let key = if path == "." {
            "(top level)".to_string()
        } else {
            path
        };
        let inner = err.into_inner();
        let message = inner.to_string();
        let message = match inner.location() {
            Some(at) if !message.contains("line") => {
                format!("{message} at line {}, column {}", at.line(), at.column())
            }
            _ => message,
        };
        (key, message)
    })
}

/// A credential given inline or as a file (both with `${VAR}` expansion). The file is read
/// now, and again on every reload. Empty means "none". Errors name the field
/// (`secret` or `secret_file`) and never the content.
pub(crate) fn resolve_secret(
    inline: Option<String>,
    file: Option<String>,
    base_dir: &Path,
) -> Result<Option<Secret>, (&'static str, String)> {
    let value = match (inline, file) {
        (Some(_), Some(_)) => return Err(("secret", "set either the value or the file, not both".into())),
        (Some(value), None) => expand_env(&value).map_err(|m| ("secret", m))?,
        (None, Some(path)) => {
            let path = expand_env(&path).map_err(|m| ("secret_file", m))?;
            if path.is_empty() {
                String::new()
            } else {
                let path = base_dir.join(path);
                std::fs::read_to_string(&path)
                    .map_err(|e| ("secret_file", format!("cannot read {}: {e}", path.display())))?
                    .trim()
                    .to_string()
            }
        }
        (None, None) => String::new(),
    };
    Ok(Some(value).filter(|v| !v.is_empty()).map(Secret::new))
}

/// Validates a `basic_auth: {username, password | password_file}` found at `key`.
pub(crate) fn validate_basic_auth(
    basic: file::BasicAuthSection,
    key: &str,
    base_dir: &Path,
) -> Result<(String, Secret), (String, String)> {
    let password = resolve_secret(basic.password, basic.password_file, base_dir)
        .map_err(|(field, message)| (format!("{key}.{}", field.replace("secret", "password")), message))?
        .ok_or_else(|| (format!("{key}.password"), "must not be empty".to_string()))?;
    if basic.username.is_empty() || basic.username.contains(':') {
        return Err((
            format!("{key}.username"),
            "must be non-empty and contain no ':'".into(),
        ));
    }
    Ok((basic.username, password))
}

/// Expands `${VAR}` and `${VAR:-default}`; an unset variable without default is an error.
fn expand_env(value: &str) -> Result<String, String> {
    shellexpand::env(value)
        .map(|expanded| expanded.into_owned())
        .map_err(|e| {
            format!(
                "environment variable {} is not set (use ${{{}:-}} for an empty default)",
                e.var_name, e.var_name
            )
        })
}

pub(crate) fn normalize_api_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{value:?} must be an http(s) URL"));
    }
    if url.query().is_some() {
        return Err(format!("{value:?} must not carry a query string"));
    }
    let mut text = url.to_string();
    if !text.ends_with('/') {
        text.push('/');
    }
    Ok(text)
}

fn positive(value: Duration) -> Result<Duration, String> {
    if value.is_zero() {
        Err("must be greater than 0".into())
    } else {
        Ok(value)
    }
}

fn at_least_one(value: usize) -> Result<usize, String> {
    if value == 0 {
        Err("must be at least 1".into())
    } else {
        Ok(value)
    }
}

pub(crate) fn clean_ids(ids: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.into_iter()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty() && seen.insert(id.clone()))
        .collect()
}

pub(crate) fn sorted_names(names: &HashSet<String>) -> String {
    let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
}

#[cfg(test)]
mod tests;
