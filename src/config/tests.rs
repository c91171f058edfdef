use std::io::Write;
use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1000002}]
routes: [{name: all, app: ops, msgtype: markdown, to: {tags: [1]}}]
"#;

fn load(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, "test.yml", Path::new(""))
}

fn error(yaml: &str) -> String {
    load(yaml).unwrap_err().to_string()
}

#[test]
fn defaults_fill_in_everything_optional() {
    let config = load(MINIMAL).unwrap();
    assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(config.wecom.api_url, DEFAULT_API_URL);
    assert_eq!(config.wecom.delivery_deadline, Duration::from_secs(6));
    assert!(
        config.wecom.delivery_deadline < Duration::from_secs(10),
        "under Alertmanager's minimum"
    );
    assert_eq!(config.routes[0].template, "markdown");
    assert_eq!(config.routes[0].to.tags, vec!["1"]);
    assert!(config.routes[0].matchers.is_empty());
    assert!(config.apps[0].secret.is_none());
    assert_eq!(config.templates.timezone.iana_name(), Some("UTC"));
}

#[test]
fn the_bundled_example_is_valid() {
    let config = Config::bundled_example().unwrap();
    assert!(!config.routes.is_empty());
    assert_eq!(config.templates.timezone.iana_name(), Some("Asia/Shanghai"));
}

#[test]
fn the_api_url_always_ends_with_a_slash() {
    let config = load(&format!(
        "wecom: {{api_url: 'http://proxy.internal:8080/cgi-bin'}}\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(config.wecom.api_url, "http://proxy.internal:8080/cgi-bin/");
    assert!(error(&format!("wecom: {{api_url: 'ftp://x/'}}\n{MINIMAL}")).contains("wecom.api_url"));
}

#[test]
fn secrets_come_from_the_environment_or_a_file_and_never_print() {
    std::env::set_var("AMW_TEST_SECRET", "TESTSECRET-from-env");
    let yaml = MINIMAL.replace(
        "agent_id: 1000002",
        "agent_id: 1000002, secret: '${AMW_TEST_SECRET}'",
    );
    let config = load(&yaml).unwrap();
    let secret = config.apps[0].secret.as_ref().unwrap();
    assert_eq!(secret.expose(), "TESTSECRET-from-env");
    assert!(!format!("{config:?}").contains("TESTSECRET"));

    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("ops-secret")).unwrap();
    writeln!(file, "TESTSECRET-from-file").unwrap();
    let yaml = MINIMAL.replace("agent_id: 1000002", "agent_id: 1000002, secret_file: ops-secret");
    let config = Config::from_yaml(&yaml, "test.yml", dir.path()).unwrap();
    assert_eq!(
        config.apps[0].secret.as_ref().unwrap().expose(),
        "TESTSECRET-from-file"
    );
}

#[test]
fn an_app_may_use_its_own_api_url_and_a_robot_its_key_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("robot-key"), "TESTSECRET-robot\n").unwrap();
    let yaml = MINIMAL
        .replace(
            "agent_id: 1000002",
            "agent_id: 1000002, api_url: 'http://wecom-proxy:8080/cgi-bin'",
        )
        .replace(
            "routes: [",
            "robots: [{name: chat, key_file: robot-key}]\nroutes: [{name: chat, robot: chat, msgtype: markdown_v2}, ",
        );
    let config = Config::from_yaml(&yaml, "test.yml", dir.path()).unwrap();
    assert_eq!(config.apps[0].api_url, "http://wecom-proxy:8080/cgi-bin/");
    assert_eq!(config.routes[0].target, Target::Robot { robot: "chat".into() });
    let robot = &config.robots[0];
    assert_eq!(robot.name, "chat");
    assert_eq!(robot.key.as_ref().unwrap().expose(), "TESTSECRET-robot");
    assert_eq!(robot.api_url, DEFAULT_API_URL);
}

