//! The template playground in a real browser: headless Chromium, driven over its DevTools
//! protocol, loads the page from our binary, sees the phone rendering and the sizes, edits
//! the template and sees both change, then breaks it and sees the error at its line.
//!
//! Chromium is `$CHROMIUM`, else `/usr/bin/chromium` (`apt-get install -y chromium`).
//! `PLAYGROUND_SCREENSHOT=/tmp/playground.png` saves what the page looked like.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::fake_wecom::FakeWeCom;
use crate::harness::{Service, CORP_ID, DIRECTORY, OPS_AGENT, OPS_SECRET, WEBHOOK_TOKEN};

const PAGE_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_EVERY: Duration = Duration::from_millis(50);

const ROUTES: &str = r#"routes:
  - {name: db, matchers: ['team="db"'], app: ops, msgtype: textcard, to: {users: [alice]}}
  - {name: pay, matchers: ['team="pay"'], app: ops, msgtype: markdown, to: {users: [alice]}}
  - {name: cards, matchers: ['team="infra"'], app: ops, msgtype: template_card, to: {users: [alice]}}
  - {name: default, app: ops, msgtype: text, to: {users: [alice]}}
"#;

#[tokio::test]
#[ignore = "needs Chromium: apt-get install -y chromium; run with cargo test --test e2e -- --ignored"]
async fn the_playground_renders_a_phone_preview_updates_on_edits_and_points_at_errors() {
    let dir = tempfile::Builder::new()
        .prefix("alertmanager-wecom-playground-")
        .tempdir()
        .unwrap();
    let wecom = FakeWeCom::start().await;
    wecom.add_app(CORP_ID, OPS_SECRET, OPS_AGENT);
    wecom.add_users(&DIRECTORY);
    let service = Service::start_alone(dir.path(), &wecom.base_url(), ROUTES, "  playground: true").await;
    let browser = Browser::start();
    let mut page = browser.open_page().await;
    // The service is behind server.auth: the browser presents the token on every request.
    page.call("Network.enable", json!({})).await;
    page.call(
        "Network.setExtraHTTPHeaders",
        json!({ "headers": { "Authorization": format!("Bearer {WEBHOOK_TOKEN}") } }),
    )
    .await;
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1440, "height": 960, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await;
    page.call(
        "Page.navigate",
        json!({ "url": format!("{}/playground", service.address) }),
    )
    .await;

    // The first route (db, a textcard) with the first sample, as WeCom's client draws it.
    let renders = page.wait_for("the first rendering", RENDERED).await;
    let title = page
        .eval("document.querySelector('#chat .textcard .tc-title').textContent")
        .await;
    assert!(title.as_str().unwrap().contains("KubePodCrashLooping"), "{title}");
    let before = description_size(&mut page).await;
    assert!(before.ends_with(" / 512 B"), "{before}");
    page.screenshot("first").await;

    // Type at the end of the template: the description grows, the page says it is edited.
    page.eval(
        "(() => { const s = document.getElementById('source'); s.focus(); \
         s.setSelectionRange(s.value.length, s.value.length); })()",
    )
    .await;
    page.call(
        "Input.insertText",
        json!({ "text": "\n<div class=\"normal\">typed in the playground</div>" }),
    )
    .await;
    let after_edit = format!("Number(document.body.dataset.renders) > {renders} && {RENDERED}");
    let renders = page
        .wait_for("the rendering of the edited template", &after_edit)
        .await;
    let shown = page
        .eval("document.querySelector('#chat .textcard .tc-desc').textContent")
        .await;
    assert!(
        shown.as_str().unwrap().contains("typed in the playground"),
        "{shown}"
    );
    let after = description_size(&mut page).await;
    assert_ne!(before, after, "the byte count follows the edit");
    assert_eq!(
        page.eval("document.getElementById('edited').classList.contains('hidden')")
            .await,
        false
    );
    page.screenshot("edited").await;

    // A closing tag that closes nothing: the error names the line, the editor marks it.
    page.call("Input.insertText", json!({ "text": "\n{{/if}}" }))
        .await;
    let lines = page
        .eval("document.getElementById('source').value.split('\\n').length")
        .await;
    let line = lines.as_u64().unwrap();
    let failed = format!(
        "Number(document.body.dataset.renders) > {renders} && document.body.dataset.state === 'error'"
    );
    page.wait_for("the template error", &failed).await;
    let error = page.eval("document.getElementById('error').textContent").await;
    let error = error.as_str().unwrap();
    assert!(
        error.contains(&format!("edited template line {line}, column")),
        "{error}"
    );
    assert!(error.contains(&format!("edited template:{line}:")), "{error}");
    let marked = page
        .eval("document.querySelector('#gutter .error-line').dataset.line")
        .await;
    assert_eq!(marked, json!(line.to_string()), "the editor marks line {line}");
    assert_eq!(
        page.eval("document.getElementById('source').classList.contains('has-error')")
            .await,
        true
    );
    page.screenshot("error").await;

    // Another route: its own template again, drawn as its msgtype.
    for (route, drawn) in [
        ("cards", "#chat .tcard .tn-title"),
        ("pay", "#chat .bubble .md strong"),
    ] {
        page.eval(&format!(
            "(() => {{ const r = document.getElementById('route'); r.value = '{route}'; \
             r.dispatchEvent(new Event('change')); }})()"
        ))
        .await;
        let drawn = format!(
            "{RENDERED} && document.querySelector('#chat .sender').textContent.startsWith('{route}') \
             && !!document.querySelector('{drawn}')"
        );
        page.wait_for(&format!("route {route} drawn"), &drawn).await;
        page.screenshot(route).await;
    }

    // Another msgtype for the same route: the editor takes that msgtype's own template.
    page.eval(
        "(() => { const m = document.getElementById('msgtype'); m.value = 'text'; \
         m.dispatchEvent(new Event('change')); })()",
    )
    .await;
    page.wait_for(
        "the route drawn as text",
        &format!("{RENDERED} && !!document.querySelector('#chat .bubble.text')"),
    )
    .await;
    let source = page.eval("document.getElementById('source').value").await;
    assert!(
        !source.as_str().unwrap().contains("<font"),
        "the text template: {source}"
    );
    drop(page);
    drop(browser);
    drop(service);
}

