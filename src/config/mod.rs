//! Configuration: the YAML file (`file`), validated into typed values that the rest of the
//! service relies on without re-checking. Imports only the data model (for matchers).
//! Validation goes on past a mistake, so every independent one is reported at once
//! ([`ConfigError::Invalid`]); secrets are read by `secrets`, online or, for `check
//! --offline`, skipping what is on another machine.

mod file;
mod interactive;
mod route;
mod secrets;
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
use secrets::{SecretKind, Secrets};

pub use file::{DEFAULT_API_URL, DEFAULT_LISTEN};
pub use interactive::{AlertmanagerSettings, ButtonSettings, CallbackSettings, MAX_BUTTONS};
pub use secrets::{Files, SecretSource, Skipped};
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

    /// A department (party) or tag id as WeCom takes it: a 32-bit unsigned number in plain
    /// decimal, leading zeros dropped (`"007"` is 7); `None` for what names none (`"+5"`,
    /// `"-1"`, `"0x5"`, `"ops"`), which Rust's own number parsing would partly let through.
    pub fn wecom_id(id: &str) -> Option<String> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        id.parse::<u32>().ok().map(|n| n.to_string())
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
    /// Every independent mistake of the file, in the file's order: one line each.
    #[error("{}", lines(file, problems))]
    Invalid { file: String, problems: Vec<Problem> },
}

/// One mistake: where (`routes[2].app`) and what, in words that never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    /// A secret file that does not exist on this machine: `check` suggests `--offline`.
    pub missing_file: bool,
}

impl From<(String, String)> for Problem {
    fn from((key, message): (String, String)) -> Problem {
        Problem {
            key,
            message,
            missing_file: false,
        }
    }
}

fn lines(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|problem| format!("{file}: {}: {}", problem.key, problem.message))
        .collect();
    lines.join("\n")
}

/// A configuration that passed validation, and the secrets that were not read to get
/// there (always none online). Offline, `config` holds placeholders for those: it is for
/// checking templates and routes, never for serving.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    pub skipped: Vec<Skipped>,
}

/// The mistakes found so far. Each section is validated even after an earlier one failed,
/// so a newcomer sees every mistake in one run.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, problem: impl Into<Problem>) {
        self.0.push(problem.into());
    }

    /// The value if valid; else `None`, with the mistake noted.
    fn check<T, E: Into<Problem>>(&mut self, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.add(e)).ok()
    }
}

/// Puts a message at `key`.
fn at(key: &str) -> impl Fn(String) -> Invalid + '_ {
    move |message| (key.to_string(), message)
}

type Invalid = (String, String);

impl Config {
    /// Reads and validates a configuration file. Relative paths inside it (template
    /// directory, secret files) are resolved against the file's directory.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::check(Some(path), SecretSource::Online, None).map(|checked| checked.config)
    }

    /// Validates the file at `path`, or the bundled example without one, reading its
    /// secrets as `secrets` says and its templates from `templates_dir` if given (else
    /// where `templates.dir` says). Relative paths resolve against the file's directory
    /// (the working directory for the bundled example).
    pub fn check(
        path: Option<&Path>,
        secrets: SecretSource,
        templates_dir: Option<PathBuf>,
    ) -> Result<Checked, ConfigError> {
        let (text, source, base_dir) = match path {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
                path.display().to_string(),
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
            ),
            None => (
                BUNDLED_EXAMPLE.to_string(),
                BUNDLED_NAME.to_string(),
                PathBuf::new(),
            ),
        };
        let files = Files {
            base_dir,
            secrets,
            templates_dir,
        };
        Config::check_yaml(&text, &source, &files)
    }

    /// The bundled example configuration (relative paths resolve against the working directory).
    pub fn bundled_example() -> Result<Config, ConfigError> {
        Config::from_yaml(BUNDLED_EXAMPLE, BUNDLED_NAME, Path::new(""))
    }

    /// Validates configuration text the way the service does (secrets read on this
    /// machine); `source` names it in error messages.
    pub fn from_yaml(text: &str, source: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Config::check_yaml(text, source, &Files::online(base_dir)).map(|checked| checked.config)
    }

    /// Validates configuration text, reading secrets and templates as `files` says.
    pub fn check_yaml(text: &str, source: &str, files: &Files) -> Result<Checked, ConfigError> {
        let invalid = |problems: Vec<Problem>| ConfigError::Invalid {
            file: source.to_string(),
            problems,
        };
        // serde stops at the first mistake of shape (syntax, unknown field): one problem.
        let raw: file::ConfigFile = parse_yaml(text).map_err(|problem| invalid(vec![problem.into()]))?;
        let secrets = Secrets::new(files);
        let mut problems = Problems::default();
        match validate(raw, source, &secrets, &mut problems) {
            Some(config) if problems.0.is_empty() => Ok(Checked {
                config,
                skipped: secrets.into_skipped(),
            }),
            _ => Err(invalid(problems.0)),
        }
    }

    /// Settings that are valid but lose or delay notifications, in words an operator can
    /// act on: `check` prints them, the service logs them when it starts.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let wecom = &self.wecom;
        if self.storm.digest && wecom.dedup_window.is_zero() {
            warnings.push(
                "storm.digest is on but wecom.dedup_window is 0s: without the record of accepted messages nothing can answer a digested notification's retries, so notifications over WeCom's rate limits are held back (503) instead of digested; set dedup_window (e.g. 10m) or storm.digest: false".to_string(),
            );
        }
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