#[test]
fn robots_are_declared_once_and_routes_name_them() {
    let with_robots = |robots: &str, route: &str| {
        MINIMAL.replace("routes: [", &format!("robots: {robots}\nroutes: [{route}, "))
    };
    let config = load(&with_robots(
        "[{name: dba, key: TESTSECRET-r}]",
        "{name: a, robot: dba, msgtype: text}, {name: b, robot: dba, msgtype: markdown}",
    ))
    .unwrap();
    assert_eq!(config.robots.len(), 1);
    assert_eq!(config.routes[1].target_name(), "dba");
    let cases = [
        (
            with_robots("[]", "{name: a, robot: dba, msgtype: text}"),
            "routes[0].robot",
            "no robot named \"dba\" (robots: none: declare it under the top-level `robots:`)",
        ),
        (
            with_robots(
                "[{name: ops}]",
                "{name: a, app: ops, msgtype: text, to: {tags: [1]}}",
            ),
            "robots[0].name",
            "already the name of an app",
        ),
        (
            with_robots("[{name: r}, {name: r}]", "{name: a, robot: r, msgtype: text}"),
            "robots[1].name",
            "duplicate robot name",
        ),
        (
            with_robots("[]", "{name: a, robot: {key: TESTSECRET-inline}, msgtype: text}"),
            "routes[0].robot",
            "top-level `robots:` section",
        ),
        (
            with_robots("[{name: r}]", "{name: a, robot: r, msgtype: textcard}"),
            "routes[0].msgtype",
            "is not one of text, markdown, markdown_v2 (what a route to a robot can send)",
        ),
        (
            with_robots(
                "[{name: r}]",
                "{name: a, robot: r, msgtype: text, to: {users: [x]}}",
            ),
            "routes[0].to",
            "use `mention`",
        ),
    ];
    for (yaml, key, message) in cases {
        let text = error(&yaml);
        assert!(!text.contains("TESTSECRET"), "{text}");
        assert!(
            text.contains(&format!("test.yml: {key}: ")),
            "expected key {key:?} in {text:?}"
        );
        assert!(text.contains(message), "expected {message:?} in {text:?}");
    }
}

#[test]
fn a_chat_route_posts_through_an_app_to_a_chat_id() {
    let chat = |route: &str| MINIMAL.replace("routes: [", &format!("routes: [{route}, "));
    let config = load(&chat("{name: c, app: ops, chat: wrkOps1, msgtype: markdown}")).unwrap();
    assert_eq!(
        config.routes[0].target,
        Target::chat("ops".into(), "wrkOps1".into())
    );
    assert_eq!(config.routes[0].target_name(), "ops/wrkOps1");
    let cases = [
        (
            "{name: c, chat: wrkOps1, msgtype: text}",
            "routes[0].chat",
            "add `app:`",
        ),
        (
            "{name: c, app: ops, chat: wrk-ops, msgtype: text}",
            "routes[0].chat",
            "not a WeCom chat id",
        ),
        (
            "{name: c, app: ops, chat: wrkOps1, msgtype: template_card}",
            "routes[0].msgtype",
            "is not one of text, markdown, textcard (what a route to a chat can send)",
        ),
        (
            "{name: c, app: ops, chat: wrkOps1, msgtype: text, to: {users: [a]}}",
            "routes[0].to",
            "every member of the chat",
        ),
        (
            "{name: c, app: nope, chat: wrkOps1, msgtype: text}",
            "routes[0].app",
            "no app named \"nope\"",
        ),
    ];
    for (route, key, message) in cases {
        let text = error(&chat(route));
        assert!(
            text.contains(&format!("test.yml: {key}: ")),
            "expected key {key:?} in {text:?}"
        );
        assert!(text.contains(message), "expected {message:?} in {text:?}");
    }
}

#[test]
fn an_app_route_names_every_msgtype_an_app_can_send() {
    let text = error(&MINIMAL.replace("msgtype: markdown", "msgtype: voice"));
    assert!(
        text.contains("is not one of text, markdown, textcard, template_card"),
        "{text}"
    );
}

#[test]
fn an_empty_secret_means_dry_run_for_that_app() {
    let yaml = MINIMAL.replace(
        "agent_id: 1000002",
        "agent_id: 1000002, secret: '${AMW_UNSET_FOR_TEST:-}'",
    );
    assert!(load(&yaml).unwrap().apps[0].secret.is_none());
}

#[test]
fn an_unreadable_secret_file_names_key_and_path_but_not_content() {
    let yaml = MINIMAL.replace(
        "agent_id: 1000002",
        "agent_id: 1000002, secret_file: /nonexistent/wecom-ops",
    );
    let message = error(&yaml);
    assert!(message.contains("apps[0].secret_file"), "{message}");
    assert!(message.contains("/nonexistent/wecom-ops"), "{message}");
}

