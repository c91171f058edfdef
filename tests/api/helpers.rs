//! `spawn_app()` and friends: start the application exactly as `main` does (through
//! `Application::build`), on a free port, pointed at a fresh fake WeCom.

use std::io::Write;
use std::sync::{Arc, Mutex, Once, OnceLock};

use alertmanager_wecom::http::{Application, Shutdown};
use alertmanager_wecom::service::{ConfigSource, Runtime};

use crate::fake_wecom::FakeWeCom;

pub const CORP_ID: &str = "wwtestcorp0001";
/// Every secret in the tests starts with this, so a log scan can look for all of them.
pub const SECRET_MARK: &str = "TESTSECRET";
pub const OPS_SECRET: &str = "TESTSECRET-ops-4f9c1d2e8a7b";
pub const OPS_AGENT: i64 = 1000002;

pub use alertmanager_wecom::render::samples::{CRASHLOOP, RESOLVED, UNICODE_MARKUP};

/// Routes used by most tests: team db → textcard to alice + party 2; team pay → markdown
/// to alice; everything else → text to tag 1.
pub const DEFAULT_ROUTES: &str = r#"
routes:
  - name: db
    matchers: ['team="db"']
    app: ops
    msgtype: textcard
    to: {users: [alice], parties: [2]}
  - name: pay
    matchers: ['team="pay"']
    app: ops
    msgtype: markdown
    to: {users: [alice]}
  - name: default
    app: ops
    msgtype: text
    to: {tags: [1]}
"#;

pub struct TestApp {
    pub address: String,
    pub wecom: FakeWeCom,
    /// Stops the app the way SIGTERM does.
    pub shutdown: Shutdown,
    pub http: reqwest::Client,
}

/// What a test can vary in the configuration; `Default` gives the usual setup.
/// `top_extra` for tests of the budget alone: over-budget notifications are held back
/// (503) instead of collected into digests.
pub const NO_DIGESTS: &str = "storm: {digest: false}\n";

pub struct TestConfig {
    /// The `routes:` section.
    pub routes: String,
    /// Extra lines inside `wecom:` (indented by two spaces).
    pub wecom_extra: String,
    /// Extra top-level sections.
    pub top_extra: String,
    /// The ops app's secret line (`secret: …`); empty for none (dry-run).
    pub secret_line: String,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            routes: DEFAULT_ROUTES.to_string(),
            wecom_extra: String::new(),
            top_extra: String::new(),
            secret_line: format!("secret: {OPS_SECRET}"),
        }
    }
}

impl TestConfig {
    pub fn routes(routes: &str) -> TestConfig {
        TestConfig {
            routes: routes.to_string(),
            ..TestConfig::default()
        }
    }
}

/// The app with [`DEFAULT_ROUTES`], a directory holding alice, bob, party 2 and tag 1.
pub async fn spawn_app() -> TestApp {
    spawn(TestConfig::default()).await
}

/// A fake WeCom with the ops app and a directory of alice, bob, party 2 and tag 1.
pub async fn start_fake_wecom() -> FakeWeCom {
    let wecom = FakeWeCom::start().await;
    wecom.add_app(CORP_ID, OPS_SECRET, OPS_AGENT);
    wecom.add_users(&["alice", "bob"]);
    wecom.add_parties(&["2"]);
    wecom.add_tags(&["1"]);
    wecom
}

pub async fn spawn(config: TestConfig) -> TestApp {
    let wecom = start_fake_wecom().await;
    let yaml = config_yaml(&config, &wecom.base_url());
    spawn_with_yaml(&yaml, wecom).await
}

pub fn config_yaml(config: &TestConfig, api_url: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
wecom:
  api_url: {api_url}
  timeout: 1s
  delivery_deadline: 3s
{wecom_extra}
apps:
  - name: ops
    corp_id: {CORP_ID}
    agent_id: {OPS_AGENT}
    {secret_line}
{routes}
templates:
  timezone: Asia/Shanghai
{top_extra}
"#,
        wecom_extra = config.wecom_extra,
        secret_line = config.secret_line,
        routes = config.routes,
        top_extra = config.top_extra,
    )
}

pub async fn spawn_with_yaml(yaml: &str, wecom: FakeWeCom) -> TestApp {
    spawn_from(ConfigSource::Text(yaml.to_string()), wecom).await
}

/// The app reading its configuration from `source` (a file, for reload tests).
pub async fn spawn_from(source: ConfigSource, wecom: FakeWeCom) -> TestApp {
    capture_logs();
    let runtime = Runtime::start(source, None, false).expect("valid test config");
    let application = Application::build(runtime).expect("binds a port");
    let shutdown = application.shutdown_handle();
    let address = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until_stopped());
    TestApp {
        address,
        wecom,
        shutdown,
        http: reqwest::Client::new(),
    }
}

impl TestApp {
    pub async fn post_alerts(&self, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/alerts", self.address))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request reaches the app")
    }

    /// Posts and returns the status and the JSON report.
    pub async fn post(&self, body: &str) -> (u16, serde_json::Value) {
        let response = self.post_alerts(body).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The value of one sample in a metrics scrape, e.g. `metric(&text, "x_total{a=\"b\"}")`.
pub fn metric(scrape: &str, sample: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {sample} in scrape"))
        .trim()
        .parse()
        .unwrap()
}

/// The crashloop fixture with one more firing alert in front, labelled with `labels` (the
/// members of a JSON object: `"alertname":"DiskFull","team":"db"`).
pub fn crashloop_with(labels: &str) -> String {
    CRASHLOOP.replace(
        r#""alerts":[{"#,
        &format!(r#""alerts":[{{"status":"firing","labels":{{{labels}}},"annotations":{{}}}},{{"#),
    )
}

/// A payload with `n` firing alerts of one group, each with the given labels plus `instance`.
pub fn payload_with_alerts(n: usize, labels: &str, summary: &str) -> String {
    let alerts: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"status":"firing","labels":{{{labels},"instance":"host-{i}"}},"annotations":{{"summary":{summary}}},"startsAt":"2026-11-25T17:46:42Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus.example.com/graph","fingerprint":"{i:016x}"}}"#,
                summary = serde_json::to_string(summary).unwrap()
            )
        })
        .collect();
    format!(
        r#"{{"version":"4","groupKey":"{{}}:{{alertname=\"Many\"}}","status":"firing","receiver":"wecom","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://alertmanager.example.com","truncatedAlerts":0,"alerts":[{}]}}"#,
        alerts.join(",")
    )
}

/// Everything every test logged, at trace level, for the secret-leak check.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Routes every log line of the test process, at the most verbose level, into a buffer.
pub fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        env_logger::Builder::new()
            .filter_level(log::LevelFilter::Trace)
            .target(env_logger::Target::Pipe(Box::new(Capture(log_buffer().clone()))))
            .is_test(false)
            .init();
    });
}
