//! The stack under test: the fake WeCom (in this process), our binary and a real
//! Alertmanager (child processes), each on its own free port with its own temp dir, so
//! tests can run in parallel. Dropping the [`Stack`] kills both processes; when the test
//! is failing (or `E2E_LOGS` is set), their stderr and the fake's request log are printed
//! first. The [`HaStack`] has two of each process, clustered Alertmanagers and replicas
//! of ours sharing a Redis (`tests/support/redis.rs`).

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use tempfile::TempDir;

use crate::fake_wecom::{DeliveredMessage, FakeWeCom};
use crate::redis_server::RedisServer;

pub const CORP_ID: &str = "wwe2ecorp0001";
pub const OPS_AGENT: i64 = 1000002;
/// Secrets start with TESTSECRET like the API tests' ones.
pub const OPS_SECRET: &str = "TESTSECRET-e2e-ops-7c1d9e42";
pub const WEBHOOK_TOKEN: &str = "TESTSECRET-e2e-webhook-3b8a51f0";

/// Users in the fake's directory. Anyone else is unknown to WeCom (81013).
pub const DIRECTORY: [&str; 2] = ["alice", "bob"];

/// How long a test waits for something Alertmanager should do within a few group intervals.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for a process to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(100);

/// What a test can vary.
pub struct Options {
    /// Our config's `routes:` section.
    pub routes: String,
    /// Alertmanager's `group_interval`. Its notification timeout (how long it retries one
    /// notification) is `max(group_interval, 10s)`; after a failure it tries the whole
    /// notification again at the next group interval.
    pub group_interval: &'static str,
    /// The bearer token Alertmanager sends (its `credentials_file` content).
    pub alertmanager_token: String,
    /// Alertmanager's route `group_by`, as YAML.
    pub group_by: &'static str,
    /// More top-level sections of our config (e.g. `storm:`).
    pub service_extra: &'static str,
    /// More keys of our config's app `ops` (e.g. `callback:`), indented by four spaces.
    pub app_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            routes: String::new(),
            group_interval: "2s",
            alertmanager_token: WEBHOOK_TOKEN.to_string(),
            group_by: "[alertname, team]",
            service_extra: "",
            app_extra: String::new(),
        }
    }
}

pub struct Stack {
    pub wecom: FakeWeCom,
    pub service: Service,
    pub alertmanager: Alertmanager,
    // Declared last: removed after both processes are gone.
    _dir: TempDir,
}

/// Alertmanager's own metrics for our webhook receiver.
pub const WEBHOOK: [(&str, &str); 1] = [("integration", "webhook")];

impl Stack {
    /// Posts one firing DiskFull alert of team db through Alertmanager and waits until
    /// Alertmanager counts its notification as failed.
    pub async fn post_and_wait_for_alertmanager_failure(&self, what: &str) {
        self.alertmanager
            .post_alerts(&[alert(&[("alertname", "DiskFull"), ("team", "db")], "disk full")])
            .await;
        eventually(what, DELIVERY_TIMEOUT, || async {
            let theirs = self.alertmanager.metrics().await;
            (theirs.sum("alertmanager_notifications_failed_total", &WEBHOOK) >= 1.0).then_some(())
        })
        .await;
    }

    /// Starts the fake WeCom (app `ops`, users alice and bob), our binary, then Alertmanager.
    pub async fn start(options: Options) -> Stack {
        let alertmanager_binary = alertmanager_binary();
        let dir = tempfile::Builder::new()
            .prefix("alertmanager-wecom-e2e-")
            .tempdir()
            .expect("temp dir");

        let wecom = FakeWeCom::start().await;
        wecom.add_app(CORP_ID, OPS_SECRET, OPS_AGENT);
        wecom.add_users(&DIRECTORY);

        let service = Service::start(
            dir.path(),
            &wecom.base_url(),
            &ServiceConfig {
                routes: &options.routes,
                extra: options.service_extra,
                app_extra: &options.app_extra,
                ..ServiceConfig::default()
            },
        )
        .await;
        let alertmanager = Alertmanager::start(
            &alertmanager_binary,
            dir.path(),
            &AlertmanagerConfig {
                webhook_address: &service.address,
                group_interval: options.group_interval,
                group_by: options.group_by,
                token: &options.alertmanager_token,
                ..AlertmanagerConfig::default()
            },
        )
        .await;
        Stack {
            wecom,
            service,
            alertmanager,
            _dir: dir,
        }
    }