#[test]
fn mistakes_are_reported_with_the_file_and_key() {
    let cases = [
        (format!("{MINIMAL}\nbogus: 1\n"), "bogus", "unknown field `bogus`"),
        (
            MINIMAL.replace("msgtype: markdown", "msgtype: markdown, colour: red"),
            "routes[0]",
            "colour",
        ),
        (
            MINIMAL.replace("app: ops", "app: nope"),
            "routes[0].app",
            "no app named \"nope\"",
        ),
        (
            MINIMAL.replace("to: {tags: [1]}", "to: {users: []}"),
            "routes[0].to",
            "at least one",
        ),
        (
            MINIMAL.replace("to: {tags: [1]}", "to: {tags: [ops-team]}"),
            "routes[0].to",
            "numbers",
        ),
        (
            MINIMAL.replace("msgtype: markdown", "msgtype: voice"),
            "routes[0].msgtype",
            "voice",
        ),
        (
            MINIMAL.replace("msgtype: markdown", "msgtype: markdown, matchers: ['a=~\"(\"']"),
            "routes[0].matchers[0]",
            "column",
        ),
        (
            MINIMAL.replace("agent_id: 1000002", "agent_id: 0"),
            "apps[0].agent_id",
            "positive",
        ),
        (
            MINIMAL.replace("agent_id: 1000002", "agent_id: ten"),
            "apps[0].agent_id",
            "invalid type",
        ),
        (format!("listen: nowhere\n{MINIMAL}"), "listen", "nowhere"),
        (
            format!("wecom: {{timeout: 5 parsecs}}\n{MINIMAL}"),
            "wecom.timeout",
            "",
        ),
        (
            format!("wecom: {{dedup_window: 5h}}\n{MINIMAL}"),
            "wecom.dedup_window",
            "4h",
        ),
        (
            format!("{MINIMAL}\ntemplates: {{timezone: Nowhere/City}}\n"),
            "templates.timezone",
            "Nowhere/City",
        ),
        (
            format!("{MINIMAL}\ntemplates: {{dir: /nonexistent/templates}}\n"),
            "templates.dir",
            "not a directory",
        ),
        (
            MINIMAL.replace(
                "routes: [",
                "routes: [{name: all, app: ops, msgtype: text, to: {tags: [2]}}, ",
            ),
            "routes[1].name",
            "duplicate",
        ),
        (
            "apps: []\nroutes: []\n".to_string(),
            "routes",
            "at least one route",
        ),
    ];
    for (yaml, key, message) in cases {
        let text = error(&yaml);
        assert!(text.starts_with("test.yml: "), "{text}");
        let key_part = text.trim_start_matches("test.yml: ").split(": ").next().unwrap();
        assert!(key_part.starts_with(key), "expected key {key:?} in {text:?}");
        assert!(text.contains(message), "expected {message:?} in {text:?}");
    }
}

#[test]
fn state_is_in_memory_by_default_or_in_redis_with_a_secret_url() {
    assert_eq!(load(MINIMAL).unwrap().state, StateSettings::Memory);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("redis-url"),
        "redis://:TESTSECRET-redis@redis.internal:6379/2\n",
    )
    .unwrap();
    let yaml = format!("{MINIMAL}\nstate: {{backend: redis, url_file: redis-url, command_timeout: 100ms}}\n");
    let config = Config::from_yaml(&yaml, "test.yml", dir.path()).unwrap();
    let StateSettings::Redis(redis) = &config.state else {
        panic!("redis")
    };
    assert_eq!(
        redis.url.expose(),
        "redis://:TESTSECRET-redis@redis.internal:6379/2"
    );
    assert_eq!(redis.key_prefix, "alertmanager-wecom:");
    assert_eq!(redis.command_timeout, Duration::from_millis(100));
    assert_eq!(redis.connect_timeout, Duration::from_secs(1));
    assert!(!format!("{config:?}").contains("TESTSECRET"));
}

