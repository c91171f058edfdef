//! The binary itself: `check`, `--version`, and serving the bundled example in dry-run.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

const BINARY: &str = env!("CARGO_BIN_EXE_alertmanager-wecom");

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BINARY).args(args).output().expect("binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_config(dir: &tempfile::TempDir, yaml: &str) -> String {
    let path = dir.path().join("config.yml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    path.display().to_string()
}

const VALID: &str = r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1000002}]
routes:
  - {name: db, matchers: ['team="db"'], app: ops, msgtype: textcard, to: {users: [alice]}}
"#;

#[test]
fn check_accepts_a_valid_config_and_the_bundled_example() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, VALID);
    let (code, stdout, stderr) = run(&["check", "--config", &path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    let (code, _, stderr) = run(&["check"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn check_passes_but_warns_about_deadlines_that_lose_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!("server: {{shutdown_grace: 1s}}\nwecom: {{delivery_deadline: 12s}}\n{VALID}"),
    );
    let (code, stdout, stderr) = run(&["check", "--config", &path]);
    assert_eq!(code, 0, "valid, if unwise: {stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stderr.contains("warning: server.shutdown_grace (1s) is shorter than wecom.delivery_deadline (12s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: wecom.delivery_deadline (12s) is not under 10s"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("is not under 10s").count(),
        1,
        "each warning once, not also as a log line: {stderr}"
    );
    let path = write_config(&dir, &format!("wecom: {{dedup_window: 0s}}\n{VALID}"));
    let (code, _, stderr) = run(&["check", "--config", &path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: storm.digest is on but wecom.dedup_window is 0s"),
        "{stderr}"
    );
    let (_, _, quiet) = run(&["check"]);
    assert!(!quiet.contains("warning"), "the bundled example is safe: {quiet}");
}

#[test]
fn check_names_the_file_and_key_of_each_configuration_mistake() {
    let cases = [
        (
            VALID.replace("msgtype: textcard", "msgtype: textcard, colour: red"),
            "routes[0]",
            "unknown field `colour`",
        ),
        (
            VALID.replace("app: ops, msgtype", "app: dev, msgtype"),
            "routes[0].app",
            "no app named \"dev\"",
        ),
        (
            VALID.replace("to: {users: [alice]}", "to: {}"),
            "routes[0].to",
            "at least one of users",
        ),
        (
            VALID.replace("msgtype: textcard", "msgtype: news"),
            "routes[0].msgtype",
            "not one of",
        ),
        (
            VALID.replace(r#"team="db""#, r#"team=~"(db""#),
            "routes[0].matchers[0]",
            "column",
        ),
        (
            VALID.replace(r#"team="db""#, r#"team=="db""#),
            "routes[0].matchers[0]",
            "column",
        ),
        (
            VALID.replace("msgtype: textcard,", "msgtype: textcard, template: nope,"),
            "route \"db\"",
            "no template named \"nope\"",
        ),
        (
            format!("{VALID}\ntemplates: {{timezone: Mars/Olympus}}\n"),
            "templates.timezone",
            "unknown time zone",
        ),
        (
            VALID.replace(
                "agent_id: 1000002",
                "agent_id: 1000002, secret_file: /nonexistent/secret",
            ),
            "apps[0].secret_file",
            "/nonexistent/secret",
        ),
        (
            VALID.replace(
                "agent_id: 1000002",
                "agent_id: 1000002, secret: \"${SURELY_UNSET_VAR_X}\"",
            ),
            "apps[0].secret",
            "SURELY_UNSET_VAR_X",
        ),
    ];
    for (yaml, key, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, &yaml);
        let (code, _, stderr) = run(&["check", "--config", &path]);
        assert_ne!(code, 0, "{yaml}");
        assert!(
            stderr.contains(key) && stderr.contains(message),
            "expected {key:?} and {message:?} in {stderr}"
        );
        if !key.starts_with("route ") {
            assert!(stderr.contains("config.yml"), "names the file: {stderr}");
        }
    }
}

/// Runs `check` on a config whose route uses `templates/oncall.hbs` with this content.
fn check_with_template(template: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(templates.join("oncall.hbs"), template).unwrap();
    let yaml = VALID.replace("msgtype: textcard,", "msgtype: text, template: oncall,")
        + "templates: {dir: templates}\n";
    let path = write_config(&dir, &yaml);
    let (code, _, stderr) = run(&["check", "--config", &path]);
    (code, stderr)
}

#[test]
fn check_reports_a_template_syntax_error_with_template_line_and_column() {
    let (code, stderr) = check_with_template("line one\n{{#each alerts}}\n{{labels.alertname}\n{{/each}}\n");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("templates/oncall.hbs:3:"),
        "the file, 1-based: {stderr}"
    );
    assert!(stderr.contains(" 3 | {{labels.alertname}"), "the line: {stderr}");
    assert!(!stderr.contains("expected escape"), "no grammar dump: {stderr}");
}

#[test]
fn check_renders_sample_alerts_so_a_misspelt_field_fails_before_deployment() {
    let (code, stderr) =
        check_with_template("{{#each alerts}}\n{{labels.alertname}} {{annotatoins.summary}}\n{{/each}}\n");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("templates/oncall.hbs:2:22: annotatoins.summary does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(rendering the sample "),
        "names the sample: {stderr}"
    );
}

#[test]
fn version_and_help_are_printed() {
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")));
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("--dry-run") && stdout.contains("check"));
}

/// The binary, serving on a free port; killed on drop.
struct Served {
    child: std::process::Child,
    url: String,
}

impl Served {
    async fn start(args: &[&str]) -> Served {
        Served::start_logging(args, "info").await
    }

    async fn start_logging(args: &[&str], rust_log: &str) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(BINARY)
            .args(args)
            .args(["--listen", &listen])
            .env_remove("WECOM_SECRET")
            .env("RUST_LOG", rust_log)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let served = Served {
            child,
            url: format!("http://{listen}"),
        };
        let started = Instant::now();
        while reqwest::get(format!("{}/-/ready", served.url)).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the binary did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        served
    }

    async fn post(&self, body: &str) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(format!("{}/alerts", self.url))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code and everything it logged.
    fn wait(mut self) -> (Option<i32>, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                return (status.code(), stderr);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the binary did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test]
async fn the_binary_serves_the_bundled_example_in_dry_run_mode_and_stops_cleanly_on_sigterm() {
    let served = Served::start(&[]).await;
    let report = served.post(CRASHLOOP).await;
    assert_eq!(report["routes"][0]["outcome"], "dry_run");
    served.signal("-TERM");
    let (code, stderr) = served.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("DRY-RUN"), "{stderr}");
    assert!(stderr.contains("would send"), "{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
}

#[tokio::test]
async fn rust_log_debug_shows_our_debug_lines_without_the_template_engines_internals() {
    let served = Served::start_logging(&[], "debug").await;
    served.post(CRASHLOOP).await;
    served.signal("-TERM");
    let (_, stderr) = served.wait();
    let engine = stderr.lines().filter(|line| line.contains(" handlebars")).count();
    let ours = stderr
        .lines()
        .filter(|line| line.contains("DEBUG alertmanager_wecom"))
        .count();
    eprintln!(
        "RUST_LOG=debug, one webhook: {} lines, {} bytes; the template engine's: {engine}",
        stderr.lines().count(),
        stderr.len()
    );
    assert_eq!(engine, 0, "{stderr}");
    assert!(ours > 0, "our own debug lines are there: {stderr}");
}

#[tokio::test]
async fn sighup_reloads_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &VALID.replace("matchers: ['team=\"db\"'], ", ""));
    let served = Served::start(&["--config", &path]).await;
    let report = served.post(CRASHLOOP).await;
    assert_eq!(report["routes"][0]["msgtype"], "textcard");
    write_config(
        &dir,
        &VALID
            .replace("matchers: ['team=\"db\"'], ", "")
            .replace("textcard", "markdown"),
    );
    served.signal("-HUP");
    let mut msgtype = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let report = served.post(RESOLVED).await;
        msgtype = report["routes"][0]["msgtype"].as_str().unwrap().to_string();
        if msgtype == "markdown" {
            break;
        }
    }
    assert_eq!(msgtype, "markdown");
    served.signal("-TERM");
    let (code, stderr) = served.wait();
    assert_eq!(code, Some(0));
    assert!(stderr.contains("SIGHUP: reloading"), "{stderr}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let served = Served::start(&["--log-format", "json"]).await;
    served.post(CRASHLOOP).await;
    served.signal("-TERM");
    let (code, stderr) = served.wait();
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() > 3);
    for line in lines {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(entry["ts"].is_string() && entry["level"].is_string() && entry["msg"].is_string());
    }
}