    /// Waits until the fake has delivered at least `n` messages; returns all of them.
    pub async fn delivered_at_least(&self, n: usize) -> Vec<DeliveredMessage> {
        eventually(
            &format!("{n} message(s) delivered by WeCom"),
            DELIVERY_TIMEOUT,
            || async {
                let delivered = self.wecom.delivered();
                (delivered.len() >= n).then_some(delivered)
            },
        )
        .await
    }

    /// What Alertmanager logged so far.
    pub fn alertmanager_log(&self) -> String {
        self.alertmanager.process.log()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        print_logs_if_failing(
            &[
                ("alertmanager-wecom stderr", self.service.process.log()),
                ("prometheus-alertmanager stderr", self.alertmanager.process.log()),
            ],
            &self.wecom,
        );
    }
}

/// When the test is failing (or `E2E_LOGS` is set): prints each `(title, log)` and the
/// fake's request log.
fn print_logs_if_failing(logs: &[(&str, String)], wecom: &FakeWeCom) {
    if !std::thread::panicking() && std::env::var_os("E2E_LOGS").is_none() {
        return;
    }
    for (title, log) in logs {
        eprintln!("\n===== {title} =====\n{log}");
    }
    eprintln!("===== fake WeCom requests =====");
    for r in wecom.requests() {
        eprintln!(
            "{:?} {} -> HTTP {} errcode {:?} {}",
            r.endpoint,
            r.method,
            r.status,
            r.errcode,
            r.body.chars().take(300).collect::<String>()
        );
    }
    eprintln!("===== end =====");
}

// ---------------------------------------------------------------------------------------
// Two of everything: HA Alertmanagers, and replicas of ours sharing their state

/// Where our replicas keep their delivery state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateBackend {
    /// No `state:` section (the default, memory): each replica on its own, which is wrong
    /// behind HA Alertmanagers. No test uses it: with it, the exactly-once test fails
    /// (most groups are delivered twice, once through each replica).
    #[allow(dead_code)]
    Memory,
    /// `state: {backend: redis, …}` on the stack's Redis, with the stack's key prefix.
    Redis,
}

/// What an HA test can vary.
pub struct HaOptions {
    /// Our config's `routes:` section (the same for both replicas).
    pub routes: String,
    /// Both Alertmanagers' `group_interval`.
    pub group_interval: &'static str,
    /// Both Alertmanagers' `group_by`, as YAML.
    pub group_by: &'static str,
    pub backend: StateBackend,
    /// More keys of both replicas' app `ops`, indented by four spaces.
    pub app_extra: String,
}

impl Default for HaOptions {
    fn default() -> Self {
        HaOptions {
            routes: String::new(),
            group_interval: "2s",
            group_by: "[alertname]",
            backend: StateBackend::Redis,
            app_extra: String::new(),
        }
    }
}

/// Our replicas' `wecom.timeout` and `wecom.delivery_deadline` in an [`HaStack`]: longer
/// than the other tests' (1 s, 2 s), so that a slow WeCom send (`Fault::Delay` of up to
/// 3 s) outlasts [`PEER_TIMEOUT`] and still succeeds: the peer's notification comes while
/// the first is being sent, and no send is ambiguous (timed out by us, yet delivered).
pub const HA_WECOM_TIMEOUT: &str = "4s";
pub const HA_DELIVERY_DEADLINE: &str = "6s";