#[test]
fn state_mistakes_are_named_without_showing_the_url() {
    let cases = [
        ("{backend: redis}", "state.url", "needs `url` or `url_file`"),
        (
            "{backend: redis, url: 'rediss://:TESTSECRET-pw@r:6380'}",
            "state.url",
            "TLS",
        ),
        (
            "{backend: redis, url: 'http://:TESTSECRET-pw@r:6379'}",
            "state.url",
            "not redis://",
        ),
        (
            "{backend: redis, url: 'not a url TESTSECRET-pw'}",
            "state.url",
            "not a URL",
        ),
        (
            "{backend: redis, url: 'redis://r', key_prefix: '{x}'}",
            "state.key_prefix",
            "Cluster slot",
        ),
        (
            "{backend: redis, url: 'redis://r', command_timeout: 0s}",
            "state.command_timeout",
            "greater than 0",
        ),
        ("{backend: etcd}", "state.backend", "memory or redis"),
        ("{url: 'redis://r'}", "state.url", "only `backend: redis`"),
        (
            "{backend: redis, url_file: /nonexistent/redis-url}",
            "state.url_file",
            "/nonexistent/redis-url",
        ),
    ];
    for (state, key, message) in cases {
        let text = error(&format!("{MINIMAL}\nstate: {state}\n"));
        assert!(
            text.contains(&format!("test.yml: {key}: ")),
            "expected key {key:?} in {text:?}"
        );
        assert!(text.contains(message), "expected {message:?} in {text:?}");
        assert!(!text.contains("TESTSECRET"), "{text}");
    }
}

#[test]
fn storms_are_digested_by_default_with_wecoms_limits() {
    let config = load(MINIMAL).unwrap();
    let storm = &config.storm;
    assert!(storm.digest);
    assert_eq!(storm.reserve, 3);
    assert_eq!(storm.interval, Duration::from_secs(20));
    assert!(storm.is_never_digested("Critical"));
    assert!(!storm.is_never_digested("warning"));
    assert!(storm.rank("critical") < storm.rank("warning"));
    assert_eq!(storm.rank("unheard-of"), storm.severities.len());
    assert_eq!(config.apps[0].rate_limit, RateLimit::APP_MEMBER);
    assert!(!config.apps[0].directory);
    assert_eq!(config.wecom.rate_margin, Duration::from_secs(5));
    assert_eq!(config.routes[0].digest_template, "digest/markdown");
}

#[test]
fn rate_limits_and_storm_knobs_can_be_set_and_are_checked() {
    let config = load(
        r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1, rate_limit: {per_minute: 20, per_hour: 0}, directory: true}]
robots: [{name: r, key: k, rate_limit: {per_minute: 10}}]
routes: [{name: all, app: ops, msgtype: text, to: {tags: [1]}, digest_template: my-digest}]
storm: {reserve: 2, interval: 30s, never_digest: [], hold: 10m}
"#,
    );
    let config = config.unwrap();
    assert_eq!(
        config.apps[0].rate_limit,
        RateLimit {
            per_minute: 20,
            per_hour: None
        }
    );
    assert!(config.apps[0].directory);
    assert_eq!(config.robots[0].rate_limit.per_minute, 10);
    assert_eq!(config.storm.reserve, 2);
    assert!(!config.storm.is_never_digested("critical"));
    assert_eq!(config.routes[0].digest_template, "my-digest");

    let base = "routes: [{name: all, app: ops, msgtype: text, to: {tags: [1]}}]\n";
    let with = |extra: &str| format!("apps: [{{name: ops, corp_id: ww1, agent_id: 1{extra}}}]\n{base}");
    for (yaml, expected) in [
        (
            with(", rate_limit: {per_minute: 0}"),
            "apps[0].rate_limit.per_minute: must be at least 1",
        ),
        (
            with(", rate_limit: {per_minute: 30, per_hour: 10}"),
            "apps[0].rate_limit.per_hour: 10 is below per_minute (30)",
        ),
        (
            format!("{}storm: {{reserve: 30}}\n", with("")),
            "storm.reserve: 30 leaves no slot for individual notifications",
        ),
        (
            format!("{}storm: {{reserve: 0}}\n", with("")),
            "storm.reserve: must be at least 1 while digests are on",
        ),
        (
            format!("{}storm: {{interval: 1m, hold: 90s}}\n", with("")),
            "storm.hold: must be at least twice storm.interval",
        ),
        (
            format!("{}storm: {{interval: 0s}}\n", with("")),
            "storm.interval: must be at least 1s",
        ),
    ] {
        let message = error(&yaml);
        assert!(message.contains(expected), "{yaml}\n→ {message}");
    }
}

/// An app with a callback and a route with buttons (the console's example key).
const INTERACTIVE: &str = r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1000002,
        callback: {token: Tok3n, encoding_aes_key: 6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt}}]
routes: [{name: oncall, app: ops, msgtype: template_card, to: {users: [alice]}, buttons: {}}]
"#;

