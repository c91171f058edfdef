//! The invariants that the fuzz targets (`fuzz/fuzz_targets/`) and the property tests
//! (`tests/api/properties.rs`, which includes this file as a module) both check, stated
//! once so that a finding of one is a finding of the other. Each `check_*` panics on a
//! violation; an error the code returns for bad input is not one.
//!
//! Nothing here may use a crate the main package lacks (the property tests compile this
//! file as part of the package's tests), so the fuzz targets turn their raw input into
//! the plain values these functions take.

use std::path::Path;
use std::sync::OnceLock;

use alertmanager_wecom::config::Config;
use alertmanager_wecom::interact::crypto::{CallbackCrypto, MAX_ENCRYPTED_LEN};
use alertmanager_wecom::interact::event::{self, CardEvent, Incoming};
use alertmanager_wecom::model::matcher::{parse_matchers, MatchOp, Matcher};
use alertmanager_wecom::model::{Alert, WebhookPayload};
use alertmanager_wecom::render::fit::{
    CUT_MARKER, TEXTCARD_BTNTXT_MAX_CHARS, TEXTCARD_DESCRIPTION_MAX_BYTES, TEXTCARD_TITLE_MAX_BYTES,
    TEXTCARD_URL_MAX_BYTES,
};
use alertmanager_wecom::render::{escape, ContentLimits, MessageContent, RenderedMessage, Renderer};
use alertmanager_wecom::route::Router;
use alertmanager_wecom::secret::Secret;
use serde_json::{json, Map, Value};

/// Text that has broken parsers and escapers before: template syntax, the markup of every
/// msgtype, XML's CDATA end, separators of recipient lists and ids that only look like
/// numbers, line ends, characters that take several bytes or combine. Inputs are strung
/// together from these and anything.
pub const TRICKY: &[&str] = &[
    "{{",
    "}}",
    "{{labels.alertname}}",
    "{{#each alerts}}x{{/each}}",
    "{{{",
    "}}}",
    "{{> text}}",
    "{{!",
    "\\",
    "\"",
    "'",
    "=",
    "<font color=\"warning\">",
    "</font>",
    "<div>",
    "**",
    "`",
    "[",
    "](http://e.example)",
    "#",
    "&amp;",
    "&",
    "<",
    ">",
    "\n",
    "\r\n",
    "\t",
    " ",
    "…",
    "数据库连接数过高",
    "🙂",
    "e\u{301}",
    "|",
    ",",
    "]]>",
    "<![CDATA[",
    "\u{0}",
    "%",
    "${HOME}",
    "http://",
    "https://",
    "42",
    "007",
    "+5",
    "18446744073709551616",
];

// ---------------------------------------------------------------------------------------
// 1. webhook payloads

/// Whatever the body, `WebhookPayload::parse` returns; what it accepts has alerts, and
/// writing it out again as Alertmanager would and parsing that gives the same payload.
pub fn check_payload(body: &[u8]) {
    let Ok(payload) = WebhookPayload::parse(body) else {
        return;
    };
    assert!(!payload.alerts.is_empty(), "an accepted payload has alerts");
    let again = serde_json::to_vec(&payload_json(&payload)).expect("JSON values serialise");
    let reparsed = WebhookPayload::parse(&again).unwrap_or_else(|e| {
        panic!(
            "a parsed payload, written out again, is refused: {e}\n{}",
            String::from_utf8_lossy(&again)
        )
    });
    assert_same_payload(&payload, &reparsed);
}

/// The payload as Alertmanager writes it (the type has no `Serialize`: the service only
/// ever reads payloads).
fn payload_json(payload: &WebhookPayload) -> Value {
    let alerts: Vec<Value> = payload
        .alerts
        .iter()
        .map(|alert| {
            let mut object = json!({
                "status": alert.status.as_str(),
                "labels": alert.labels,
                "annotations": alert.annotations,
                "generatorURL": alert.generator_url,
                "fingerprint": alert.fingerprint,
            });
            for (key, time) in [("startsAt", alert.starts_at), ("endsAt", alert.ends_at)] {
                if let Some(time) = time {
                    object[key] = Value::from(time.to_rfc3339());
                }
            }
            object
        })
        .collect();
    json!({
        "version": payload.version,
        "groupKey": payload.group_key,
        "truncatedAlerts": payload.truncated_alerts,
        "status": payload.status.map(|s| s.as_str()),
        "receiver": payload.receiver,
        "groupLabels": payload.group_labels,
        "commonLabels": payload.common_labels,
        "commonAnnotations": payload.common_annotations,
        "externalURL": payload.external_url,
        "alerts": alerts,
    })
}

