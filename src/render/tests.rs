use std::path::Path;

use super::*;
use crate::config::Config;
use crate::model::WebhookPayload;

use samples::{CRASHLOOP, RESOLVED};

/// An app's limits (`deliver::app`), which the tests' routes send through.
const APP: ContentLimits = ContentLimits {
    text: 2048,
    markdown: 2048,
    markdown_v2: 0,
};

fn setup(msgtype: &str) -> (Config, Renderer) {
    let yaml = format!(
        "apps: [{{name: ops, corp_id: ww1, agent_id: 1}}]\nroutes: [{{name: all, app: ops, msgtype: {msgtype}, to: {{tags: [1]}}}}]\ntemplates: {{timezone: Asia/Shanghai}}\n"
    );
    let config = Config::from_yaml(&yaml, "test.yml", Path::new("")).unwrap();
    let renderer = Renderer::new(&config.templates).unwrap();
    renderer.check_routes(&config.routes).unwrap();
    (config, renderer)
}

fn render(msgtype: &str, payloads: &[&str]) -> RenderedMessage {
    let (config, renderer) = setup(msgtype);
    let parsed: Vec<WebhookPayload> = payloads
        .iter()
        .map(|p| WebhookPayload::parse(p.as_bytes()).unwrap())
        .collect();
    let alerts: Vec<&Alert> = parsed.iter().flat_map(|p| &p.alerts).collect();
    renderer
        .render(&config.routes[0], &parsed[0], &alerts, &[], &APP)
        .unwrap()
}

fn text_of(message: &RenderedMessage) -> String {
    match &message.parts[0] {
        MessageContent::Text { content }
        | MessageContent::Markdown { content }
        | MessageContent::MarkdownV2 { content } => content.clone(),
        MessageContent::Textcard {
            title, description, ..
        } => format!("{title}\n{description}"),
        MessageContent::TemplateCard { card } => card.to_string(),
    }
}

#[test]
fn times_are_shown_in_the_configured_time_zone() {
    // startsAt 2026-11-25T17:46:42Z is 01:46:42 the next day in Shanghai.
    for msgtype in ["text", "markdown", "textcard"] {
        let text = text_of(&render(msgtype, &[CRASHLOOP]));
        assert!(text.contains("2026-11-26 01:46:42 CST"), "{msgtype}: {text}");
    }
}

#[test]
fn firing_and_resolved_alerts_are_shown_distinctly_firing_first() {
    for msgtype in ["text", "markdown", "textcard"] {
        let message = render(msgtype, &[RESOLVED, CRASHLOOP]);
        let text = text_of(&message);
        let firing = text.find("KubePodCrashLooping").unwrap();
        let resolved = text.find("TargetDown").unwrap();
        assert!(firing < resolved, "{msgtype}: {text}");
        assert_eq!(message.total_alerts, 2);
        assert!(!message.cut);
    }
    let card = render("textcard", &[RESOLVED, CRASHLOOP]);
    let MessageContent::Textcard { title, .. } = &card.parts[0] else {
        panic!()
    };
    assert!(
        title.contains("[FIRING:1]") && title.contains("[RESOLVED:1]"),
        "{title}"
    );
}

#[test]
fn the_labels_that_matter_are_listed_without_repeating_name_and_severity() {
    let text = text_of(&render("text", &[CRASHLOOP]));
    assert!(
        text.contains("namespace=pay") && text.contains("pod=api-7d9f"),
        "{text}"
    );
    assert!(!text.contains("alertname="), "{text}");
    assert!(text.contains("[FIRING] KubePodCrashLooping (critical)"), "{text}");
}

#[test]
fn a_textcard_has_a_plain_title_a_link_and_a_short_button() {
    let message = render("textcard", &[CRASHLOOP]);
    let MessageContent::Textcard {
        title,
        description,
        url,
        btntxt,
    } = &message.parts[0]
    else {
        panic!()
    };
    assert_eq!(title, "[FIRING:1] KubePodCrashLooping (critical)");
    assert!(description.contains("<div class=\"highlight\">"), "{description}");
    // Alertmanager's page of these alerts: their graphs and Silence buttons in one link.
    assert!(url.starts_with("http://vm:19095/#/alerts?filter="), "{url}");
    assert!(btntxt.chars().count() <= fit::TEXTCARD_BTNTXT_MAX_CHARS);
}