#[test]
fn buttons_default_to_acknowledge_and_three_silences_with_the_interactive_template() {
    let config = load(INTERACTIVE).unwrap();
    let route = &config.routes[0];
    let buttons = route.buttons.as_ref().unwrap();
    assert!(buttons.acknowledge);
    assert_eq!(
        buttons.silence,
        [1, 4, 24].map(|h| Duration::from_secs(h * 3600)).to_vec()
    );
    assert!(buttons.allowed_users.is_empty());
    assert_eq!(route.template, "button_interaction");
    let callback = config.apps[0].callback.as_ref().unwrap();
    assert_eq!(callback.max_age, Duration::from_secs(300));
    assert!(
        config.alertmanager.url.is_none(),
        "defaults to each card's externalURL"
    );
}

#[test]
fn buttons_need_a_template_card_route_of_an_app_with_a_callback() {
    let text = INTERACTIVE.replace("msgtype: template_card", "msgtype: markdown");
    assert!(error(&text).contains("routes[0].buttons: buttons are for `msgtype: template_card`"));
    // Chats and robots take no template_card at all: their msgtype check says so first.
    let chat = INTERACTIVE.replace("to: {users: [alice]}", "chat: wrkOps1");
    assert!(error(&chat).contains("routes[0].msgtype"), "{}", error(&chat));
    let no_callback = INTERACTIVE.replace(
        "callback: {token: Tok3n, encoding_aes_key: 6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt}",
        "secret: s",
    );
    let message = error(&no_callback);
    assert!(message.contains("app \"ops\" has no `callback:`"), "{message}");
}

#[test]
fn button_lists_are_checked_against_wecoms_limits() {
    let many = INTERACTIVE.replace("buttons: {}", "buttons: {silence: [1h, 2h, 3h, 4h, 5h, 6h]}");
    assert!(error(&many).contains("at most 6 buttons"), "{}", error(&many));
    let none = INTERACTIVE.replace("buttons: {}", "buttons: {acknowledge: false, silence: []}");
    assert!(error(&none).contains("no buttons"));
    let short = INTERACTIVE.replace("buttons: {}", "buttons: {silence: [10s]}");
    assert!(error(&short).contains("routes[0].buttons.silence[0]: must be between 1m and 30d"));
    let twice = INTERACTIVE.replace("buttons: {}", "buttons: {silence: [1h, 60m]}");
    assert!(error(&twice).contains("silence[1]: is given twice"));
}

#[test]
fn callback_keys_are_checked_without_printing_them() {
    let short = INTERACTIVE.replace("6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt", "abc");
    let message = error(&short);
    assert!(message.contains("apps[0].callback.encoding_aes_key: must be the console's EncodingAESKey"));
    assert!(!message.contains("abc"), "{message}");
    let missing = INTERACTIVE.replace("token: Tok3n, ", "");
    assert!(error(&missing).contains("apps[0].callback.token: is required"));
    let bad_token = INTERACTIVE.replace("Tok3n", "'with space'");
    let message = error(&bad_token);
    assert!(message.contains("callback.token: must be the console's Token"));
    assert!(!message.contains("with space"));
}

#[test]
fn alertmanager_credentials_go_only_to_a_configured_url() {
    let no_url = format!("alertmanager: {{bearer_token: t0k}}\n{INTERACTIVE}");
    assert!(error(&no_url).contains("alertmanager.url: is required with credentials"));
    let config = load(&format!(
        "alertmanager: {{url: 'http://am.example:9093', bearer_token: t0k, timeout: 2s}}\n{INTERACTIVE}"
    ))
    .unwrap();
    assert_eq!(
        config.alertmanager.url.as_deref(),
        Some("http://am.example:9093/")
    );
    assert_eq!(config.alertmanager.timeout, Duration::from_secs(2));
    assert!(!format!("{:?}", config.alertmanager).contains("t0k"));
    let both = format!(
        "alertmanager: {{url: 'http://am', bearer_token: t, basic_auth: {{username: u, password: p}}}}\n{INTERACTIVE}"
    );
    assert!(error(&both).contains("not both"));
}