fn assert_same_payload(a: &WebhookPayload, b: &WebhookPayload) {
    assert_eq!(a.version, b.version);
    assert_eq!(a.group_key, b.group_key);
    assert_eq!(a.truncated_alerts, b.truncated_alerts);
    assert_eq!(a.status, b.status);
    assert_eq!(a.receiver, b.receiver);
    assert_eq!(a.group_labels, b.group_labels);
    assert_eq!(a.common_labels, b.common_labels);
    assert_eq!(a.common_annotations, b.common_annotations);
    assert_eq!(a.external_url, b.external_url);
    assert_eq!(a.alerts.len(), b.alerts.len());
    for (x, y) in a.alerts.iter().zip(&b.alerts) {
        assert_eq!(x.status, y.status);
        assert_eq!(x.labels, y.labels);
        assert_eq!(x.annotations, y.annotations);
        assert_eq!(x.starts_at, y.starts_at);
        assert_eq!(x.ends_at, y.ends_at);
        assert_eq!(x.generator_url, y.generator_url);
        assert_eq!(x.fingerprint, y.fingerprint);
    }
}

// ---------------------------------------------------------------------------------------
// 2. matchers

/// Whatever the text, the parsers return; each matcher they accept is shown in a canonical
/// form that parses back to an equal matcher, alone and as a list.
pub fn check_matchers(text: &str) {
    if let Ok(matcher) = Matcher::parse(text) {
        check_matcher_round_trip(&matcher);
    }
    let Ok(matchers) = parse_matchers(text) else {
        return;
    };
    for matcher in &matchers {
        check_matcher_round_trip(matcher);
    }
    let shown: Vec<String> = matchers.iter().map(ToString::to_string).collect();
    let list = format!("{{{}}}", shown.join(", "));
    let back = parse_matchers(&list).unwrap_or_else(|e| panic!("{list:?} does not parse back: {e}"));
    assert_eq!(back, matchers, "{list:?}");
}

/// A matcher built from any name, operator and value shows as text that parses back.
pub fn check_matcher_parts(name: &str, op: MatchOp, value: &str) {
    if let Ok(matcher) = Matcher::new(name, op, value) {
        check_matcher_round_trip(&matcher);
    }
}

fn check_matcher_round_trip(matcher: &Matcher) {
    let shown = matcher.to_string();
    let back =
        Matcher::parse(&shown).unwrap_or_else(|e| panic!("{shown:?} ({matcher:?}) does not parse back: {e}"));
    assert_eq!(&back, matcher, "{shown:?}");
    assert_eq!(back.to_string(), shown, "the canonical form is stable");
}

// ---------------------------------------------------------------------------------------
// 3. recipients from labels

/// The label and annotation values one alert's recipients come from.
#[derive(Debug, Clone, Default)]
pub struct RecipientLabels {
    /// `labels.owner`: users of the app route, and whom the robot route mentions.
    pub owner: String,
    /// `annotations.backup`: more users of the app route.
    pub backup: String,
    /// `labels.party`: party ids.
    pub party: String,
    /// `annotations.tag`: tag ids.
    pub tag: String,
}

const RECIPIENT_ROUTES: &str = r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1}]
robots: [{name: chat, key: k}]
routes:
  - name: app
    app: ops
    msgtype: text
    continue: true
    to: {users: ['{{labels.owner}}', '{{annotations.backup}}'], parties: ['{{labels.party}}'], tags: ['{{annotations.tag}}']}
    fallback_to: {users: [oncall]}
  - name: chat
    robot: chat
    msgtype: text
    mention: {users: ['{{labels.owner}}', lead]}
"#;

fn recipient_router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let config = Config::from_yaml(RECIPIENT_ROUTES, "recipients.yml", Path::new(""))
            .expect("the recipient routes are valid");
        Router::new(&config.routes).expect("the recipient templates are valid")
    })
}