#[test]
fn route_shows_which_routes_an_alert_reaches_and_who_receives_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1000002}]
robots: [{name: db-chat}]
routes:
  - {name: audit, continue: true, app: ops, msgtype: text, to: {users: [auditor]}}
  - {name: db, matchers: ['team="db"'], app: ops, msgtype: textcard, to: {users: ["{{labels.owner}}"], parties: [2]}}
  - {name: chat, robot: db-chat, msgtype: text, mention: {users: ["{{labels.owner}}"]}}
"#,
    );
    let (code, stdout, stderr) = run(&[
        "route",
        "--config",
        &path,
        "--labels",
        r#"team="db",owner="alice""#,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("audit: app ops, text"), "{stdout}");
    assert!(stdout.contains("db: app ops, textcard"), "{stdout}");
    assert!(stdout.contains("users alice; parties 2"), "{stdout}");
    assert!(!stdout.contains("chat:"), "db does not continue: {stdout}");

    let (code, stdout, _) = run(&["route", "--config", &path, "--labels", r#"team="web""#]);
    assert_eq!(code, 0);
    assert!(stdout.contains("audit:") && !stdout.contains("db:"), "{stdout}");

    let (code, _, stderr) = run(&["route", "--config", &path, "--labels", r#"team=~"db""#]);
    assert_ne!(code, 0);
    assert!(stderr.contains("name=\"value\""), "{stderr}");
}

#[test]
fn render_prints_the_exact_requests_with_sizes_and_reads_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, VALID);
    let fixture = format!(
        "{}/src/render/samples/firing-unicode-markup.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, stdout, stderr) = run(&["render", "--config", &path, "--payload", &fixture]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("# route db → ops (textcard), message 1/1: 1 of 1 alert(s) shown, cut: no;"),
        "{stdout}"
    );
    assert!(
        stdout.contains("description ") && stdout.contains(" B"),
        "{stdout}"
    );
    let json_start = stdout.find('{').unwrap();
    let request: serde_json::Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    assert_eq!(request["msgtype"], "textcard");
    assert_eq!(request["touser"], "alice");

    let mut child = Command::new(BINARY)
        .args(["render", "--config", &path, "--payload", "-", "--route", "db"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(std::fs::read(&fixture).unwrap().as_slice())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"textcard\""));

    let (code, _, stderr) = run(&[
        "render",
        "--config",
        &path,
        "--payload",
        &fixture,
        "--route",
        "nope",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no such route"), "{stderr}");
}

#[test]
fn mistakes_on_the_command_line_get_a_clear_message() {
    let (code, _, stderr) = run(&["--listen", "nowhere"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--listen \"nowhere\" is not an address"),
        "{stderr}"
    );

    let (code, _, stderr) = run(&["render", "--payload", "/nonexistent/payload.json"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot read /nonexistent/payload.json"),
        "{stderr}"
    );

    let (code, _, stderr) = run(&["check", "--config", "/nonexistent/config.yml"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot read config file /nonexistent/config.yml"),
        "{stderr}"
    );
}

#[test]
fn appchat_says_when_the_app_has_no_secret_to_ask_wecom_with() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, VALID);
    let (code, _, stderr) = run(&[
        "appchat", "get", "--config", &path, "--app", "ops", "--chatid", "wrkOps1",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("app ops has no secret configured"), "{stderr}");
}

#[test]
fn check_reports_every_independent_mistake_at_once_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
wecom: {delivery_deadline: 0s}
apps: [{name: ops, corp_id: "", agent_id: 1}]
routes:
  - {name: db, matchers: ['team=="db"'], app: ops, msgtype: text, to: {users: [a]}}
  - {name: web, robot: chat, msgtype: text}
templates: {timezone: Mars/Olympus}
"#,
    );
    let (code, stdout, stderr) = run(&["check", "--config", &path]);
    assert_eq!(code, 1, "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        "wecom.delivery_deadline: must be greater than 0",
        "apps[0].corp_id: must not be empty",
        "routes[0].matchers[0]: route \"db\", matcher \"team==\\\"db\\\"\"",
        "routes[1].robot: no robot named \"chat\"",
        "templates.timezone: unknown time zone \"Mars/Olympus\"",
    ];
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("{path}: {expected}")),
            "{line:?} vs {expected:?}"
        );
    }
}

/// `check --offline` of a deployment variant's config.yml, with the repository's templates.
fn check_offline(config: &str, templates: &str) -> (i32, String, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    run(&[
        "check",
        "--offline",
        "--config",
        &format!("{root}/{config}"),
        "--templates-dir",
        &format!("{root}/{templates}"),
    ])
}

#[test]
fn check_offline_validates_the_shipped_kubernetes_configs_and_lists_the_secrets_it_skipped() {
    for (config, secrets) in [
        ("deploy/kubernetes/config.yml", 2),
        ("deploy/overlays/ha/config.yml", 3),
    ] {
        let (code, stdout, stderr) = check_offline(config, "deploy/kubernetes/templates");
        assert_eq!(code, 0, "{config}: {stdout}{stderr}");
        assert!(
            stdout.contains(&format!(
                "{config}: skipped (offline): apps[0].secret_file: /run/secrets/alertmanager-wecom/wecom-ops-secret is not on this machine"
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains(
                "skipped (offline): server.auth.bearer_token_file: /run/secrets/alertmanager-wecom/webhook-token is not on this machine"
            ),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "{config}: OK (3 route(s), 1 app(s)); {secrets} secret(s) not checked (offline)"
            )),
            "{stdout}"
        );
    }
    let (_, stdout, _) = check_offline("deploy/overlays/ha/config.yml", "deploy/kubernetes/templates");
    assert!(
        stdout.contains("skipped (offline): state.url_file: /run/secrets/alertmanager-wecom/redis-url"),
        "{stdout}"
    );
}

#[test]
fn check_offline_still_checks_templates_routes_and_the_secret_files_that_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    let shipped = std::fs::read_to_string(format!("{root}/deploy/kubernetes/config.yml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let templates = format!("{root}/deploy/kubernetes/templates");

    // A real mistake in the config.
    let path = write_config(&dir, &shipped.replace("app: ops", "app: opps"));
    let (code, _, stderr) = run(&[
        "check",
        "--offline",
        "--config",
        &path,
        "--templates-dir",
        &templates,
    ]);
    assert_eq!(code, 1);
    assert_eq!(stderr.matches("no app named \"opps\"").count(), 3, "{stderr}");

    // Templates are checked, not skipped: without --templates-dir, `dir: .` has no oncall.hbs.
    let path = write_config(&dir, &shipped);
    let (code, _, stderr) = run(&["check", "--offline", "--config", &path]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no template named \"oncall\""), "{stderr}");
    assert!(
        stderr.contains("--templates-dir DIR)"),
        "the way out is named: {stderr}"
    );

    // A secret file that exists is read and validated as usual.
    let token = dir.path().join("callback-token");
    std::fs::write(&token, "not a token!\n").unwrap();
    let with_callback = shipped.replace(
        "    # callback:\n    #   token_file: /run/secrets/alertmanager-wecom/wecom-ops-callback-token\n    #   encoding_aes_key_file",
        &format!("    callback:\n      token_file: {}\n      encoding_aes_key_file", token.display()),
    );
    assert_ne!(with_callback, shipped);
    let path = write_config(&dir, &with_callback);
    let (code, stdout, stderr) = run(&[
        "check",
        "--offline",
        "--config",
        &path,
        "--templates-dir",
        &templates,
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stderr.contains("apps[0].callback.token: must be the console's Token: at most 32 letters and digits"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not a token"),
        "never the secret itself: {stderr}"
    );

    // Without the mistake, the missing AES key file is skipped like the others.
    std::fs::write(&token, "Token123\n").unwrap();
    let (code, stdout, stderr) = run(&[
        "check",
        "--offline",
        "--config",
        &path,
        "--templates-dir",
        &templates,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("skipped (offline): apps[0].callback.encoding_aes_key_file: /run/secrets/alertmanager-wecom/wecom-ops-callback-aes-key is not on this machine"),
        "{stdout}"
    );
    assert!(stdout.contains("; 3 secret(s) not checked (offline)"), "{stdout}");
}

#[test]
fn check_without_offline_suggests_it_for_a_missing_secret_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (code, _, stderr) = run(&[
        "check",
        "--config",
        &format!("{root}/deploy/kubernetes/config.yml"),
        "--templates-dir",
        &format!("{root}/deploy/kubernetes/templates"),
    ]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "both missing files at once: {stderr}");
    for line in lines {
        assert!(
            line.contains("cannot read /run/secrets/alertmanager-wecom/"),
            "{line}"
        );
        assert!(
            line.ends_with("(validating a config for another machine? alertmanager-wecom check --offline)"),
            "{line}"
        );
    }
}

#[test]
fn check_reads_a_redis_url_file_that_exists_and_never_connects_to_it() {
    let root = env!("CARGO_MANIFEST_DIR");
    let shipped = std::fs::read_to_string(format!("{root}/deploy/overlays/ha/config.yml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("redis-url");
    let path = write_config(
        &dir,
        &shipped.replace(
            "/run/secrets/alertmanager-wecom/redis-url",
            &url.display().to_string(),
        ),
    );
    let templates = format!("{root}/deploy/kubernetes/templates");
    let args = [
        "check",
        "--offline",
        "--config",
        &path,
        "--templates-dir",
        &templates,
    ];

    std::fs::write(&url, "rediss://:TESTSECRET@redis:6379/0\n").unwrap();
    let (code, _, stderr) = run(&args);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("state.url: TLS (rediss://) is not supported"),
        "{stderr}"
    );
    assert!(!stderr.contains("TESTSECRET"), "{stderr}");

    // An address nothing answers at: a check that tried to connect would hang on it.
    std::fs::write(&url, "redis://10.255.255.1:6379/0\n").unwrap();
    let started = Instant::now();
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("; 2 secret(s) not checked (offline)"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// The configs the docs show are what newcomers copy: the reference in
/// docs/configuration.md (every key, with the values it shows) and the README's first
/// config pass `check --offline` (their secret files are not on this machine; the
/// reference's templates.dir is an empty folder beside it).
#[test]
fn the_documented_configs_pass_the_offline_check() {
    let shown = |doc: &'static str, section: &str| -> &'static str {
        doc.split(section)
            .nth(1)
            .and_then(|rest| rest.split("```yaml\n").nth(1))
            .and_then(|block| block.split("\n```").next())
            .unwrap_or_else(|| panic!("{section} shows a config"))
    };
    for config in [
        shown(
            include_str!("../../docs/configuration.md"),
            "## Configuration reference",
        ),
        shown(
            include_str!("../../README.md"),
            "## Your first real configuration",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        let path = write_config(&dir, config);
        let (code, stdout, stderr) = run(&["check", "--offline", "--config", &path]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("not checked (offline)"), "{stdout}");
    }
}

/// A `--templates-dir` that is not there is named as the flag, not as templates.dir.
#[test]
fn a_templates_dir_flag_naming_no_directory_is_refused_with_its_name() {
    let (code, _, stderr) = run(&[
        "check",
        "--offline",
        "--config",
        "deploy/kubernetes/config.yml",
        "--templates-dir",
        "no/such/dir",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("deploy/kubernetes/config.yml: --templates-dir: no/such/dir is not a directory"),
        "{stderr}"
    );
}