/// ```text
///        ┌─▶ Alertmanager A ──webhook──▶ alertmanager-wecom 1 ─┐
/// test ──┤        ▲ gossip                       │ Redis       ├─▶ fake WeCom
///        └─▶ Alertmanager B ──webhook──▶ alertmanager-wecom 2 ─┘
/// ```
///
/// The test posts every alert to both Alertmanagers, as Prometheus does. They gossip
/// which notifications they sent; the one later in the cluster's order waits
/// [`PEER_TIMEOUT`] before it looks, and notifies too when the first has not finished (a
/// slow or failing delivery). Our two replicas share their delivery state in Redis, which
/// is what keeps such a second notification from becoming a second message.
pub struct HaStack {
    /// `[A, B]`: A notifies `services[0]`, B `services[1]`.
    pub alertmanagers: [Alertmanager; 2],
    /// Our replicas 1 and 2.
    pub services: [Service; 2],
    /// Started for every stack; used by the replicas with [`StateBackend::Redis`].
    pub redis: RedisServer,
    /// This stack's `state.key_prefix`, unique per stack.
    pub key_prefix: String,
    pub wecom: FakeWeCom,
    // Declared last: removed after the processes are gone.
    _dir: TempDir,
}

impl HaStack {
    /// Starts the fake WeCom (app `ops`, users alice and bob), Redis, our two replicas,
    /// then the two Alertmanagers, and waits until they have formed a settled cluster.
    pub async fn start(options: HaOptions) -> HaStack {
        let alertmanager_binary = alertmanager_binary();
        let dir = tempfile::Builder::new()
            .prefix("alertmanager-wecom-e2e-ha-")
            .tempdir()
            .expect("temp dir");
        let unique = dir.path().file_name().unwrap().to_string_lossy().into_owned();
        let key_prefix = format!("alertmanager-wecom:{unique}:");

        let wecom = FakeWeCom::start().await;
        wecom.add_app(CORP_ID, OPS_SECRET, OPS_AGENT);
        wecom.add_users(&DIRECTORY);
        let redis = RedisServer::start();

        let state = match options.backend {
            StateBackend::Memory => String::new(),
            StateBackend::Redis => format!(
                r#"state:
  backend: redis
  url: {url}
  key_prefix: "{key_prefix}"
  connect_timeout: 1s
  command_timeout: 250ms
"#,
                url = redis.url()
            ),
        };
        let mut services = Vec::new();
        for replica in ["wecom-1", "wecom-2"] {
            let dir = dir.path().join(replica);
            fs::create_dir(&dir).expect("replica dir");
            let config = ServiceConfig {
                routes: &options.routes,
                wecom_timeout: HA_WECOM_TIMEOUT,
                delivery_deadline: HA_DELIVERY_DEADLINE,
                extra: &state,
                app_extra: &options.app_extra,
                server_extra: "",
            };
            services.push(Service::start(&dir, &wecom.base_url(), &config).await);
        }
        let services: [Service; 2] = services.try_into().ok().unwrap();

        let cluster_ports = loop {
            let ports = [free_port(), free_port()];
            if ports[0] != ports[1] {
                break ports;
            }
        };
        let mut alertmanagers = Vec::new();
        for (i, name) in ["am-a", "am-b"].into_iter().enumerate() {
            let dir = dir.path().join(name);
            fs::create_dir(&dir).expect("Alertmanager dir");
            let config = AlertmanagerConfig {
                webhook_address: &services[i].address,
                group_interval: options.group_interval,
                group_by: options.group_by,
                token: WEBHOOK_TOKEN,
                // Each its own address: the webhook bodies differ in `externalURL`, and so do
                // the messages rendered from them (the markdown template's silence links),
                // so WeCom's own duplicate check cannot hide a message sent twice; and a
                // card's silence button reaches the Alertmanager that notified it.
                external_url: None,
                cluster: Some(Cluster {
                    listen_port: cluster_ports[i],
                    peer_ports: vec![cluster_ports[1 - i]],
                }),
            };
            alertmanagers.push(Alertmanager::start(&alertmanager_binary, &dir, &config).await);
        }
        let alertmanagers: [Alertmanager; 2] = alertmanagers.try_into().ok().unwrap();

        let stack = HaStack {
            alertmanagers,
            services,
            redis,
            key_prefix,
            wecom,
            _dir: dir,
        };
        // Until then an Alertmanager holds its notifications back; waiting here keeps the
        // tests' timings about delivery only.
        for (am, name) in stack.alertmanagers.iter().zip(["A", "B"]) {
            eventually(
                &format!("Alertmanager {name} in a settled cluster of 2"),
                READY_TIMEOUT,
                || async {
                    let (status, peers) = am.cluster_status().await;
                    (status == "ready" && peers == 2).then_some(())
                },
            )
            .await;
        }
        stack
    }