/// Turns the file into validated values, noting every independent mistake in `problems`.
/// `None` (or any problem noted) means invalid. A check that needs a value that failed its
/// own check is skipped, so one mistake is reported once.
fn validate(
    raw: file::ConfigFile,
    source: &str,
    secrets: &Secrets,
    problems: &mut Problems,
) -> Option<Config> {
    let p = problems;
    let listen = p.check(raw.listen.parse::<SocketAddr>().map_err(|e| {
        (
            "listen".to_string(),
            format!("{:?} is not an address like 0.0.0.0:9097: {e}", raw.listen),
        )
    }));

    let api_url = p.check(normalize_api_url(&raw.wecom.api_url).map_err(at("wecom.api_url")));
    let timeout = p.check(positive(raw.wecom.timeout).map_err(at("wecom.timeout")));
    let delivery_deadline =
        p.check(positive(raw.wecom.delivery_deadline).map_err(at("wecom.delivery_deadline")));
    let max_concurrent_calls =
        p.check(at_least_one(raw.wecom.max_concurrent_calls).map_err(at("wecom.max_concurrent_calls")));
    let max_parallel_sends =
        p.check(at_least_one(raw.wecom.max_parallel_sends).map_err(at("wecom.max_parallel_sends")));
    if raw.wecom.duplicate_check && raw.wecom.dedup_window > Duration::from_secs(4 * 3600) {
        p.add((
            "wecom.dedup_window".to_string(),
            "WeCom's duplicate check allows at most 4h; lower it or set wecom.duplicate_check: false"
                .to_string(),
        ));
    }
    // Apps and robots without an api_url of their own use wecom.api_url; if that is wrong,
    // theirs are not checked against it (one mistake, reported once).
    let default_api_url = api_url.clone().unwrap_or_else(|| DEFAULT_API_URL.to_string());

    let server = &raw.server;
    if server.max_concurrent_requests == 0 {
        p.add((
            "server.max_concurrent_requests".to_string(),
            "must be greater than 0".to_string(),
        ));
    }
    if server.max_body_bytes == 0 {
        p.add((
            "server.max_body_bytes".to_string(),
            "must be greater than 0".to_string(),
        ));
    } else if server.max_buffered_body_bytes < server.max_body_bytes {
        p.add((
            "server.max_buffered_body_bytes".to_string(),
            format!(
                "must be at least server.max_body_bytes ({}), or a body of the largest accepted size could never be read",
                server.max_body_bytes
            ),
        ));
    }
    let request_timeout = p.check(positive(server.request_timeout).map_err(at("server.request_timeout")));
    let body_timeout = p.check(positive(server.body_timeout).map_err(at("server.body_timeout")));
    let queue_timeout = p.check(positive(server.queue_timeout).map_err(at("server.queue_timeout")));
    let raw_auth = raw.server.auth;
    let bearer_token = p.check(secrets.read(
        "server.auth",
        "bearer_token",
        raw_auth.bearer_token,
        raw_auth.bearer_token_file,
        SecretKind::Opaque,
    ));
    let basic_auth = match raw_auth.basic_auth {
        None => Some(None),
        Some(basic) => p
            .check(validate_basic_auth(basic, "server.auth.basic_auth", secrets))
            .map(Some),
    };

    // Routes refer to apps and robots by name: every declared name counts, valid or not,
    // so a mistake inside an app is not reported again at each route that uses it.
    let app_names: HashSet<String> = raw.apps.iter().map(|app| app.name.clone()).collect();
    let callback_apps: HashSet<String> = raw
        .apps
        .iter()
        .filter(|app| app.callback.is_some())
        .map(|app| app.name.clone())
        .collect();
    let robot_names: HashSet<String> = raw
        .robots
        .iter()
        .map(|robot| robot.name.clone())
        .filter(|name| !name.trim().is_empty())
        .collect();

    let mut apps = Vec::with_capacity(raw.apps.len());
    let mut seen_apps = HashSet::new();
    let mut apps_valid = true;
    for (i, app) in raw.apps.into_iter().enumerate() {
        match validate_app(app, i, &mut seen_apps, &default_api_url, secrets) {
            Ok(app) => apps.push(app),
            Err(problem) => {
                apps_valid = false;
                p.add(problem);
            }
        }
    }

    let robots = target::validate_robots(raw.robots, &app_names, &default_api_url, secrets, p);

    if raw.routes.is_empty() {
        p.add(("routes".to_string(), "at least one route is needed".to_string()));
    }
    let max_messages = if raw.templates.max_messages == 0 {
        p.add((
            "templates.max_messages".to_string(),
            "must be at least 1".to_string(),
        ));
        // Routes without their own max_messages are then not checked against it.
        None
    } else {
        Some(raw.templates.max_messages)
    };
    let context = route::Context {
        app_names: &app_names,
        callback_apps: &callback_apps,
        robot_names: &robot_names,
        max_messages: max_messages.unwrap_or(1),
    };
    let routes = route::validate_routes(raw.routes, &context, p);

    let timezone = p.check(TimeZone::get(&raw.templates.timezone).map_err(|_| {
        (
            "templates.timezone".to_string(),
            format!(
                "unknown time zone {:?} (use an IANA name like Asia/Shanghai)",
                raw.templates.timezone
            ),
        )
    }));
    let dir = match &secrets.files.templates_dir {
        Some(dir) => Some(dir.clone()),
        None => raw.templates.dir.map(|dir| secrets.files.base_dir.join(dir)),
    };
    if let Some(dir) = &dir {
        if !dir.is_dir() {
            let key = if secrets.files.templates_dir.is_some() {
                "--templates-dir"
            } else {
                "templates.dir"
            };
            p.add((key.to_string(), format!("{} is not a directory", dir.display())));
        }
    }

    let state = p.check(validate_state(raw.state, secrets));
    // The reserve must leave room under every target's limit; a limit that was itself
    // wrong is left out.
    let smallest_per_minute = apps
        .iter()
        .map(|app| app.rate_limit.per_minute)
        .chain(robots.iter().map(|robot| robot.rate_limit.per_minute))
        .min()
        .unwrap_or(RateLimit::APP_MEMBER.per_minute);
    let storm = p.check(storm::validate_storm(raw.storm, smallest_per_minute));
    let alertmanager = p.check(interactive::validate_alertmanager(raw.alertmanager, secrets));

    let (
        Some(listen),
        Some(api_url),
        Some(timeout),
        Some(delivery_deadline),
        Some(max_concurrent_calls),
        Some(max_parallel_sends),
        Some(request_timeout),
        Some(body_timeout),
        Some(queue_timeout),
        Some(bearer_token),
        Some(basic_auth),
        Some(timezone),
    ) = (
        listen,
        api_url,
        timeout,
        delivery_deadline,
        max_concurrent_calls,
        max_parallel_sends,
        request_timeout,
        body_timeout,
        queue_timeout,
        bearer_token,
        basic_auth,
        timezone,
    )
    else {
        return None;
    };
    let (Some(state), Some(storm), Some(alertmanager), Some(max_messages), true) =
        (state, storm, alertmanager, max_messages, apps_valid)
    else {
        return None;
    };
    Some(Config {
        alertmanager,
        source: source.to_string(),
        state,
        storm,
        listen,
        wecom: WeComSettings {
            api_url,
            timeout,
            delivery_deadline,
            dedup_window: raw.wecom.dedup_window,
            duplicate_check: raw.wecom.duplicate_check,
            rate_margin: raw.wecom.rate_margin,
            max_concurrent_calls,
            max_parallel_sends,
        },
        server: ServerSettings {
            max_body_bytes: raw.server.max_body_bytes,
            auth: AuthSettings {
                bearer_token,
                basic_auth,
                protect_metrics: raw_auth.protect_metrics,
                protect_health: raw_auth.protect_health,
            },
            shutdown_grace: raw.server.shutdown_grace,
            max_concurrent_requests: raw.server.max_concurrent_requests,
            max_queued_requests: raw.server.max_queued_requests,
            request_timeout,
            body_timeout,
            queue_timeout,
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
            max_messages,
        },
    })
}