/// What a recipient value names: split at `|` and `,`, trimmed, without empty or repeated
/// ids, and no template in the value evaluated (a value is data, not a template).
fn ids(values: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in values {
        for id in value.split(['|', ',']).map(str::trim).filter(|id| !id.is_empty()) {
            if !out.iter().any(|seen| seen == id) {
                out.push(id.to_string());
            }
        }
    }
    out
}

fn is_clean_id(id: &str) -> bool {
    !id.is_empty() && id.trim() == id && !id.contains(['|', ','])
}

/// Recipients rendered from labels are exactly the ids the label values name, cleaned,
/// with their text taken literally; party and tag ids are numbers; a message goes to the
/// fallback only when the labels name nobody, and the robot mentions everyone named.
pub fn check_recipients(alerts: &[RecipientLabels]) {
    if alerts.is_empty() {
        return;
    }
    let body = json!({
        "alerts": alerts.iter().map(|a| json!({
            "status": "firing",
            "labels": {"alertname": "A", "owner": a.owner, "party": a.party},
            "annotations": {"backup": a.backup, "tag": a.tag},
        })).collect::<Vec<_>>(),
    });
    let payload = WebhookPayload::parse(body.to_string().as_bytes()).expect("the alerts are valid");
    let plan = recipient_router().plan(&payload.alerts);
    assert!(plan.unrouted.is_empty() && plan.unresolved.is_empty(), "{plan:?}");
    let expected = |alert: &Alert| {
        let label = |name: &str| alert.labels.get(name).unwrap_or("");
        let annotation = |name: &str| alert.annotations.get(name).unwrap_or("");
        // WeCom's ids: plain decimal, 32 bits; "007" is 7 ("+5" is none).
        let numeric = |ids: Vec<String>| -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            for id in ids {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                if let Ok(n) = id.parse::<u32>() {
                    if !out.contains(&n.to_string()) {
                        out.push(n.to_string());
                    }
                }
            }
            out
        };
        let users = ids(&[label("owner"), annotation("backup")]);
        let parties = numeric(ids(&[label("party")]));
        let tags = numeric(ids(&[annotation("tag")]));
        if users.is_empty() && parties.is_empty() && tags.is_empty() {
            (vec!["oncall".to_string()], vec![], vec![])
        } else {
            (users, parties, tags)
        }
    };
    let mut seen_by_app = 0;
    for notification in &plan.notifications {
        match notification.route.name.as_str() {
            "app" => {
                let r = &notification.recipients;
                for id in r.users.iter().chain(&r.parties).chain(&r.tags) {
                    assert!(is_clean_id(id), "{id:?} is not a clean id");
                }
                for id in r.parties.iter().chain(&r.tags) {
                    assert!(
                        id.bytes().all(|b| b.is_ascii_digit()) && id.parse::<u32>().is_ok(),
                        "{id:?} is not a WeCom party or tag id"
                    );
                }
                for alert in &notification.alerts {
                    let (users, parties, tags) = expected(alert);
                    assert_eq!(r.users, users, "users of {:?}", alert.labels);
                    assert_eq!(r.parties, parties, "parties of {:?}", alert.labels);
                    assert_eq!(r.tags, tags, "tags of {:?}", alert.annotations);
                    seen_by_app += 1;
                }
            }
            "chat" => {
                let mentioned = &notification.mentions.users;
                assert_eq!(
                    notification.alerts.len(),
                    alerts.len(),
                    "one robot message for all"
                );
                for id in mentioned {
                    assert!(is_clean_id(id), "{id:?} is not a clean id");
                }
                let mut want = Vec::new();
                for alert in &notification.alerts {
                    for id in ids(&[alert.labels.get("owner").unwrap_or(""), "lead"]) {
                        if !want.contains(&id) {
                            want.push(id);
                        }
                    }
                }
                assert_eq!(mentioned, &want);
            }
            other => panic!("no route {other:?}"),
        }
    }
    assert_eq!(
        seen_by_app,
        alerts.len(),
        "every alert reaches the app route once"
    );
}

// ---------------------------------------------------------------------------------------
// 4. rendering and fitting

/// One alert of a notification to render.
#[derive(Debug, Clone, Default)]
pub struct AlertSpec {
    pub firing: bool,
    pub alertname: Option<String>,
    pub severity: Option<String>,
    /// More labels; a name given twice keeps its last value, as in a JSON object.
    pub labels: Vec<(String, String)>,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub runbook_url: Option<String>,
    pub generator_url: String,
}