    /// Posts the alerts to both Alertmanagers, as Prometheus does (at the same time).
    pub async fn post_alerts(&self, alerts: &[Value]) {
        let [a, b] = &self.alertmanagers;
        tokio::join!(a.post_alerts(alerts), b.post_alerts(alerts));
    }

    /// How many delivered messages mention each name (e.g. each group's alertname).
    pub fn deliveries_mentioning(&self, names: &[String]) -> Vec<usize> {
        let contents: Vec<String> = self.wecom.delivered().iter().map(content).collect();
        names
            .iter()
            .map(|name| contents.iter().filter(|c| c.contains(name.as_str())).count())
            .collect()
    }

    /// The sum of `name{labels…}` over both replicas' metrics, and each one's.
    pub async fn replica_sums(&self, name: &str, labels: &[(&str, &str)]) -> [f64; 2] {
        let [one, two] = &self.services;
        let (one, two) = tokio::join!(one.metrics(), two.metrics());
        [one.sum(name, labels), two.sum(name, labels)]
    }
}

impl Drop for HaStack {
    fn drop(&mut self) {
        let [one, two] = &self.services;
        let [a, b] = &self.alertmanagers;
        print_logs_if_failing(
            &[
                ("alertmanager-wecom 1 stderr", one.process.log()),
                ("alertmanager-wecom 2 stderr", two.process.log()),
                ("prometheus-alertmanager A stderr", a.process.log()),
                ("prometheus-alertmanager B stderr", b.process.log()),
                ("redis-server output", self.redis.log()),
            ],
            &self.wecom,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Our binary

/// What varies in our config.
struct ServiceConfig<'a> {
    /// The `routes:` section.
    routes: &'a str,
    /// `wecom.timeout` (per WeCom call) and `wecom.delivery_deadline`.
    wecom_timeout: &'a str,
    delivery_deadline: &'a str,
    /// More top-level sections (e.g. `state:`), appended.
    extra: &'a str,
    /// More keys of the app, indented by four spaces.
    app_extra: &'a str,
    /// More keys of `server:`, indented by two spaces.
    server_extra: &'a str,
}

impl Default for ServiceConfig<'_> {
    fn default() -> Self {
        ServiceConfig {
            routes: "",
            wecom_timeout: "1s",
            delivery_deadline: "2s",
            extra: "",
            app_extra: "",
            server_extra: "",
        }
    }
}

pub struct Service {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    process: Process,
    http: reqwest::Client,
}

impl Service {
    /// Writes its config and secrets into `dir` and starts it.
    async fn start(dir: &Path, api_url: &str, config: &ServiceConfig<'_>) -> Service {
        let ServiceConfig {
            routes,
            wecom_timeout,
            delivery_deadline,
            extra,
            app_extra,
            server_extra,
        } = config;
        let secret_file = write_secret(dir, "wecom-ops-secret", &format!("{OPS_SECRET}\n"));
        let token_file = write_secret(dir, "webhook-token", &format!("{WEBHOOK_TOKEN}\n"));
        let config = dir.join("alertmanager-wecom.yml");
        let log = dir.join("alertmanager-wecom.log");
        let (process, address) = spawn_until_ready("alertmanager-wecom", &log, |port| {
            let yaml = format!(
                r#"# Written by the e2e harness.
listen: 127.0.0.1:{port}
wecom:
  api_url: {api_url}
  timeout: {wecom_timeout}
  delivery_deadline: {delivery_deadline}
server:
  auth:
    bearer_token_file: {token_file}
{server_extra}
apps:
  - name: ops
    corp_id: {CORP_ID}
    agent_id: {OPS_AGENT}
    secret_file: {secret_file}
{app_extra}
{routes}
templates:
  timezone: Asia/Shanghai
{extra}"#,
                token_file = token_file.display(),
                secret_file = secret_file.display(),
            );
            fs::write(&config, yaml).expect("write our config");
            let mut command = Command::new(env!("CARGO_BIN_EXE_alertmanager-wecom"));
            command
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info,alertmanager_wecom=debug");
            command
        })
        .await;
        Service {
            address,
            process,
            http: reqwest::Client::new(),
        }
    }