/// Renders the crashloop fixture through a text route using `NAME.hbs` from a template dir.
fn render_user_template(name: &str, content: &str) -> Result<RenderedMessage, RenderError> {
    render_user_template_as("text", CRASHLOOP, name, content)
}

/// Renders `body` through a `msgtype` route using `NAME.hbs` from a template dir.
fn render_user_template_as(
    msgtype: &str,
    body: &str,
    name: &str,
    content: &str,
) -> Result<RenderedMessage, RenderError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(format!("{name}.hbs")), content).unwrap();
    let yaml = format!(
        "apps: [{{name: ops, corp_id: ww1, agent_id: 1}}]\nroutes: [{{name: all, app: ops, msgtype: {msgtype}, template: {name}, to: {{tags: [1]}}}}]\ntemplates: {{dir: '{}'}}\n",
        dir.path().display()
    );
    let config = Config::from_yaml(&yaml, "test.yml", Path::new("")).unwrap();
    let renderer = Renderer::new(&config.templates).unwrap();
    let payload = WebhookPayload::parse(body.as_bytes()).unwrap();
    let alerts: Vec<&Alert> = payload.alerts.iter().collect();
    renderer.render(&config.routes[0], &payload, &alerts, &[], &APP)
}

#[test]
fn a_textcard_title_is_rendered_with_the_alerts_its_card_shows() {
    // 200 alerts: far more than a 512-byte description holds.
    let mut body: serde_json::Value = serde_json::from_str(CRASHLOOP).unwrap();
    let alert = body["alerts"][0].clone();
    body["alerts"] = (0..200)
        .map(|i| {
            let mut alert = alert.clone();
            alert["labels"]["pod"] = format!("api-{i}").into();
            alert
        })
        .collect();
    let template = "{{firingCount}} firing, {{omittedAlerts}} not shown, first {{alerts.0.labels.pod}}\n\
                    {{#each alerts}}<div>{{labels.pod}}: {{annotations.description}}</div>{{/each}}";
    let message = render_user_template_as("textcard", &body.to_string(), "card", template).unwrap();
    let MessageContent::Textcard { title, .. } = &message.parts[0] else {
        panic!("not a textcard: {:?}", message.parts);
    };
    assert!(message.shown_alerts > 0 && message.shown_alerts < 200);
    let omitted = 200 - message.shown_alerts;
    assert_eq!(
        title,
        &format!("200 firing, {omitted} not shown, first api-0"),
        "shown {}",
        message.shown_alerts
    );
}

#[test]
fn a_misspelt_field_is_an_error_naming_template_and_line() {
    let error = render_user_template(
        "typo",
        "{{#each alerts}}\n{{labels.alertname}} {{annotatoins.summary}}\n{{/each}}",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("typo.hbs:2:22: annotatoins.summary does not exist here"),
        "{error}"
    );
    assert!(error.contains("{{#if annotatoins.summary}}"), "a hint: {error}");
    assert!(
        error.contains(" 2 | {{labels.alertname}} {{annotatoins.summary}}"),
        "{error}"
    );
    assert!(
        !error.contains("Some(") && !error.contains("strict mode \""),
        "no debug text: {error}"
    );
}

#[test]
fn a_user_template_overrides_the_built_in_of_the_same_name() {
    let message = render_user_template("text", "custom: {{firingCount}} firing").unwrap();
    assert_eq!(text_of(&message), "custom: 1 firing");
}

#[test]
fn safe_url_keeps_links_inside_their_markup() {
    let (config, renderer) = setup("markdown");
    let payload = CRASHLOOP.replace(
        "http://prometheus.example.com:9090/graph?g0.expr=rate%28kube_pod_container_status_restarts_total%5B10m%5D%29+%3E+0",
        "http://p.example/graph?q=sum(x) [y]",
    );
    let payload = WebhookPayload::parse(payload.as_bytes()).unwrap();
    let alerts: Vec<&Alert> = payload.alerts.iter().collect();
    let text = text_of(
        &renderer
            .render(&config.routes[0], &payload, &alerts, &[], &APP)
            .unwrap(),
    );
    assert!(
        text.contains("[graph](http://p.example/graph?q=sum%28x%29%20%5By%5D)"),
        "{text}"
    );
}