/// A notification to render through every built-in template.
#[derive(Debug, Clone, Default)]
pub struct NotificationSpec {
    pub alerts: Vec<AlertSpec>,
    pub external_url: String,
    pub receiver: String,
    pub mentions: Vec<String>,
}

impl NotificationSpec {
    /// The webhook body Alertmanager would send.
    pub fn body(&self) -> Vec<u8> {
        let alerts: Vec<Value> = self
            .alerts
            .iter()
            .map(|a| {
                let mut labels = Map::new();
                for (name, value) in &a.labels {
                    labels.insert(name.clone(), Value::from(value.as_str()));
                }
                for (name, value) in [("alertname", &a.alertname), ("severity", &a.severity)] {
                    if let Some(value) = value {
                        labels.insert(name.into(), Value::from(value.as_str()));
                    }
                }
                let mut annotations = Map::new();
                for (name, value) in [
                    ("summary", &a.summary),
                    ("description", &a.description),
                    ("runbook_url", &a.runbook_url),
                ] {
                    if let Some(value) = value {
                        annotations.insert(name.into(), Value::from(value.as_str()));
                    }
                }
                json!({
                    "status": if a.firing { "firing" } else { "resolved" },
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": "2026-11-25T17:46:42.129103993Z",
                    "endsAt": if a.firing { "0001-01-01T00:00:00Z" } else { "2026-11-25T18:01:02Z" },
                    "generatorURL": a.generator_url,
                    "fingerprint": "dfaa8a42f0a74b16",
                })
            })
            .collect();
        serde_json::to_vec(&json!({
            "version": "4",
            "status": "firing",
            "receiver": self.receiver,
            "externalURL": self.external_url,
            "alerts": alerts,
        }))
        .expect("JSON values serialise")
    }
}

/// WeCom's limits, from its documentation (docs/wecom-api.md#message-limits), written out
/// here rather than taken from the code under test: app messages and app group chats take
/// 2048 bytes of text or markdown; group robots 2048 of text, 4096 of markdown and of
/// markdown_v2.
const APP_LIMITS: ContentLimits = ContentLimits {
    text: 2048,
    markdown: 2048,
    markdown_v2: 0,
};
const ROBOT_LIMITS: ContentLimits = ContentLimits {
    text: 2048,
    markdown: 4096,
    markdown_v2: 4096,
};

/// `text_notice` and `button_interaction` card fields, in characters (WeCom's template
/// card page; render/card.rs cuts to the same numbers).
const CARD_MAIN_TITLE: usize = 26;
const CARD_MAIN_DESC: usize = 30;
const CARD_SUB_TITLE: usize = 112;
const CARD_EMPHASIS_TITLE: usize = 10;
const CARD_EMPHASIS_DESC: usize = 15;
const CARD_SOURCE_DESC: usize = 13;
const CARD_KEYNAME: usize = 5;
const CARD_VALUE: usize = 30;
const CARD_ROWS: usize = 6;
const CARD_JUMPS: usize = 3;
const CARD_JUMP_TITLE: usize = 13;
const CARD_BUTTONS: usize = 6;
const CARD_BUTTON_TEXT: usize = 10;

/// One route per built-in template: each app msgtype, the interactive card, and
/// markdown_v2 (which only robots send), with the limits of their targets.
const RENDER_ROUTES: &str = r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1, callback: {token: t, encoding_aes_key: 6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt}}]
robots: [{name: chat, key: k}]
routes:
  - {name: text, app: ops, msgtype: text, to: {users: [a]}}
  - {name: markdown, app: ops, msgtype: markdown, to: {users: [a]}}
  - {name: textcard, app: ops, msgtype: textcard, to: {users: [a]}}
  - {name: template_card, app: ops, msgtype: template_card, to: {users: [a]}}
  - {name: buttons, app: ops, msgtype: template_card, to: {users: [a]}, buttons: {silence: [2h, 1d]}}
  - {name: markdown_v2, robot: chat, msgtype: markdown_v2}
  - {name: robot_markdown, robot: chat, msgtype: markdown}
templates: {timezone: Asia/Shanghai}
"#;

struct RenderFixture {
    config: Config,
    renderer: Renderer,
}