    /// Our binary alone, with no Alertmanager in front: for tests that talk to it directly
    /// (the playground's browser test). `server_extra`: keys of `server:`, indented by two
    /// spaces; the bearer token is [`WEBHOOK_TOKEN`].
    pub async fn start_alone(dir: &Path, api_url: &str, routes: &str, server_extra: &str) -> Service {
        Service::start(
            dir,
            api_url,
            &ServiceConfig {
                routes,
                server_extra,
                ..ServiceConfig::default()
            },
        )
        .await
    }

    /// POST /alerts directly (not through Alertmanager), with `Authorization: Bearer TOKEN`
    /// when a token is given.
    /// What the service logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The process id of our binary, for reading its memory and sockets from /proc.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    pub async fn post_alerts(&self, body: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/alerts", self.address))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("our service answers")
    }

    pub async fn metrics(&self) -> Scrape {
        scrape(&self.http, &format!("{}/metrics", self.address)).await
    }

    /// Waits until the sum of `name{labels…}` in our metrics is `value`. (We count a
    /// webhook just after WeCom accepted its message, so a scrape made as soon as the fake
    /// shows a delivery can be a moment early.)
    pub async fn wait_for_counter(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut last = f64::NAN;
        let waited = tokio::time::timeout(DELIVERY_TIMEOUT, async {
            loop {
                last = self.metrics().await.sum(name, labels);
                if last == value {
                    return;
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "our {name}{labels:?} is {last}, not {value}, after {DELIVERY_TIMEOUT:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Alertmanager

pub struct Alertmanager {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    process: Process,
    http: reqwest::Client,
}

/// One Alertmanager's config and flags.
struct AlertmanagerConfig<'a> {
    /// Our service's `http://127.0.0.1:PORT`: the webhook goes to its `/alerts`.
    webhook_address: &'a str,
    group_interval: &'a str,
    /// The route's `group_by`, as YAML.
    group_by: &'a str,
    /// The bearer token it sends.
    token: &'a str,
    /// `--web.external-url` (the webhook body's `externalURL`); by default its own address.
    external_url: Option<&'a str>,
    /// Gossip with peers, or run alone (the default).
    cluster: Option<Cluster>,
}

impl Default for AlertmanagerConfig<'_> {
    fn default() -> Self {
        AlertmanagerConfig {
            webhook_address: "",
            group_interval: "2s",
            group_by: "[alertname, team]",
            token: WEBHOOK_TOKEN,
            external_url: None,
            cluster: None,
        }
    }
}

/// An Alertmanager's place in an HA cluster on 127.0.0.1.
struct Cluster {
    /// `--cluster.listen-address=127.0.0.1:PORT` (TCP and UDP).
    listen_port: u16,
    /// `--cluster.peer=127.0.0.1:PORT` for each.
    peer_ports: Vec<u16>,
}

/// Peers must notify within this or the next one in line notifies too
/// (`--cluster.peer-timeout`: Alertmanager's peer at position n waits n times this
/// before it looks whether the notification was sent).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);

impl Alertmanager {
    async fn start(binary: &Path, dir: &Path, config: &AlertmanagerConfig<'_>) -> Alertmanager {
        let AlertmanagerConfig {
            webhook_address,
            group_interval,
            group_by,
            token,
            external_url,
            cluster,
        } = config;
        let credentials_file = write_secret(dir, "alertmanager-webhook-token", &format!("{token}\n"));
        let config_file = dir.join("alertmanager.yml");
        fs::write(
            &config_file,
            format!(
                r#"# Written by the e2e harness.
route:
  receiver: wecom
  group_by: {group_by}
  group_wait: 1s
  group_interval: {group_interval}
  repeat_interval: 1h
receivers:
  - name: wecom
    webhook_configs:
      - url: {webhook_address}/alerts
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            credentials_file: {credentials_file}
"#,
                credentials_file = credentials_file.display(),
            ),
        )
        .expect("write Alertmanager's config");
        let storage = dir.join("alertmanager-data");
        let log = dir.join("alertmanager.log");
        let (process, address) = spawn_until_ready("prometheus-alertmanager", &log, |port| {
            let mut command = Command::new(binary);
            let external_url = match external_url {
                Some(url) => url.to_string(),
                None => format!("http://127.0.0.1:{port}"),
            };
            command
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--web.external-url={external_url}"))
                .arg("--log.level=debug");
            match cluster {
                None => {
                    command.arg("--cluster.listen-address=");
                }
                Some(cluster) => {
                    command
                        .arg(format!(
                            "--cluster.listen-address=127.0.0.1:{}",
                            cluster.listen_port
                        ))
                        .arg(format!("--cluster.peer-timeout={}s", PEER_TIMEOUT.as_secs()))
                        // Gossip settles after 5 polls 10 gossip intervals apart: 1.25 s.
                        .arg("--cluster.gossip-interval=25ms")
                        .arg("--cluster.pushpull-interval=1s")
                        .arg("--cluster.reconnect-interval=1s");
                    for peer in &cluster.peer_ports {
                        command.arg(format!("--cluster.peer=127.0.0.1:{peer}"));
                    }
                }
            }
            command
        })
        .await;
        Alertmanager {
            address,
            process,
            http: reqwest::Client::new(),
        }
    }

    /// POST /api/v2/alerts, as Prometheus would.
    pub async fn post_alerts(&self, alerts: &[Value]) {
        let response = self
            .http
            .post(format!("{}/api/v2/alerts", self.address))
            .json(alerts)
            .send()
            .await
            .expect("Alertmanager answers");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "Alertmanager refused the alerts: {status} {body}"
        );
    }

    pub async fn metrics(&self) -> Scrape {
        scrape(&self.http, &format!("{}/metrics", self.address)).await
    }

    /// GET /api/v2/silences: every silence Alertmanager holds.
    pub async fn silences(&self) -> Vec<Value> {
        self.http
            .get(format!("{}/api/v2/silences", self.address))
            .send()
            .await
            .expect("Alertmanager answers")
            .json()
            .await
            .expect("a JSON list of silences")
    }

    /// `cluster.status` ("ready", "settling" or "disabled") and the number of peers it
    /// knows (itself included) from GET /api/v2/status.
    pub async fn cluster_status(&self) -> (String, usize) {
        let status: Value = self
            .http
            .get(format!("{}/api/v2/status", self.address))
            .send()
            .await
            .expect("Alertmanager answers")
            .json()
            .await
            .expect("status JSON");
        let cluster = &status["cluster"];
        (
            cluster["status"].as_str().unwrap_or_default().to_string(),
            cluster["peers"].as_array().map_or(0, Vec::len),
        )
    }
}

/// `$E2E_ALERTMANAGER`, else `prometheus-alertmanager` or `alertmanager` on PATH. Panics
/// with the install instruction when there is none: a run that asked for these tests
/// must not pass without them.
fn alertmanager_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("E2E_ALERTMANAGER") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["prometheus-alertmanager", "alertmanager"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the end-to-end tests need a real Alertmanager and none was found \
                 (prometheus-alertmanager or alertmanager on PATH, or $E2E_ALERTMANAGER): \
                 apt-get install -y prometheus-alertmanager; then run \
                 cargo test --test e2e -- --ignored"
            )
        })
}