/// The storm digest docs/storms.md shows is what `digest/markdown` renders.
#[test]
fn the_documented_digest_is_what_the_builtin_markdown_digest_renders() {
    let (config, renderer) = setup("markdown");
    let message = renderer
        .render_digest(
            &config.routes[0],
            &config.routes[0].digest_template,
            &digest::sample_summary(),
            &[],
            &APP,
        )
        .unwrap();
    let text = text_of(&message);
    let docs = include_str!("../../docs/storms.md");
    let shown = docs
        .split("The built-in `digest/markdown` template, for a storm of 49 groups:\n\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/storms.md shows a digest");
    assert_eq!(
        text.replace("<font color=\"warning\">", "")
            .replace("</font>", "")
            .replace("· all", "· ops"),
        shown.replace("http://alertmanager.example:9093/#/alerts?filter=%7Balertname%3D~%22KubePodCrashLooping%7CNodeFilesystemAlmostFull%7CTargetDown%22%7D", &digest::sample_summary().alerts_url),
        "rendered:\n{text}"
    );
}

#[test]
fn every_msgtype_has_a_builtin_digest_that_fits_in_one_message() {
    for msgtype in ["text", "markdown", "textcard", "template_card"] {
        let (config, renderer) = setup(msgtype);
        let mut summary = digest::sample_summary();
        // A storm of 500 alertnames: they cannot all be listed.
        summary.alertnames = (0..500)
            .map(|i| AlertnameCount {
                alertname: format!("StormAlert{i:04}"),
                severity: "warning".into(),
                firing: 1,
                resolved: 0,
            })
            .collect();
        let message = renderer
            .render_digest(
                &config.routes[0],
                &config.routes[0].digest_template,
                &summary,
                &[],
                &APP,
            )
            .unwrap_or_else(|e| panic!("{msgtype}: {e}"));
        assert_eq!(message.parts.len(), 1, "{msgtype}");
        assert!(message.cut, "{msgtype}: 500 alertnames do not fit");
        let sizes = message.parts[0].sizes();
        if msgtype == "markdown" || msgtype == "text" {
            let text = text_of(&message);
            assert!(text.len() <= 2048, "{msgtype}: {} bytes", text.len());
            assert!(text.contains("more alertnames, see Alertmanager"), "{text}");
            assert!(text.contains("StormAlert0000"), "{text}");
        }
        assert!(!sizes.is_empty(), "{msgtype}");
    }
}

#[test]
fn a_broken_digest_template_names_route_and_template() {
    let (mut config, renderer) = setup("markdown");
    config.routes[0].digest_template = "markdown".into();
    let error = renderer
        .render_digest(
            &config.routes[0],
            &config.routes[0].digest_template,
            &digest::sample_summary(),
            &[],
            &APP,
        )
        .unwrap_err();
    assert_eq!(error.template, "markdown");
    assert_eq!(error.route, "all");
}

#[test]
fn routes_with_buttons_render_firing_cards_with_buttons_and_resolved_cards_without() {
    let yaml = "apps: [{name: ops, corp_id: ww1, agent_id: 1, callback: {token: t, encoding_aes_key: 6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt}}]\nroutes: [{name: oncall, app: ops, msgtype: template_card, to: {users: [a]}, buttons: {silence: [2h]}}]\n";
    let config = Config::from_yaml(yaml, "test.yml", Path::new("")).unwrap();
    let renderer = Renderer::new(&config.templates).unwrap();
    renderer.check_routes(&config.routes).unwrap();
    renderer
        .check_with_samples(&config.routes, |_| APP)
        .expect("the built-in interactive card renders every sample");
    let route = &config.routes[0];
    let card_of = |payload: &str| {
        let payload = WebhookPayload::parse(payload.as_bytes()).unwrap();
        let alerts: Vec<&Alert> = payload.alerts.iter().collect();
        match renderer
            .render(route, &payload, &alerts, &[], &APP)
            .unwrap()
            .parts
            .remove(0)
        {
            MessageContent::TemplateCard { card } => card,
            other => panic!("{other:?}"),
        }
    };
    let firing = card_of(CRASHLOOP);
    assert_eq!(firing["card_type"], "button_interaction");
    assert_eq!(
        firing["button_list"],
        serde_json::json!([
            {"text": "认领", "style": 1, "key": "ack"},
            {"text": "静默 2h", "style": 2, "key": "silence:2h"}
        ])
    );
    assert!(firing.get("jump_list").is_none());
    let rows = firing["horizontal_content_list"].as_array().unwrap();
    assert!(rows.len() <= 6, "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r["type"] == 1 && r["url"].as_str().unwrap().starts_with("http")),
        "a graph link row: {rows:?}"
    );
    assert!(firing["main_title"]["title"].as_str().unwrap().starts_with("🔥"));
    let resolved = card_of(RESOLVED);
    assert_eq!(resolved["card_type"], "text_notice");
    assert!(resolved.get("button_list").is_none());
    assert_eq!(resolved["source"]["desc"], "RESOLVED");
    assert!(resolved["main_title"]["title"]
        .as_str()
        .unwrap()
        .starts_with("✅"));
}