fn render_fixture() -> &'static RenderFixture {
    static FIXTURE: OnceLock<RenderFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = Config::from_yaml(RENDER_ROUTES, "render.yml", Path::new(""))
            .expect("the render routes are valid");
        let renderer = Renderer::new(&config.templates).expect("the built-in templates load");
        renderer
            .check_routes(&config.routes)
            .expect("every built-in template exists");
        RenderFixture { config, renderer }
    })
}

fn limits_of(route: &str) -> ContentLimits {
    if route.starts_with("robot") || route == "markdown_v2" {
        ROBOT_LIMITS
    } else {
        APP_LIMITS
    }
}

fn is_usable_link(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://")) && url.len() <= TEXTCARD_URL_MAX_BYTES
}

/// Every built-in template renders any alerts into messages within WeCom's limits, none
/// of them empty, every cut marked, and the alerts' text shown literally (escaped as the
/// msgtype needs), never evaluated as template syntax.
pub fn check_render(spec: &NotificationSpec) {
    let Ok(payload) = WebhookPayload::parse(&spec.body()) else {
        return;
    };
    let alerts: Vec<&Alert> = payload.alerts.iter().collect();
    let fixture = render_fixture();
    let has_link =
        alerts.iter().any(|a| is_usable_link(&a.generator_url)) || is_usable_link(&payload.external_url);
    for route in &fixture.config.routes {
        let limits = limits_of(&route.name);
        let result = fixture
            .renderer
            .render(route, &payload, &alerts, &spec.mentions, &limits);
        let is_card = matches!(route.name.as_str(), "template_card" | "buttons");
        let needs_link = is_card || route.name == "textcard";
        let message = match result {
            Ok(message) => message,
            Err(e) if needs_link && !has_link => {
                assert!(e.message.contains("http(s)"), "{}: {e}", route.name);
                continue;
            }
            Err(e) => panic!("{}: the built-in template failed: {e}", route.name),
        };
        check_message(&route.name, route.max_messages, &limits, &payload, &message);
    }
}

fn check_message(
    route: &str,
    max_messages: usize,
    limits: &ContentLimits,
    payload: &WebhookPayload,
    message: &RenderedMessage,
) {
    assert_eq!(message.total_alerts, payload.alerts.len(), "{route}");
    assert!(message.shown_alerts <= message.total_alerts, "{route}");
    assert!(
        message.cut || message.shown_alerts == message.total_alerts,
        "{route}"
    );
    assert!(!message.parts.is_empty(), "{route}: no message at all");
    let summaries: Vec<&str> = payload
        .alerts
        .iter()
        .filter_map(|a| a.annotations.get("summary"))
        .filter(|s| !s.is_empty())
        .collect();
    match &message.parts[..] {
        [MessageContent::Textcard {
            title,
            description,
            url,
            btntxt,
        }] => {
            assert!(
                !title.is_empty() && title.len() <= TEXTCARD_TITLE_MAX_BYTES,
                "{route}: title {title:?}"
            );
            assert!(
                !description.is_empty() && description.len() <= TEXTCARD_DESCRIPTION_MAX_BYTES,
                "{route}: description of {} bytes",
                description.len()
            );
            assert!(is_usable_link(url), "{route}: url {url:?}");
            assert!(
                btntxt.chars().count() <= TEXTCARD_BTNTXT_MAX_CHARS,
                "{route}: {btntxt:?}"
            );
            if message.cut {
                assert!(
                    title.contains(CUT_MARKER) || description.contains(CUT_MARKER),
                    "{route}: an unmarked cut"
                );
            } else {
                for summary in &summaries {
                    let shown = escape::textcard(summary);
                    assert!(
                        description.contains(&shown),
                        "{route}: {shown:?} not in {description:?}"
                    );
                }
            }
        }
        [MessageContent::TemplateCard { card }] => check_card(route, card, message.cut, &summaries),
        parts => {
            assert!(parts.len() <= max_messages, "{route}: {} messages", parts.len());
            let mut texts = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                let (content, limit, escape): (&String, usize, fn(&str) -> String) = match part {
                    MessageContent::Text { content } => (content, limits.text, str::to_string),
                    MessageContent::Markdown { content } => (content, limits.markdown, escape::markdown),
                    MessageContent::MarkdownV2 { content } => (content, limits.markdown_v2, escape::markdown),
                    other => panic!("{route}: a series of {other:?}"),
                };
                assert!(!content.trim().is_empty(), "{route}: an empty message");
                assert!(
                    content.len() <= limit,
                    "{route}: {} bytes > {limit}",
                    content.len()
                );
                if parts.len() > 1 {
                    let prefix = format!("({}/{}) ", i + 1, parts.len());
                    assert!(content.starts_with(&prefix), "{route}: part {i} lacks {prefix:?}");
                }
                texts.push((content, escape));
            }
            if message.cut {
                assert!(
                    texts.iter().any(|(t, _)| t.contains(CUT_MARKER)),
                    "{route}: an unmarked cut"
                );
            } else {
                for summary in &summaries {
                    let shown = (texts[0].1)(summary);
                    assert!(
                        texts.iter().any(|(t, _)| t.contains(&shown)),
                        "{route}: {shown:?} not shown literally in {texts:?}"
                    );
                }
            }
        }
    }
}