// ---------------------------------------------------------------------------------------
// Alerts as posted to Alertmanager's API

/// A firing alert starting now. (Not earlier: Alertmanager flushes a new group at once,
/// without `group_wait`, when its first alert is already older than `group_wait`, and the
/// other alerts of the same POST could then miss the group's first notification.)
pub fn alert(labels: &[(&str, &str)], summary: &str) -> Value {
    let labels: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    json!({
        "labels": labels,
        "annotations": {"summary": summary},
        "startsAt": rfc3339(Utc::now()),
        "generatorURL": "http://prometheus.example.com/graph?g0.expr=up",
    })
}

/// The same alert, resolved just now (what Prometheus sends when it stops firing): `endsAt`
/// is in the past by the time Alertmanager looks at it.
pub fn resolved(alert: &Value) -> Value {
    let mut alert = alert.clone();
    alert["endsAt"] = Value::String(rfc3339(Utc::now()));
    alert
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The text a recipient reads: `content` of text/markdown; title and description of a
/// textcard.
pub fn content(message: &DeliveredMessage) -> String {
    let body = &message.body[&message.msgtype];
    match message.msgtype.as_str() {
        "textcard" => format!(
            "{}\n{}",
            body["title"].as_str().unwrap_or(""),
            body["description"].as_str().unwrap_or("")
        ),
        _ => body["content"].as_str().unwrap_or("").to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Metrics

/// A Prometheus text-format scrape.
pub struct Scrape(pub String);

impl Scrape {
    /// The sum of the samples of `name` whose labels include all of `labels`; 0 if none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let mut total = 0.0;
        for line in self.0.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (metric, label_set) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            // Label values here never contain commas, so splitting on them is enough.
            let pairs: Vec<&str> = label_set.split(',').collect();
            if metric == name && wanted.iter().all(|w| pairs.contains(&w.as_str())) {
                total += value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad sample: {line}"));
            }
        }
        total
    }
}

async fn scrape(http: &reqwest::Client, url: &str) -> Scrape {
    let response = http.get(url).send().await.expect("metrics endpoint answers");
    assert!(response.status().is_success(), "GET {url}: {}", response.status());
    Scrape(response.text().await.expect("metrics body"))
}

// ---------------------------------------------------------------------------------------
// Waiting

/// Polls `probe` until it returns `Some`, at most `timeout`; panics naming `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Checks that `check` holds now and keeps holding for `period` (to show that something
/// does not happen, e.g. a retry); panics naming `what` as soon as it does not.
pub async fn holds_for<F, Fut>(what: &str, period: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + period;
    loop {
        assert!(check().await, "no longer true: {what}");
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

// ---------------------------------------------------------------------------------------
// Processes

/// A child process, killed (and reaped) on drop; stdout and stderr go to `log`.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command(port)` on a free port until it answers `GET /-/ready` with 200, and
/// returns it with its `http://127.0.0.1:PORT`. Another process can take the port between
/// our probe and the child's bind, so a child that exits early is tried again on a new
/// port (every attempt appends to `log`).
async fn spawn_until_ready(
    name: &str,
    log: &Path,
    mut command: impl FnMut(u16) -> Command,
) -> (Process, String) {
    const ATTEMPTS: usize = 3;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    for attempt in 1..=ATTEMPTS {
        let port = free_port();
        let address = format!("http://127.0.0.1:{port}");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log file");
        let err = out.try_clone().expect("clone log file");
        let child = command(port)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut process = Process {
            child,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = process.child.try_wait().expect("child status") {
                assert!(
                    attempt < ATTEMPTS,
                    "{name} exited ({status}) before it was ready, {ATTEMPTS} times; its output:\n{}",
                    process.log()
                );
                break;
            }
            if let Ok(response) = http.get(format!("{address}/-/ready")).send().await {
                if response.status().is_success() {
                    return (process, address);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready at {address} after {READY_TIMEOUT:?}; its output:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    unreachable!("the last attempt either returns or panics")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Writes a secret file readable by its owner only; returns its path.
fn write_secret(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("create secret file");
    file.write_all(content.as_bytes()).expect("write secret file");
    path
}