/// A renderer with one template `t.hbs` of `text`, and a route `r` of `route_extra` using it.
fn with_template(text: &str, route_extra: &str) -> (Config, Renderer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.hbs"), text).unwrap();
    let yaml = format!(
        "apps: [{{name: ops, corp_id: ww1, agent_id: 1}}]\nroutes: [{{name: r, app: ops, msgtype: markdown, template: t, to: {{tags: [1]}}{route_extra}}}]\ntemplates: {{dir: {}}}\n",
        dir.path().display()
    );
    let config = Config::from_yaml(&yaml, "test.yml", Path::new("")).unwrap();
    let renderer = Renderer::new(&config.templates).unwrap();
    (config, renderer, dir)
}

#[test]
fn a_route_that_sends_no_resolved_alerts_is_checked_without_them() {
    let firing_only = "{{#each firing}}{{labels.alertname}}\n{{/each}}";
    let (config, renderer, _dir) = with_template(firing_only, ", send_resolved: false");
    renderer
        .check_with_samples(&config.routes, |_| APP)
        .expect("never rendered with only resolved alerts");
    let (config, renderer, _dir) = with_template(firing_only, "");
    let error = renderer.check_with_samples(&config.routes, |_| APP).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("(rendering the sample resolved-targetdown: a resolved group)"),
        "{error}"
    );
}

#[test]
fn a_route_may_use_the_labels_its_equality_matchers_guarantee() {
    let (config, renderer, _dir) = with_template(
        "team {{commonLabels.team}}: {{#each alerts}}{{labels.team}} {{/each}}",
        ", matchers: ['team=\"pay\"', 'severity=~\"critical|warning\"']",
    );
    renderer
        .check_with_samples(&config.routes, |_| APP)
        .expect("team is on every alert this route gets");
}

#[test]
fn an_alert_without_an_alertname_renders_in_every_builtin_template() {
    // Prometheus always sets alertname; other clients of Alertmanager's API need not.
    let nameless = r#"{"version":"4","groupKey":"{}:{}","status":"firing","receiver":"x","externalURL":"http://am.example",
        "alerts":[{"status":"firing","labels":{"job":"x"}},{"status":"resolved","labels":{"job":"y"}}]}"#;
    for msgtype in ["text", "markdown", "textcard", "template_card"] {
        let message = render(msgtype, &[nameless]);
        assert!(
            text_of(&message).contains("(no alertname)"),
            "{msgtype}: {}",
            text_of(&message)
        );
    }
}

#[test]
fn a_series_of_a_thousand_parts_keeps_every_part_within_the_limit() {
    let parts = series::split(2000, 2048, 1000, |range| {
        Ok::<_, ()>(range.map(|i| format!("{i:04}{}\n", "x".repeat(1000))).collect())
    })
    .unwrap();
    assert!(parts
        .texts
        .iter()
        .all(|text| text.len() + "(1000/1000) ".len() <= 2048));
}