/// The page is done with a render and drew it.
const RENDERED: &str =
    "document.body.dataset.state === 'rendered' && !!document.querySelector('#chat .msg-row')";

async fn description_size(page: &mut Page) -> String {
    let text = page
        .eval("document.querySelector('#sizes .size[data-field=\"description\"] .size-text').textContent")
        .await;
    text.as_str().unwrap_or_default().to_string()
}

// ---------------------------------------------------------------------------------------
// Chromium and its DevTools protocol

/// Headless Chromium in a temp profile; killed (and reaped) when dropped, also when the
/// test fails, with its output printed then.
struct Browser {
    child: Child,
    port: u16,
    browser_path: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Browser {
    fn start() -> Browser {
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
        assert!(
            Path::new(&binary).exists(),
            "no Chromium at {binary}: apt-get install -y chromium (or set CHROMIUM to its path)"
        );
        let dir = tempfile::Builder::new()
            .prefix("playground-chromium-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("chromium.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&binary)
            .args([
                "--headless",
                // Root in CI containers: Chromium's sandbox needs user namespaces.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e} (apt-get install -y chromium)"));
        let mut browser = Browser {
            child,
            port: 0,
            browser_path: String::new(),
            log,
            _dir: dir,
        };
        // Chromium writes the port it took and its browser endpoint once it listens.
        let active = browser._dir.path().join("DevToolsActivePort");
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    browser.port = port.trim().parse().expect("a port number");
                    browser.browser_path = path.trim().to_string();
                    return browser;
                }
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!(
                    "Chromium exited ({status}) before it listened:\n{}",
                    browser.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Chromium wrote no DevToolsActivePort within {PAGE_TIMEOUT:?}:\n{}",
                browser.log()
            );
            std::thread::sleep(POLL_EVERY);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A new tab, attached in flat mode: its commands go over the browser's socket with
    /// its session id.
    async fn open_page(&self) -> Page {
        let url = format!("ws://127.0.0.1:{}{}", self.port, self.browser_path);
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot reach Chromium's DevTools at {url}: {e}"));
        let mut page = Page {
            socket,
            next_id: 0,
            session: None,
            screenshots: std::env::var_os("PLAYGROUND_SCREENSHOT").map(PathBuf::from),
        };
        let target = page
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        page.session = Some(attached["sessionId"].as_str().expect("a session id").to_string());
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== chromium output =====\n{}\n===== end =====", self.log());
        }
        // SIGTERM first: Chromium then ends its renderer and zygote processes itself, which
        // a SIGKILL would leave to exit on their own.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(POLL_EVERY);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab, spoken to over the DevTools protocol.
struct Page {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
    screenshots: Option<PathBuf>,
}

impl Page {
    /// Sends a command and waits for its answer (events on the way are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            command["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .expect("send to Chromium");
        let answer = within(PAGE_TIMEOUT, method, async {
            loop {
                let message = self
                    .socket
                    .next()
                    .await
                    .expect("Chromium closed the socket")
                    .expect("read from Chromium");
                let Message::Text(text) = message else { continue };
                let value: Value = serde_json::from_str(&text).expect("JSON from Chromium");
                if value["id"] == id {
                    return value;
                }
            }
        })
        .await;
        assert!(answer.get("error").is_none(), "{method} failed: {answer}");
        answer["result"].clone()
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            return json!({ "exception": exception });
        }
        result["result"]["value"].clone()
    }

    /// Polls until `condition` (JavaScript) holds; returns the page's render count then.
    async fn wait_for(&mut self, what: &str, condition: &str) -> u64 {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            if self.eval(condition).await == json!(true) {
                let renders = self.eval("Number(document.body.dataset.renders || 0)").await;
                return renders.as_u64().unwrap_or(0);
            }
            if Instant::now() >= deadline {
                let status = self.eval("document.getElementById('status').textContent").await;
                let error = self.eval("document.getElementById('error').textContent").await;
                panic!("timed out after {PAGE_TIMEOUT:?} waiting for {what}; status {status}, error {error}");
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// With `PLAYGROUND_SCREENSHOT=PATH.png`: saves the page as `PATH-{name}.png`.
    async fn screenshot(&mut self, name: &str) {
        let Some(path) = self.screenshots.clone() else {
            return;
        };
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        let stem = path.with_extension("");
        let file = PathBuf::from(format!("{}-{name}.png", stem.display()));
        std::fs::write(&file, png).expect("write the screenshot");
        eprintln!("screenshot: {}", file.display());
    }
}

async fn within<T>(timeout: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| panic!("Chromium did not answer {what} within {timeout:?}"))
}