fn chars(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

fn check_card(route: &str, card: &Value, cut: bool, summaries: &[&str]) {
    let object = card
        .as_object()
        .unwrap_or_else(|| panic!("{route}: the card is {card}"));
    let field = |path: &[&str]| path.iter().fold(card, |v, key| &v[*key]);
    for (path, max) in [
        (&["main_title", "title"][..], CARD_MAIN_TITLE),
        (&["main_title", "desc"], CARD_MAIN_DESC),
        (&["sub_title_text"], CARD_SUB_TITLE),
        (&["emphasis_content", "title"], CARD_EMPHASIS_TITLE),
        (&["emphasis_content", "desc"], CARD_EMPHASIS_DESC),
        (&["source", "desc"], CARD_SOURCE_DESC),
    ] {
        assert!(chars(field(path)) <= max, "{route}: {path:?} is {}", field(path));
    }
    assert!(
        chars(field(&["main_title", "title"])) > 0 || chars(field(&["sub_title_text"])) > 0,
        "{route}: a card without a title"
    );
    if let Some(rows) = object.get("horizontal_content_list") {
        let rows = rows.as_array().expect("rows are a list");
        assert!(rows.len() <= CARD_ROWS, "{route}: {} rows", rows.len());
        for row in rows {
            assert!(
                (1..=CARD_KEYNAME).contains(&chars(&row["keyname"])),
                "{route}: row {row}"
            );
            assert!(chars(&row["value"]) <= CARD_VALUE, "{route}: row {row}");
            if row["type"] == 1 {
                assert!(
                    is_usable_link(row["url"].as_str().unwrap_or("")),
                    "{route}: row {row}"
                );
            }
        }
    }
    if let Some(jumps) = object.get("jump_list") {
        let jumps = jumps.as_array().expect("jumps are a list");
        assert!(jumps.len() <= CARD_JUMPS, "{route}: {} jumps", jumps.len());
        for jump in jumps {
            assert!(chars(&jump["title"]) <= CARD_JUMP_TITLE, "{route}: jump {jump}");
            assert!(
                is_usable_link(jump["url"].as_str().unwrap_or("")),
                "{route}: jump {jump}"
            );
        }
    }
    let action = card["card_action"]["url"].as_str().unwrap_or("");
    assert!(
        action.starts_with("http://") || action.starts_with("https://"),
        "{route}: card_action {action:?}"
    );
    if let Some(buttons) = object.get("button_list") {
        let buttons = buttons.as_array().expect("buttons are a list");
        assert!(
            !buttons.is_empty() && buttons.len() <= CARD_BUTTONS,
            "{route}: {buttons:?}"
        );
        for button in buttons {
            assert!(
                (1..=CARD_BUTTON_TEXT).contains(&chars(&button["text"])),
                "{route}: {button}"
            );
        }
    }
    if !cut {
        let sub_title = card["sub_title_text"].as_str().unwrap_or("");
        for summary in summaries {
            assert!(
                sub_title.contains(summary),
                "{route}: {summary:?} not in {sub_title:?}"
            );
        }
    }
}

/// The textcard title shows plain text: unescaping undoes the escaping exactly.
pub fn check_html_escape_round_trip(text: &str) {
    assert_eq!(escape::unescape_html(&escape::textcard(text)), text);
}

// ---------------------------------------------------------------------------------------
// 5. configuration

/// Whether loading `text` can only read files under the base directory: no `*_file` key or
/// `dir` names an absolute path, climbs with `..` or holds a variable (which may hold a
/// path). A fuzzer must not have the loader read `/dev/zero` or wait on `/dev/stdin`.
/// Anchors and merge keys are resolved by the YAML reader, so a path cannot hide behind
/// them; text that is not YAML at all fails before any file is read, so it is safe too.
pub fn config_reads_only_base_dir(text: &str) -> bool {
    use serde_norway::Value;
    fn untagged(value: &Value) -> &Value {
        match value {
            Value::Tagged(tagged) => untagged(&tagged.value),
            value => value,
        }
    }
    fn names_a_file(key: &Value) -> bool {
        matches!(untagged(key), Value::String(key) if key.ends_with("_file") || key == "dir")
    }
    fn stays_inside(path: &Value) -> bool {
        match untagged(path) {
            Value::String(path) => {
                !(path.starts_with(['/', '\\']) || path.contains("..") || path.contains('$'))
            }
            _ => true,
        }
    }
    fn inside(value: &Value) -> bool {
        match untagged(value) {
            Value::Sequence(items) => items.iter().all(inside),
            Value::Mapping(map) => map.iter().all(|(key, value)| {
                (!names_a_file(key) || stays_inside(value)) && inside(key) && inside(value)
            }),
            _ => true,
        }
    }
    match serde_norway::from_str::<Value>(text) {
        Ok(value) => inside(&value),
        Err(_) => true,
    }
}

/// Files a configuration may refer to, for a base directory.
pub const CONFIG_FILES: &[(&str, &str)] = &[
    ("secret", "s3cret-value\n"),
    ("robot-key", "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa\n"),
    ("callback-token", "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo\n"),
    ("callback-key", "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt\n"),
    ("empty", ""),
    (
        "templates/text.hbs",
        "{{#each alerts}}{{labels.alertname}}\n{{/each}}",
    ),
];

/// Writes [`CONFIG_FILES`] into `dir`.
pub fn write_config_files(dir: &Path) {
    for (name, content) in CONFIG_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the base directory is writable");
        }
        std::fs::write(path, content).expect("the base directory is writable");
    }
}