/// One route per built-in template, as fuzz/src/invariants.rs has them: each app msgtype,
/// the interactive card (`button_interaction`), robot text and markdown, and markdown_v2.
const BUILTIN_ROUTES: &str = "apps: [{name: ops, corp_id: ww1, agent_id: 1, callback: {token: t, encoding_aes_key: 6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt}}]
robots: [{name: chat, key: k}]
routes:
  - {name: text, app: ops, msgtype: text, to: {users: [a]}}
  - {name: markdown, app: ops, msgtype: markdown, to: {users: [a]}}
  - {name: textcard, app: ops, msgtype: textcard, to: {users: [a]}}
  - {name: template_card, app: ops, msgtype: template_card, to: {users: [a]}}
  - {name: button_interaction, app: ops, msgtype: template_card, to: {users: [a]}, buttons: {silence: [2h]}}
  - {name: markdown_v2, robot: chat, msgtype: markdown_v2}
  - {name: robot_markdown, robot: chat, msgtype: markdown}
  - {name: robot_text, robot: chat, msgtype: text}
templates: {timezone: Asia/Shanghai}
";

const ROBOT: ContentLimits = ContentLimits {
    text: 2048,
    markdown: 4096,
    markdown_v2: 4096,
};

fn builtin_routes() -> (Config, Renderer) {
    let config = Config::from_yaml(BUILTIN_ROUTES, "test.yml", Path::new("")).unwrap();
    let renderer = Renderer::new(&config.templates).unwrap();
    renderer.check_routes(&config.routes).unwrap();
    renderer.check_with_samples(&config.routes, limits_of).unwrap();
    (config, renderer)
}

fn limits_of(route: &RouteConfig) -> ContentLimits {
    if route.name.starts_with("robot") || route.name == "markdown_v2" {
        ROBOT
    } else {
        APP
    }
}

fn render_route(
    renderer: &Renderer,
    route: &RouteConfig,
    payload: &WebhookPayload,
    mentions: &[String],
) -> RenderedMessage {
    let alerts: Vec<&Alert> = payload.alerts.iter().collect();
    renderer
        .render(route, payload, &alerts, mentions, &limits_of(route))
        .unwrap_or_else(|e| panic!("{}: {e}", route.name))
}