/// Validates `apps[i]`: its first mistake.
fn validate_app(
    app: file::AppSection,
    i: usize,
    seen: &mut HashSet<String>,
    default_api_url: &str,
    secrets: &Secrets,
) -> Result<AppConfig, Problem> {
    let prefix = format!("apps[{i}]");
    let key = |field: &str| format!("{prefix}.{field}");
    if app.name.trim().is_empty() {
        return Err((key("name"), "must not be empty".to_string()).into());
    }
    if !seen.insert(app.name.clone()) {
        return Err((key("name"), format!("duplicate app name {:?}", app.name)).into());
    }
    let corp_id = secrets.expand(&app.corp_id, &key("corp_id"), "offline-corp-id")?;
    if corp_id.trim().is_empty() {
        return Err((key("corp_id"), "must not be empty".to_string()).into());
    }
    if app.agent_id <= 0 {
        return Err((key("agent_id"), "must be the app's positive AgentId".to_string()).into());
    }
    let secret = secrets.read(&prefix, "secret", app.secret, app.secret_file, SecretKind::Opaque)?;
    let callback = app
        .callback
        .map(|raw| interactive::validate_callback(raw, &key("callback"), secrets))
        .transpose()?;
    let rate_limit = storm::validate_rate_limit(app.rate_limit, RateLimit::APP_MEMBER, &key("rate_limit"))?;
    let api_url = match &app.api_url {
        Some(url) => normalize_api_url(url).map_err(at(&key("api_url")))?,
        None => default_api_url.to_string(),
    };
    Ok(AppConfig {
        callback,
        rate_limit,
        directory: app.directory,
        name: app.name,
        corp_id,
        agent_id: app.agent_id,
        secret,
        safe: app.safe,
        api_url,
    })
}