#[test]
fn combinations_that_lose_or_delay_notifications_are_warned_about() {
    assert!(
        load(MINIMAL).unwrap().warnings().is_empty(),
        "the defaults are safe"
    );
    let warnings = |wecom: &str, server: &str| {
        load(&format!("wecom: {wecom}\nserver: {server}\n{MINIMAL}"))
            .unwrap()
            .warnings()
    };
    let short_grace = warnings("{delivery_deadline: 6s}", "{shutdown_grace: 2s}");
    assert_eq!(short_grace.len(), 1, "{short_grace:?}");
    assert!(
        short_grace[0].contains("server.shutdown_grace (2s) is shorter than wecom.delivery_deadline (6s)")
    );
    let long_wait = warnings("{delivery_deadline: 6s}", "{queue_timeout: 5s}");
    assert_eq!(long_wait.len(), 1, "{long_wait:?}");
    assert!(
        long_wait[0].contains("server.queue_timeout (5s) + wecom.delivery_deadline (6s) is not under 10s")
    );
    let long_deadline = warnings("{delivery_deadline: 15s, timeout: 20s}", "{shutdown_grace: 30s}");
    assert_eq!(long_deadline.len(), 2, "{long_deadline:?}");
    assert!(long_deadline[0].contains("Alertmanager gives up on a webhook after max(group_interval, 10s)"));
    assert!(long_deadline[1].contains("wecom.timeout (20s) is longer than wecom.delivery_deadline (15s)"));
}

#[test]
fn outbound_concurrency_defaults_and_bounds() {
    let config = load(MINIMAL).unwrap();
    assert_eq!(config.wecom.max_concurrent_calls, 8);
    assert_eq!(config.wecom.max_parallel_sends, 8);
    let zero = error(&format!("wecom: {{max_concurrent_calls: 0}}\n{MINIMAL}"));
    assert!(
        zero.contains("wecom.max_concurrent_calls: must be at least 1"),
        "{zero}"
    );
    let zero = error(&format!("wecom: {{max_parallel_sends: 0}}\n{MINIMAL}"));
    assert!(
        zero.contains("wecom.max_parallel_sends: must be at least 1"),
        "{zero}"
    );
}

#[test]
fn the_http_edge_bounds_bodies_and_waits_by_default_within_alertmanagers_patience() {
    let server = load(MINIMAL).unwrap().server;
    assert_eq!(server.body_timeout, Duration::from_secs(5));
    assert_eq!(server.queue_timeout, Duration::from_secs(3));
    assert_eq!(server.max_buffered_body_bytes, 32 * 1024 * 1024);
    assert!(server.max_buffered_body_bytes >= server.max_body_bytes);
    // A webhook admitted at the end of its wait still has its whole delivery deadline, and
    // a second for reading and rendering, before Alertmanager's shortest patience (10s).
    let delivery = load(MINIMAL).unwrap().wecom.delivery_deadline;
    assert!(server.queue_timeout + delivery + Duration::from_secs(1) <= Duration::from_secs(10));

    let set = load(&format!(
        "server: {{body_timeout: 2s, queue_timeout: 500ms, max_buffered_body_bytes: 8388608}}\n{MINIMAL}"
    ))
    .unwrap()
    .server;
    assert_eq!(set.body_timeout, Duration::from_secs(2));
    assert_eq!(set.queue_timeout, Duration::from_millis(500));
    assert_eq!(set.max_buffered_body_bytes, 8 * 1024 * 1024);
}

#[test]
fn edge_limits_that_could_never_be_met_are_refused() {
    for (server, key, message) in [
        ("{body_timeout: 0s}", "server.body_timeout", "greater than 0"),
        ("{queue_timeout: 0s}", "server.queue_timeout", "greater than 0"),
        (
            "{max_body_bytes: 2048, max_buffered_body_bytes: 2047}",
            "server.max_buffered_body_bytes",
            "at least server.max_body_bytes (2048)",
        ),
        (
            "{max_buffered_body_bytes: 1048576}",
            "server.max_buffered_body_bytes",
            "4194304",
        ),
    ] {
        let text = error(&format!("server: {server}\n{MINIMAL}"));
        assert!(text.contains(key) && text.contains(message), "{server}: {text}");
    }
}

#[test]
fn routes_that_can_never_match_are_warned_about() {
    let config = load(
        r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1}]
routes:
  - {name: db, matchers: ['team="db"'], app: ops, msgtype: text, to: {users: [a]}}
  - {name: db-again, matchers: ['team="db"'], app: ops, msgtype: text, to: {users: [b]}}
  - {name: all, app: ops, msgtype: text, to: {users: [a]}}
  - {name: late, matchers: ['team="pay"'], app: ops, msgtype: text, to: {users: [a]}}