/// Everything a message shows, with a textcard's link and a card's JSON.
fn shown(message: &RenderedMessage) -> String {
    message
        .parts
        .iter()
        .map(|part| match part {
            MessageContent::Textcard {
                title,
                description,
                url,
                ..
            } => format!("{title}\n{description}\nurl: {url}"),
            MessageContent::TemplateCard { card } => card.to_string(),
            other => text_of(&RenderedMessage {
                parts: vec![other.clone()],
                shown_alerts: 0,
                total_alerts: 0,
                cut: false,
            }),
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// docs/templates.md, "Built-in templates": what each built-in msgtype shows of a firing
/// alert — what fired, where (the labels beyond alertname and severity), how bad, since
/// when, its runbook, and links to its graph and to a pre-filled silence wherever the
/// msgtype carries links. A change that drops one fails here, not on call.
#[test]
fn every_builtin_template_shows_what_the_docs_promise() {
    let (config, renderer) = builtin_routes();
    let payload = WebhookPayload::parse(CRASHLOOP.as_bytes()).unwrap();
    let graph = "http://prometheus.example.com:9090/graph?g0.expr=rate%28kube_pod_container_status_restarts_total%5B10m%5D%29+%3E+0";
    let silence = "http://vm:19095/#/silences/new?filter=%7Balertname%3D%22KubePodCrashLooping%22%2C%20namespace%3D%22pay%22%2C%20owner%3D%22alice%22%2C%20pod%3D%22api-7d9f%22%2C%20severity%3D%22critical%22%2C%20team%3D%22pay%22%7D";
    let runbook = "https://runbooks.example.com/KubePodCrashLooping";
    let labels = "namespace=pay owner=alice pod=api-7d9f team=pay";
    // The one link of a textcard: the alerts on Alertmanager's page, each with its graph
    // and a Silence button.
    let alerts_page = "url: http://vm:19095/#/alerts?filter=%7Balertname%3D%22KubePodCrashLooping%22%2C%20namespace%3D%22pay%22";
    let json = |s: &str| serde_json::to_string(s).unwrap().trim_matches('"').to_string();
    let promises: Vec<(&str, Vec<String>)> = vec![
        (
            "text",
            vec![
                "[FIRING] KubePodCrashLooping (critical)".into(),
                labels.into(),
                "Since 2026-11-26 01:46:42 CST".into(),
                format!("<a href=\"{runbook}\">Runbook</a>"),
                format!("<a href=\"{graph}\">Graph</a>"),
                format!("<a href=\"{silence}\">Silence</a>"),
            ],
        ),
        (
            "robot_text",
            vec![
                "[FIRING] KubePodCrashLooping (critical)".into(),
                labels.into(),
                "Since 2026-11-26 01:46:42 CST".into(),
                format!("Runbook: {runbook}"),
                format!("Graph: {graph}"),
                format!("Silence: {silence}"),
            ],
        ),
        (
            "markdown",
            vec![
                "KubePodCrashLooping** · critical".into(),
                labels.into(),
                "since 2026-11-26 01:46:42 CST".into(),
                format!("[runbook]({runbook})"),
                format!("[graph]({graph})"),
                format!("[silence]({silence})"),
            ],
        ),
        (
            "robot_markdown",
            vec![
                format!("[graph]({graph})"),
                format!("[silence]({silence})"),
                format!("[runbook]({runbook})"),
            ],
        ),
        (
            "markdown_v2",
            vec![
                "**[FIRING] KubePodCrashLooping** · critical".into(),
                labels.into(),
                "since 2026-11-26 01:46:42 CST".into(),
                format!("[runbook]({runbook})"),
                format!("[graph]({graph})"),
                format!("[silence]({silence})"),
            ],
        ),
        (
            "textcard",
            vec![
                "<div class=\"highlight\">KubePodCrashLooping · critical</div>".into(),
                labels.into(),
                "since 2026-11-26 01:46:42 CST".into(),
                format!("runbook: {runbook}"),
                alerts_page.into(),
            ],
        ),
        (
            "template_card",
            vec![
                r#""title":"KubePodCrashLooping""#.into(),
                r#""emphasis_content":{"desc":"severity","title":"critical"}"#.into(),
                labels.into(),
                r#"{"keyname":"since","value":"11-26 01:46"}"#.into(),
                format!(r#"{{"title":"Runbook","type":1,"url":"{}"}}"#, json(runbook)),
                format!(r#"{{"title":"Graph","type":1,"url":"{}"}}"#, json(graph)),
                format!(r#"{{"title":"Silence","type":1,"url":"{}"}}"#, json(silence)),
            ],
        ),
        (
            "button_interaction",
            vec![
                "KubePodCrashLooping".into(),
                r#""emphasis_content":{"desc":"severity","title":"critical"}"#.into(),
                labels.into(),
                r#"{"keyname":"since","value":"11-26 01:46"}"#.into(),
                format!(
                    r#"{{"keyname":"docs","type":1,"url":"{}","value":"Runbook"}}"#,
                    json(runbook)
                ),
                format!(
                    r#"{{"keyname":"graph","type":1,"url":"{}","value":"Prometheus"}}"#,
                    json(graph)
                ),
                format!(
                    r#"{{"keyname":"mute","type":1,"url":"{}","value":"Silence"}}"#,
                    json(silence)
                ),
            ],
        ),
    ];
    assert_eq!(
        promises.len(),
        config.routes.len(),
        "every built-in route is covered"
    );
    for (name, elements) in promises {
        let route = config.routes.iter().find(|r| r.name == name).unwrap();
        let message = render_route(&renderer, route, &payload, &[]);
        let text = shown(&message);
        for element in elements {
            assert!(
                text.contains(&element),
                "{name}: {element:?} missing from\n{text}"
            );
        }
        assert!(!message.cut, "{name}: an ordinary alert is not cut:\n{text}");
    }
}

/// Alertmanager sends endsAt = startsAt for some resolved alerts (resolved-targetdown.json
/// has one): the message shows when it resolved, not "after 0s".
#[test]
fn a_resolved_alert_without_a_duration_shows_its_resolve_time() {
    let (config, renderer) = builtin_routes();
    let same = WebhookPayload::parse(RESOLVED.as_bytes()).unwrap();
    let earlier = WebhookPayload::parse(
        RESOLVED
            .replace(
                r#""endsAt":"2026-11-25T17:46:48Z""#,
                r#""endsAt":"2026-11-25T17:00:00Z""#,
            )
            .as_bytes(),
    )
    .unwrap();
    let later = WebhookPayload::parse(
        RESOLVED
            .replace(
                r#""endsAt":"2026-11-25T17:46:48Z""#,
                r#""endsAt":"2026-11-25T17:58:00Z""#,
            )
            .as_bytes(),
    )
    .unwrap();
    for route in &config.routes {
        for payload in [&same, &earlier] {
            let text = shown(&render_route(&renderer, route, payload, &[]));
            assert!(
                !text.contains("after 0s") && !text.contains("(after"),
                "{}: {text}",
                route.name
            );
            assert!(text.contains("TargetDown"), "{}: {text}", route.name);
        }
        let text = shown(&render_route(&renderer, route, &same, &[]));
        let resolved = match route.msgtype {
            MsgType::TemplateCard => r#"{"keyname":"ended","value":"11-26 01:46"}"#,
            MsgType::Textcard => "resolved 2026-11-26 01:46:48 CST",
            MsgType::Text => "Resolved 2026-11-26 01:46:48 CST",
            _ => "resolved 2026-11-26 01:46:48 CST",
        };
        assert!(
            text.contains(resolved),
            "{}: {resolved:?} missing from {text}",
            route.name
        );
        if !matches!(route.msgtype, MsgType::TemplateCard) {
            let text = shown(&render_route(&renderer, route, &later, &[]));
            assert!(text.contains("after 11m12s"), "{}: {text}", route.name);
        }
    }
}

/// `cut` (the preview's, and alertmanager_wecom_messages_cut_total) says something was left
/// out or shortened: never for one ordinary alert, always for an overlong one.
#[test]
fn cut_means_something_was_left_out_in_every_builtin_msgtype() {
    let (config, renderer) = builtin_routes();
    let ordinary = WebhookPayload::parse(CRASHLOOP.as_bytes()).unwrap();
    let resolved = WebhookPayload::parse(RESOLVED.as_bytes()).unwrap();
    let long = "数据库连接数过高，请立即检查慢查询。".repeat(200);
    let overlong = WebhookPayload::parse(
        CRASHLOOP
            .replace("Pod pay/api-7d9f is crash looping", &long)
            .replace(
                "Pod pay/api-7d9f (container api) is restarting 3.2 times / 10 minutes.",
                &long,
            )
            .as_bytes(),
    )
    .unwrap();
    for route in &config.routes {
        for payload in [&ordinary, &resolved] {
            let message = render_route(&renderer, route, payload, &["alice".into()]);
            assert!(!message.cut, "{}: cut\n{}", route.name, shown(&message));
        }
        let message = render_route(&renderer, route, &overlong, &[]);
        assert!(message.cut, "{}: not cut\n{}", route.name, shown(&message));
        assert!(shown(&message).contains(fit::CUT_MARKER), "{}", route.name);
    }
}

/// A big group: a header with the counts, then as many alerts as the msgtype holds (one
/// line each once the full form does not fit), then "… and N more".
#[test]
fn a_big_group_shows_its_counts_and_as_many_alerts_as_fit() {
    let (config, renderer) = builtin_routes();
    let payload = samples::payloads().remove(3); // big-group: 60 alerts, 20 resolved
    assert_eq!(payload.alerts.len(), 60);
    for route in &config.routes {
        let message = render_route(&renderer, route, &payload, &[]);
        let text = shown(&message);
        assert!(
            text.contains("🔥 40 firing · ✅ 20 resolved"),
            "{}: no header in {text}",
            route.name
        );
        let visible = (0..60)
            .filter(|i| text.contains(&format!("host-{i}:")) || text.contains(&format!("host-{i} ")))
            .count();
        let (parts, at_least) = match route.name.as_str() {
            "textcard" => (1, 8),
            "template_card" | "button_interaction" => (1, 5),
            // One line per alert: 60 fit in two messages of 2048 bytes, one of 4096.
            _ => (2, 60),
        };
        assert!(
            message.parts.len() <= parts,
            "{}: {} parts",
            route.name,
            message.parts.len()
        );
        assert!(
            visible >= at_least && message.shown_alerts >= at_least,
            "{}: {visible} alerts shown\n{text}",
            route.name
        );
        assert!(
            visible >= message.shown_alerts,
            "{}: shown_alerts {} but {visible} visible",
            route.name,
            message.shown_alerts
        );
        if message.shown_alerts < 60 {
            assert!(
                text.contains(&format!("… and {} more", 60 - message.shown_alerts)),
                "{}: {text}",
                route.name
            );
        }
    }
}

/// A robot's mention pings: a series mentions once, in its first message.
#[test]
fn a_series_mentions_once_in_its_first_message() {
    let (config, renderer) = builtin_routes();
    let mut body: serde_json::Value = serde_json::from_str(CRASHLOOP).unwrap();
    let alert = body["alerts"][0].clone();
    body["alerts"] = (0..400)
        .map(|i| {
            let mut alert = alert.clone();
            alert["labels"]["pod"] = format!("api-{i}-{}", "x".repeat(40)).into();
            alert["annotations"]["summary"] = format!("pod {i} is crash looping").into();
            alert
        })
        .collect();
    let payload = WebhookPayload::parse(body.to_string().as_bytes()).unwrap();
    let route = config.routes.iter().find(|r| r.name == "robot_markdown").unwrap();
    let message = render_route(&renderer, route, &payload, &["alice".into()]);
    assert!(message.parts.len() > 1, "a series");
    let texts: Vec<String> = message
        .parts
        .iter()
        .map(|p| p.body()["content"].as_str().unwrap().to_string())
        .collect();
    assert!(texts[0].contains("<@alice>"), "{}", texts[0]);
    for text in &texts[1..] {
        assert!(!text.contains("<@alice>"), "{text}");
    }
}

/// Links are left out, never broken, when a URL is not http(s); a runbook that is not a
/// link is shown as text.
#[test]
fn links_without_an_http_url_are_left_out() {
    let (config, renderer) = builtin_routes();
    let payload = WebhookPayload::parse(
        CRASHLOOP
            .replace(r#""externalURL":"http://vm:19095""#, r#""externalURL":"vm:19095""#)
            .replace("https://runbooks.example.com/KubePodCrashLooping", "wiki/KubePodCrashLooping")
            .replace(
                "http://prometheus.example.com:9090/graph?g0.expr=rate%28kube_pod_container_status_restarts_total%5B10m%5D%29+%3E+0",
                "javascript:alert(1)",
            )
            .as_bytes(),
    )
    .unwrap();
    for route in config
        .routes
        .iter()
        .filter(|r| matches!(r.msgtype, MsgType::Text | MsgType::Markdown | MsgType::MarkdownV2))
    {
        let text = shown(&render_route(&renderer, route, &payload, &[]));
        for link in ["<a href", "](", "Graph:", "Silence:", "javascript"] {
            assert!(!text.contains(link), "{}: {link:?} in {text}", route.name);
        }
        assert!(
            text.contains("unbook: wiki/KubePodCrashLooping"),
            "{}: {text}",
            route.name
        );
    }
}

/// An edited template (the playground's) is no file: its errors, in compiling and in
/// rendering, are located in it with its line quoted, like a file's.
#[test]
fn an_edited_templates_errors_are_located_in_it_with_its_line_quoted() {
    let (config, renderer) = setup("text");
    let Err(TemplateError::Syntax(message)) =
        renderer.with_template(MsgType::Text, EDITED_TEMPLATE, "first\nab {{ x")
    else {
        panic!("a syntax error");
    };
    assert!(message.starts_with("edited template:2:"), "{message}");
    assert!(message.contains("\n 2 | ab {{ x\n"), "{message}");

    let edited = renderer
        .with_template(
            MsgType::Text,
            EDITED_TEMPLATE,
            "first\n{{#each alerts}}{{nope}}{{/each}}",
        )
        .unwrap();
    let mut route = config.routes[0].clone();
    route.msgtype = MsgType::Text;
    route.template = EDITED_TEMPLATE.to_string();
    let payload = WebhookPayload::parse(CRASHLOOP.as_bytes()).unwrap();
    let alerts: Vec<&Alert> = payload.alerts.iter().collect();
    let error = edited.render(&route, &payload, &alerts, &[], &APP).unwrap_err();
    assert!(
        error.message.starts_with("edited template:2:"),
        "{}",
        error.message
    );
    assert!(
        error
            .message
            .contains("\n 2 | {{#each alerts}}{{nope}}{{/each}}\n"),
        "{}",
        error.message
    );
}