/// Whatever the YAML, the loader returns; a configuration it accepts also builds a router
/// (recipient templates and all) without panicking.
pub fn check_config(text: &str, base_dir: &Path) {
    if !config_reads_only_base_dir(text) {
        return;
    }
    if let Ok(config) = Config::from_yaml(text, "fuzz.yml", base_dir) {
        assert!(!config.routes.is_empty(), "an accepted configuration has routes");
        let _ = Router::new(&config.routes);
    }
}

// ---------------------------------------------------------------------------------------
// 6. callbacks

/// WeCom's sample EncodingAESKey and corp id (its callback samples); the token is ours.
pub const CALLBACK_TOKEN: &str = "fuzz-token";
pub const CALLBACK_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
pub const CALLBACK_CORP: &str = "ww1436e0e65a779aee";

fn crypto() -> &'static CallbackCrypto {
    static CRYPTO: OnceLock<CallbackCrypto> = OnceLock::new();
    CRYPTO.get_or_init(|| {
        CallbackCrypto::new(
            Secret::new(CALLBACK_TOKEN),
            &Secret::new(CALLBACK_KEY),
            CALLBACK_CORP,
        )
        .expect("the sample key is valid")
    })
}

/// The envelope WeCom posts around a ciphertext.
pub fn envelope(encrypted: &str) -> String {
    format!("<xml><ToUserName><![CDATA[{CALLBACK_CORP}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>")
}

/// Whatever a request carries, URL verification, message decryption and the event reader
/// return; also when the signature is right, so the decryption itself is reached.
pub fn check_callback_request(signature: &str, timestamp: &str, nonce: &str, echostr: &str, body: &[u8]) {
    let crypto = crypto();
    let _ = crypto.verify_url(signature, timestamp, nonce, echostr);
    let signed = crypto.signature(timestamp, nonce, echostr);
    if let Ok(plain) = crypto.verify_url(&signed, timestamp, nonce, echostr) {
        let _ = event::parse(&plain);
    }
    if let Ok(inner) = crypto.decrypt_message(signature, timestamp, nonce, body) {
        let _ = event::parse(&inner);
    }
    if !echostr.contains("]]>") {
        if let Ok(inner) = crypto.decrypt_message(&signed, timestamp, nonce, envelope(echostr).as_bytes()) {
            let _ = event::parse(&inner);
        }
    }
    if let Ok(xml) = std::str::from_utf8(body) {
        let _ = event::parse(xml);
    }
}