"#,
    )
    .unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0]
        .contains(r#"route "db-again" can never match: route "db" before it has the same matchers"#));
    assert!(warnings[1].contains(r#"route "late" can never match: route "all" before it has no matchers"#));
    let with_continue = load(
        r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1}]
routes:
  - {name: all, app: ops, msgtype: text, to: {users: [a]}, continue: true}
  - {name: db, matchers: ['team="db"'], app: ops, msgtype: text, to: {users: [b]}}
"#,
    )
    .unwrap();
    assert!(with_continue.warnings().is_empty());
}

/// Each problem of a refused file: `(key, message)`.
fn problems(yaml: &str) -> Vec<(String, String)> {
    match load(yaml).unwrap_err() {
        ConfigError::Invalid { problems, .. } => problems.into_iter().map(|p| (p.key, p.message)).collect(),
        other => panic!("{other}"),
    }
}

#[test]
fn every_independent_mistake_is_reported_at_once_each_with_its_key() {
    let yaml = r#"
listen: nowhere
wecom: {timeout: 0s}
server: {max_concurrent_requests: 0}
apps:
  - {name: ops, corp_id: ww1, agent_id: 0}
  - {name: dev, corp_id: ww1, agent_id: 2, secret: "${SURELY_UNSET_VAR_Z}"}
robots: [{name: chat, rate_limit: {per_minute: 0}}]
routes:
  - {name: db, matchers: ['team=~"(db"'], app: ops, msgtype: text, to: {users: [a]}}
  - {name: web, app: nope, msgtype: text, to: {users: [a]}}
  - {name: web, app: ops, msgtype: text, to: {users: [a]}}
  - {name: fine, app: ops, msgtype: news, to: {users: [a]}}
templates: {timezone: Mars/Olympus}
state: {backend: etcd}
storm: {interval: 0s}
alertmanager: {timeout: 0s}
"#;
    let found = problems(yaml);
    let keys: Vec<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "listen",
            "wecom.timeout",
            "server.max_concurrent_requests",
            "apps[0].agent_id",
            "apps[1].secret",
            "robots[0].rate_limit.per_minute",
            "routes[0].matchers[0]",
            "routes[1].app",
            "routes[2].name",
            "routes[3].msgtype",
            "templates.timezone",
            "state.backend",
            "storm.interval",
            "alertmanager.timeout",
        ],
        "{found:#?}"
    );
    // The wording of each message stays what it was when it was the only one.
    assert!(found[3].1.contains("positive AgentId"), "{found:?}");
    assert!(found[7].1.starts_with("no app named \"nope\""), "{found:?}");
    assert!(found[8].1.contains("duplicate route name \"web\""), "{found:?}");
    // One line per problem, each `FILE: KEY: MESSAGE`.
    let text = error(yaml);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), found.len(), "{text}");
    for (line, (key, message)) in lines.iter().zip(&found) {
        assert_eq!(*line, format!("test.yml: {key}: {message}"));
    }
}

#[test]
fn a_mistake_is_reported_once_not_again_where_its_value_is_used() {
    // The app is declared but wrong: its routes are not told it is missing.
    let found = problems(
        r#"
apps: [{name: ops, corp_id: ww1, agent_id: -1}]
routes: [{name: all, app: ops, msgtype: text, to: {users: [a]}}]
"#,
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "apps[0].agent_id");

    // templates.max_messages: 0 is not repeated at each route that inherits it.
    let found = problems(&format!("{MINIMAL}\ntemplates: {{max_messages: 0}}\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "templates.max_messages");

    // A wrong callback: the route's buttons are not told the app has none.
    let found = problems(
        r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1, callback: {token: "not valid!", encoding_aes_key: x}}]
routes: [{name: all, app: ops, msgtype: template_card, to: {users: [a]}, buttons: {}}]
"#,
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "apps[0].callback.token");

    // A wrong wecom.api_url is not reported again for every app that inherits it.
    let found = problems(&format!("wecom: {{api_url: 'ftp://x'}}\n{MINIMAL}"));
    assert_eq!(found.len(), 1, "{found:?}");
}