/// Validates `state:`.
fn validate_state(raw: file::StateSection, secrets: &Secrets) -> Result<StateSettings, Problem> {
    let key = |field: &str| format!("state.{field}");
    match raw.backend.as_str() {
        "memory" => {
            if raw.url.is_some() || raw.url_file.is_some() {
                return Err((key("url"), "only `backend: redis` takes a url".to_string()).into());
            }
            Ok(StateSettings::Memory)
        }
        "redis" => {
            let url = secrets
                .read("state", "url", raw.url, raw.url_file, SecretKind::RedisUrl)?
                .ok_or_else(|| (key("url"), "backend redis needs `url` or `url_file`".to_string()))?;
            check_redis_url(url.expose()).map_err(|m| (key("url"), m))?;
            if raw.key_prefix.contains(['{', '}']) {
                return Err((
                    key("key_prefix"),
                    "must not contain { or }: they choose the Redis Cluster slot of each key".to_string(),
                )
                    .into());
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
        )
            .into()),
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
        // serde_norway puts its own (shorter) path first: keep only ours, one path a line.
        let mut message = inner.to_string();
        if let Some((prefix, rest)) = message.split_once(": ") {
            if !prefix.contains(' ') && key.starts_with(prefix) {
                message = rest.to_string();
            }
        }
        // Rust's integer type names mean nothing to a YAML author.
        for rust in ["i64", "u64", "usize", "u32", "u16"] {
            message = message.replace(&format!("expected {rust}"), "expected a whole number");
        }
        message = message.replace(
            "expected a duration",
            "expected a duration like 500ms, 5s, 10m or 1h30m",
        );
        let message = match inner.location() {
            Some(at) if !message.contains("line") => {
                format!("{message} at line {}, column {}", at.line(), at.column())
            }
            _ => message,
        };
        (key, message)
    })
}

/// Validates a `basic_auth: {username, password | password_file}` found at `key`.
pub(crate) fn validate_basic_auth(
    basic: file::BasicAuthSection,
    key: &str,
    secrets: &Secrets,
) -> Result<(String, Secret), Problem> {
    let password = secrets
        .read(
            key,
            "password",
            basic.password,
            basic.password_file,
            SecretKind::Opaque,
        )?
        .ok_or_else(|| (format!("{key}.password"), "must not be empty".to_string()))?;
    if basic.username.is_empty() || basic.username.contains(':') {
        return Err((
            format!("{key}.username"),
            "must be non-empty and contain no ':'".to_string(),
        )
            .into());
    }
    Ok((basic.username, password))
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