/// Decrypting a ciphertext of any plaintext (the fuzzer cannot forge one: this encrypts
/// what it chose) returns, and what it accepts is exactly the plaintext's message between
/// its 20-byte header and our receive id.
pub fn check_decrypt_plaintext(plaintext: &[u8]) {
    use aes::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
    use base64::Engine;
    let mut buffer = plaintext.to_vec();
    buffer.truncate(buffer.len() / 32 * 32);
    let key = key_bytes();
    let len = buffer.len();
    let iv: [u8; 16] = key[..16].try_into().expect("the IV is the key's first 16 bytes");
    let cipher = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut buffer, len)
        .expect("whole blocks");
    let encrypted = base64::engine::general_purpose::STANDARD.encode(cipher);
    let Ok(message) = crypto().decrypt(&encrypted) else {
        return;
    };
    let plain = &plaintext[..len];
    let pad = usize::from(plain[len - 1]);
    assert!((1..=32).contains(&pad), "accepted padding of {pad}");
    let content = &plain[..len - pad];
    let declared = u32::from_be_bytes(content[16..20].try_into().unwrap()) as usize;
    assert_eq!(message.as_bytes(), &content[20..20 + declared]);
    assert_eq!(&content[20 + declared..], CALLBACK_CORP.as_bytes());
}

fn key_bytes() -> [u8; 32] {
    use base64::Engine;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key = engine
        .decode(format!("{CALLBACK_KEY}="))
        .expect("the sample key is base64");
    key.try_into().expect("the sample key is 32 bytes")
}

/// Encrypting any message decrypts back to it: bare, with a chosen random prefix, and as
/// a signed passive reply read back as WeCom would post it.
pub fn check_callback_round_trip(message: &str, random: [u8; 16], timestamp: &str, nonce: &str) {
    let crypto = crypto();
    let fixed = crypto.encrypt_with_random(message, random);
    if fixed.len() > MAX_ENCRYPTED_LEN {
        assert!(
            crypto.decrypt(&fixed).is_err(),
            "an oversized ciphertext is refused"
        );
        return;
    }
    assert_eq!(crypto.decrypt(&fixed).as_deref().ok(), Some(message));
    assert_eq!(
        crypto.decrypt(&crypto.encrypt(message)).as_deref().ok(),
        Some(message)
    );
    let reply = crypto.encrypt_reply(message, timestamp, nonce);
    let signature = reply
        .split_once("<MsgSignature><![CDATA[")
        .and_then(|(_, rest)| rest.split_once("]]>"))
        .map(|(signature, _)| signature)
        .unwrap_or_else(|| panic!("the reply has no signature: {reply}"));
    let back = crypto.decrypt_message(signature, timestamp, nonce, reply.as_bytes());
    assert_eq!(back.as_deref().ok(), Some(message), "reply {reply:?}: {back:?}");
}

/// A card click written as WeCom writes it reads back as the same click (XML turns
/// `\r\n` and `\r` into `\n`); one missing a field it needs is refused, not misread.
pub fn check_card_event_round_trip(event: &CardEvent) {
    let xml = event::card_event_xml(event);
    let eol = |s: &str| s.replace("\r\n", "\n").replace('\r', "\n");
    let expected = CardEvent {
        to_user_name: eol(&event.to_user_name),
        from_user_name: eol(&event.from_user_name),
        create_time: event.create_time,
        agent_id: event.agent_id,
        event_key: eol(&event.event_key),
        task_id: eol(&event.task_id),
        card_type: eol(&event.card_type),
        response_code: eol(&event.response_code),
    };
    let complete = [
        &expected.to_user_name,
        &expected.from_user_name,
        &expected.event_key,
        &expected.task_id,
        &expected.card_type,
    ]
    .iter()
    .all(|s| !s.is_empty());
    match event::parse(&xml) {
        Ok(Incoming::CardEvent(back)) => {
            assert!(complete, "an incomplete event was accepted: {xml}");
            assert_eq!(back, expected, "{xml}");
        }
        Ok(other) => panic!("a card event read as {other:?}: {xml}"),
        Err(e) => assert!(!complete, "{e}: {xml}"),
    }
}