#[test]
fn a_mistake_of_shape_is_one_problem_with_one_path_and_no_rust_debug_text() {
    for (yaml, key) in [
        (
            MINIMAL.replace("msgtype: markdown", "msgtype: markdown, colour: red"),
            "routes[0].colour",
        ),
        (
            format!("wecom: {{timeout: 5 parsecs}}\n{MINIMAL}"),
            "wecom.timeout",
        ),
        (
            MINIMAL.replace("tags: [1]", "tags: [{a: 1}]"),
            "routes[0].to.tags[0]",
        ),
        (
            MINIMAL.replace("msgtype: markdown", "msgtype: markdown, robot: {key: x}"),
            "routes[0].robot",
        ),
        (
            MINIMAL.replace("agent_id: 1000002", "agent_id: many"),
            "apps[0].agent_id",
        ),
        (format!("{MINIMAL}\nlistne: 0.0.0.0:1\n"), "listne"),
        ("apps: [\n".to_string(), "apps"),
        ("- just\n- a list\n".to_string(), "(top level)"),
    ] {
        let found = problems(&yaml);
        assert_eq!(found.len(), 1, "{found:?}");
        let (found_key, message) = &found[0];
        assert_eq!(found_key, key, "{message}");
        let section = key.split(['.', '[']).next().unwrap();
        assert!(
            !message.starts_with(section) && !message.contains("]: "),
            "one path only: {message}"
        );
        for debug in ["Error(", "Some(", "{ ", "\\\"", "untagged", "i64", "usize"] {
            assert!(!message.contains(debug), "{debug:?} in {message}");
        }
    }
}

#[test]
fn offline_every_secret_file_may_be_missing_and_each_is_listed_as_skipped() {
    let yaml = r#"
server:
  auth:
    bearer_token_file: /nonexistent/webhook-token
    basic_auth: {username: am, password_file: /nonexistent/webhook-password}
apps:
  - name: ops
    corp_id: "${SURELY_UNSET_CORP_ID}"
    agent_id: 1
    secret_file: /nonexistent/secret
    callback: {token_file: /nonexistent/token, encoding_aes_key_file: /nonexistent/aes}
robots: [{name: chat, key_file: /nonexistent/robot-key}]
routes:
  - {name: cards, app: ops, msgtype: template_card, to: {users: [a]}, buttons: {}}
  - {name: chat, robot: chat, msgtype: text}
state: {backend: redis, url_file: /nonexistent/redis-url}
alertmanager:
  url: http://alertmanager:9093
  basic_auth: {username: wecom, password_file: "${SURELY_UNSET_DIR}/am-password"}
"#;
    let files = Files {
        secrets: SecretSource::Offline,
        ..Files::online(Path::new(""))
    };
    let checked = Config::check_yaml(yaml, "test.yml", &files).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&str> = checked.skipped.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.auth.bearer_token_file",
            "server.auth.basic_auth.password_file",
            "apps[0].corp_id",
            "apps[0].secret_file",
            "apps[0].callback.token_file",
            "apps[0].callback.encoding_aes_key_file",
            "robots[0].key_file",
            "state.url_file",
            "alertmanager.basic_auth.password_file",
        ]
    );
    assert_eq!(
        checked.skipped[0].to_string(),
        "server.auth.bearer_token_file: /nonexistent/webhook-token is not on this machine"
    );
    assert_eq!(
        checked.skipped[2].to_string(),
        "apps[0].corp_id: environment variable SURELY_UNSET_CORP_ID is not set here"
    );
    // The same file online: every missing file at once, each marked as missing.
    let ConfigError::Invalid { problems, .. } = load(yaml).unwrap_err() else {
        panic!("invalid")
    };
    assert_eq!(problems.len(), 6, "{problems:#?}");
    assert_eq!(
        problems.iter().filter(|p| p.missing_file).count(),
        4,
        "{problems:#?}"
    );
}

/// Party and tag ids in the config are plain decimal numbers, as WeCom takes them; `007` is
/// written as 7, `+5` (which Rust's number parsing takes) is refused.
#[test]
fn party_and_tag_ids_are_plain_decimal_numbers() {
    let route = |to: &str| {
        format!("apps: [{{name: ops, corp_id: ww1, agent_id: 1}}]\nroutes: [{{name: r, app: ops, msgtype: text, to: {to}}}]\n")
    };
    let config = load(&route("{parties: ['007', 12], tags: ['3']}")).unwrap();
    assert_eq!(config.routes[0].to.parties, ["7", "12"]);
    assert_eq!(config.routes[0].to.tags, ["3"]);
    for bad in ["'+5'", "'-1'", "'0x5'", "'4294967296'"] {
        let message = error(&route(&format!("{{parties: [{bad}]}}")));
        assert!(
            message.contains("routes[0].to.parties[0]: party and tag ids are numbers"),
            "{bad}: {message}"
        );
    }
}
