//! Cards: `textcard` (title, HTML-ish description, link, button) and `template_card`
//! (`text_notice`, whose JSON the template writes, or `button_interaction` for routes with
//! buttons), all fitted to WeCom's limits.

use serde_json::{Map, Value};

use super::escape;
use super::fit::{self, cut_to_fit, fit_alerts, largest_fitting, Fitted};
use super::helpers;
use super::message::MessageContent;
use super::RenderError;
use crate::config::ButtonSettings;
use crate::model::Alert;

/// Button text of textcards: "details", at most 4 characters.
const TEXTCARD_BUTTON: &str = "详情";

pub enum CardError {
    Render(RenderError),
    Invalid(String),
}

impl From<RenderError> for CardError {
    fn from(error: RenderError) -> Self {
        CardError::Render(error)
    }
}

/// The line a textcard ends with when alerts were left out.
pub fn more_alerts(omitted: usize) -> String {
    let plural = if omitted == 1 { "" } else { "s" };
    format!("<div class=\"gray\">… and {omitted} more alert{plural}</div>")
}

/// The card's link: the first alert's Prometheus graph, else Alertmanager itself.
pub fn link(alerts: &[&Alert], external_url: &str) -> Option<String> {
    alerts
        .iter()
        .map(|a| a.generator_url.as_str())
        .chain(std::iter::once(external_url))
        .find(|url| is_http(url) && url.len() <= fit::TEXTCARD_URL_MAX_BYTES)
        .map(str::to_string)
}

/// A textcard's one link: Alertmanager's alerts page filtered to the alerts' common labels,
/// where each alert has both its graph ("Source") and a Silence button — a textcard can
/// carry no other link. Else, as [`link`], the first alert's graph.
pub fn textcard_link(alerts: &[&Alert], external_url: &str) -> Option<String> {
    let mut common: Map<String, Value> = match alerts.first() {
        Some(first) => first
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect(),
        None => Map::new(),
    };
    for alert in alerts.iter().skip(1) {
        common.retain(|k, v| alert.labels.get(k) == v.as_str());
    }
    helpers::alerts_page_url(external_url, &common)
        .ok()
        .filter(|url| is_http(url) && url.len() <= fit::TEXTCARD_URL_MAX_BYTES)
        .or_else(|| link(alerts, external_url))
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// A textcard from template output whose first non-empty line is the title. `render(k)`
/// renders with the first `k` alerts.
///
/// The title comes from the same render as the description that was kept, so it sees the
/// alerts the card shows (counts such as `firingCount` always cover the whole group). A
/// 1,000-alert group thus costs a few small renders, never one of all its alerts.
pub fn textcard(
    total: usize,
    url: String,
    more: impl Fn(usize) -> String,
    mut render: impl FnMut(usize) -> Result<String, RenderError>,
) -> Result<(MessageContent, Fitted), CardError> {
    // Titles are short: keep each render's, then take the one of the kept description.
    let mut titles: Vec<(usize, String)> = Vec::new();
    let description = |k: usize| {
        let out = render(k)?;
        let (title, description) = split_title(&out);
        titles.push((k, title.trim().to_string()));
        Ok::<_, RenderError>(description.trim().to_string())
    };
    let mut fitted = fit_alerts(total, fit::TEXTCARD_DESCRIPTION_MAX_BYTES, description, more)?;
    let raw_title = titles
        .iter()
        .rev()
        .find(|(k, _)| *k == fitted.shown)
        .map_or("", |(_, title)| title.as_str());
    if raw_title.is_empty() {
        return Err(CardError::Invalid(
            "the template rendered no title (its first non-empty line)".into(),
        ));
    }
    let (title, title_cut) = cut_to_fit(&escape::unescape_html(raw_title), fit::TEXTCARD_TITLE_MAX_BYTES);
    if fitted.text.is_empty() {
        // WeCom requires a description; the title says it all.
        fitted.text = escape::textcard(&title);
    }
    fitted.cut |= title_cut;
    let content = MessageContent::Textcard {
        title,
        description: fitted.text.clone(),
        url,
        btntxt: TEXTCARD_BUTTON.to_string(),
    };
    Ok((content, fitted))
}

/// Splits template output into its first non-empty line and the rest.
fn split_title(output: &str) -> (&str, &str) {
    let trimmed = output.trim_start();
    match trimmed.split_once('\n') {
        Some((title, rest)) => (title, rest),
        None => (trimmed, ""),
    }
}

/// WeCom's suggested limits for `text_notice` cards, in characters.
const MAIN_TITLE: usize = 26;
const MAIN_DESC: usize = 30;
const SUB_TITLE: usize = 112;
const EMPHASIS_TITLE: usize = 10;
const EMPHASIS_DESC: usize = 15;
const SOURCE_DESC: usize = 13;
const KEYNAME: usize = 5;
const VALUE: usize = 30;
const ROWS: usize = 6;
const JUMPS: usize = 3;
const JUMP_TITLE: usize = 13;

/// The `text_notice` fields cut to a limit in characters, as `(object, field, limit)`
/// (`field` empty for a top-level string): what a preview shows sizes against.
pub const CARD_FIELD_LIMITS: [(&str, &str, usize); 6] = [
    ("main_title", "title", MAIN_TITLE),
    ("main_title", "desc", MAIN_DESC),
    ("emphasis_content", "title", EMPHASIS_TITLE),
    ("emphasis_content", "desc", EMPHASIS_DESC),
    ("source", "desc", SOURCE_DESC),
    ("sub_title_text", "", SUB_TITLE),
];

/// Button text of acknowledge buttons ("claim"): WeCom suggests at most 10 characters.
const ACKNOWLEDGE_TEXT: &str = "认领";
/// Button styles (1–4 in WeCom's client: blue, grey, red, …): acknowledge stands out.
const ACKNOWLEDGE_STYLE: u8 = 1;
const SILENCE_STYLE: u8 = 2;

/// At most this many alerts are silenced by one click, each by a silence of its own exact
/// labels; a card standing for more firing alerts offers no silence buttons
/// (docs/interactive-cards.md says why).
pub const MAX_SILENCED_ALERTS: usize = 50;

/// What a button of an interactive card does; its `key` is what WeCom calls back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonAction {
    Acknowledge,
    Silence(std::time::Duration),
}

impl ButtonAction {
    /// The button's key: `ack`, or `silence:` and the duration (`silence:4h`).
    pub fn key(self) -> String {
        match self {
            ButtonAction::Acknowledge => "ack".into(),
            ButtonAction::Silence(duration) => format!("silence:{}", short_duration(duration)),
        }
    }

    /// The action of a key from [`ButtonAction::key`]; `None` for anything else.
    pub fn parse(key: &str) -> Option<ButtonAction> {
        match key.split_once(':') {
            None if key == "ack" => Some(ButtonAction::Acknowledge),
            Some(("silence", duration)) => humantime::parse_duration(duration)
                .ok()
                .map(ButtonAction::Silence),
            _ => None,
        }
    }

    pub fn text(self) -> String {
        match self {
            ButtonAction::Acknowledge => ACKNOWLEDGE_TEXT.into(),
            ButtonAction::Silence(duration) => format!("静默 {}", short_duration(duration)),
        }
    }

    /// The buttons a route's settings put on a card of `firing` firing alerts, in order:
    /// no silence buttons on cards of more than [`MAX_SILENCED_ALERTS`].
    pub fn of(buttons: &ButtonSettings, firing: usize) -> Vec<ButtonAction> {
        let acknowledge = buttons.acknowledge.then_some(ButtonAction::Acknowledge);
        let silences = buttons
            .silence
            .iter()
            .filter(|_| firing <= MAX_SILENCED_ALERTS)
            .map(|d| ButtonAction::Silence(*d));
        acknowledge.into_iter().chain(silences).collect()
    }

    /// The card's `button_list` entry.
    pub fn button(self) -> Value {
        let style = match self {
            ButtonAction::Acknowledge => ACKNOWLEDGE_STYLE,
            ButtonAction::Silence(_) => SILENCE_STYLE,
        };
        serde_json::json!({ "text": self.text(), "style": style, "key": self.key() })
    }
}

/// A duration as on-call writes it: `30m`, `4h`, `24h`, `7d`.
pub fn short_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        s if s >= 2 * 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Turns a fitted `text_notice` card into a `button_interaction` card with `actions` as
/// its buttons. WeCom's `task_id` is added when the card is sent (each recipient batch is
/// a card of its own). `jump_list` is not part of this card type: links belong in
/// `horizontal_content_list` rows of type 1.
pub fn with_buttons(card: &mut Value, actions: &[ButtonAction]) {
    if let Some(object) = card.as_object_mut() {
        object.insert("card_type".into(), Value::from("button_interaction"));
        object.remove("jump_list");
        let buttons: Vec<Value> = actions.iter().map(|action| action.button()).collect();
        object.insert("button_list".into(), Value::Array(buttons));
    }
}

/// A `template_card` showing as many alerts as its sub-title holds. `render(k)` renders with
/// the first `k` alerts: the built-in cards list them in `sub_title_text`, one a line, and
/// say how many they leave out (`omittedAlerts`), so a big group reads "… and 53 more"
/// rather than ending in a line cut short. A template whose sub-title does not depend on
/// the alerts shown renders once with all of them. Returns the card, whether anything was
/// left out or cut, and how many alerts it shows.
pub fn fitted_template_card(
    total: usize,
    fallback_url: Option<&str>,
    mut render: impl FnMut(usize) -> Result<String, RenderError>,
) -> Result<(Value, bool, usize), CardError> {
    let sub_title_fits = |output: &str| {
        serde_json::from_str::<Value>(output.trim()).map_or(true, |card| {
            card.get("sub_title_text")
                .and_then(Value::as_str)
                .is_none_or(|text| text.chars().count() <= SUB_TITLE)
        })
    };
    let all = render(total)?;
    let (output, shown) = if total <= 1 || sub_title_fits(&all) {
        (all, total)
    } else {
        let fewer = largest_fitting(total - 1, |k| {
            let output = render(k)?;
            Ok::<_, RenderError>(sub_title_fits(&output).then_some(output))
        })?;
        fewer.map_or((all, total), |(k, output)| (output, k))
    };
    let (card, cut) = template_card(&output, fallback_url).map_err(CardError::Invalid)?;
    Ok((card, cut || shown < total, shown))
}

/// A `template_card` from template output, which must be the card's JSON object. Fields
/// are cut to WeCom's limits; `card_action` defaults to `fallback_url`. Returns the card
/// and whether anything was cut.
pub fn template_card(output: &str, fallback_url: Option<&str>) -> Result<(Value, bool), String> {
    let mut card: Value = serde_json::from_str(output.trim())
        .map_err(|e| format!("template_card templates must render a JSON object: {e}"))?;
    let Some(object) = card.as_object_mut() else {
        return Err("template_card templates must render a JSON object".into());
    };
    object.insert("card_type".into(), Value::from("text_notice"));
    let mut cut = false;
    if let Some(Value::Object(main)) = object.get_mut("main_title") {
        cut |= fit_str(main, "title", MAIN_TITLE);
        cut |= fit_str(main, "desc", MAIN_DESC);
    }
    cut |= fit_str(object, "sub_title_text", SUB_TITLE);
    if let Some(Value::Object(emphasis)) = object.get_mut("emphasis_content") {
        cut |= fit_str(emphasis, "title", EMPHASIS_TITLE);
        cut |= fit_str(emphasis, "desc", EMPHASIS_DESC);
    }
    if let Some(Value::Object(source)) = object.get_mut("source") {
        cut |= fit_str(source, "desc", SOURCE_DESC);
    }
    if let Some(Value::Array(rows)) = object.get_mut("horizontal_content_list") {
        rows.retain(|row| {
            row.get("keyname")
                .is_some_and(|k| k.as_str().is_some_and(|k| !k.is_empty()))
        });
        if rows.len() > ROWS {
            rows.truncate(ROWS);
            cut = true;
        }
        for row in rows.iter_mut().filter_map(Value::as_object_mut) {
            cut |= fit_str(row, "keyname", KEYNAME);
            cut |= fit_str(row, "value", VALUE);
            // A link row (type 1) without a usable link would make WeCom refuse the card:
            // it becomes plain text.
            if row.get("type").and_then(Value::as_i64) == Some(1) {
                let usable = row
                    .get("url")
                    .and_then(Value::as_str)
                    .is_some_and(|url| is_http(url) && url.len() <= fit::TEXTCARD_URL_MAX_BYTES);
                if !usable {
                    row.remove("type");
                    row.remove("url");
                }
            }
        }
    }
    if let Some(Value::Array(jumps)) = object.get_mut("jump_list") {
        // A jump without a usable link would make WeCom refuse the whole card.
        jumps.retain(|jump| {
            jump.get("url")
                .and_then(Value::as_str)
                .is_some_and(|url| is_http(url) && url.len() <= fit::TEXTCARD_URL_MAX_BYTES)
        });
        if jumps.len() > JUMPS {
            jumps.truncate(JUMPS);
            cut = true;
        }
        for jump in jumps.iter_mut().filter_map(Value::as_object_mut) {
            jump.entry("type").or_insert(Value::from(1));
            cut |= fit_str(jump, "title", JUMP_TITLE);
        }
    }
    let action_url = object
        .get("card_action")
        .and_then(|a| a.get("url"))
        .and_then(Value::as_str)
        .filter(|url| is_http(url))
        .map(str::to_string)
        .or_else(|| fallback_url.map(str::to_string))
        .ok_or(
            "template_card needs an http(s) card_action url (no generatorURL or externalURL to fall back on)",
        )?;
    object.insert(
        "card_action".into(),
        serde_json::json!({ "type": 1, "url": action_url }),
    );
    let has_title = object
        .get("main_title")
        .and_then(|m| m.get("title"))
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    let has_sub = object
        .get("sub_title_text")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if !has_title && !has_sub {
        return Err("template_card needs main_title.title or sub_title_text".into());
    }
    Ok((card, cut))
}

/// Cuts a string field to `max` characters, marking the cut; returns whether it cut.
fn fit_str(object: &mut Map<String, Value>, field: &str, max: usize) -> bool {
    if let Some(Value::String(text)) = object.get_mut(field) {
        if text.chars().count() > max {
            let kept: String = text.chars().take(max - 1).collect();
            *text = format!("{}…", kept.trim_end());
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WebhookPayload;

    #[test]
    fn buttons_keys_round_trip_and_read_as_on_call_writes_them() {
        use std::time::Duration;
        let hour = Duration::from_secs(3600);
        for action in [
            ButtonAction::Acknowledge,
            ButtonAction::Silence(hour),
            ButtonAction::Silence(24 * hour),
            ButtonAction::Silence(7 * 24 * hour),
            ButtonAction::Silence(Duration::from_secs(90 * 60)),
        ] {
            assert_eq!(
                ButtonAction::parse(&action.key()),
                Some(action),
                "{}",
                action.key()
            );
        }
        assert_eq!(ButtonAction::Silence(24 * hour).text(), "静默 24h");
        assert_eq!(ButtonAction::Silence(7 * 24 * hour).key(), "silence:7d");
        assert_eq!(ButtonAction::parse("silence:forever"), None);
        assert_eq!(ButtonAction::parse("rm -rf"), None);
        let settings = ButtonSettings {
            acknowledge: true,
            silence: vec![hour, 4 * hour],
            allowed_users: vec![],
        };
        assert_eq!(ButtonAction::of(&settings, 3).len(), 3);
        assert_eq!(
            ButtonAction::of(&settings, MAX_SILENCED_ALERTS + 1),
            vec![ButtonAction::Acknowledge],
            "no silence for more alerts than a click silences"
        );
    }

    #[test]
    fn a_card_with_buttons_is_a_button_interaction_card_without_jump_list() {
        let output = r#"{"main_title":{"title":"t"},"jump_list":[{"title":"g","url":"http://g"}],
            "horizontal_content_list":[{"keyname":"graph","value":"P","type":1,"url":"javascript:x"},{"keyname":"a","value":"b"}]}"#;
        let (mut card, _) = template_card(output, Some("http://am")).unwrap();
        assert_eq!(
            card["horizontal_content_list"][0].get("url"),
            None,
            "an unusable link row is plain text"
        );
        with_buttons(&mut card, &[ButtonAction::Acknowledge]);
        assert_eq!(card["card_type"], "button_interaction");
        assert_eq!(card.get("jump_list"), None);
        assert_eq!(
            card["button_list"],
            serde_json::json!([{"text": "认领", "style": 1, "key": "ack"}])
        );
    }

    #[test]
    fn a_link_longer_than_wecom_takes_falls_back_to_alertmanager() {
        let long = format!("http://prometheus.example.com/graph?g0.expr={}", "x".repeat(1000));
        let payload = WebhookPayload::parse(
            format!(
                r#"{{"alerts":[{{"status":"firing","labels":{{"alertname":"A"}},"generatorURL":"{long}"}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let alerts: Vec<&Alert> = payload.alerts.iter().collect();
        assert!(long.len() > fit::TEXTCARD_URL_MAX_BYTES && long.len() < 2048);
        assert_eq!(
            link(&alerts, "http://am.example/").as_deref(),
            Some("http://am.example/")
        );
        assert_eq!(link(&alerts, "not a url"), None, "no usable link at all");
    }

    #[test]
    fn a_card_is_fitted_to_wecom_limits() {
        let rows: Vec<String> = (0..9)
            .map(|i| format!(r#"{{"keyname":"label-name-{i}","value":"{}"}}"#, "值".repeat(40)))
            .collect();
        let output = format!(
            r#"{{"main_title":{{"title":"{}","desc":"d"}},"sub_title_text":"{}","horizontal_content_list":[{}],
               "jump_list":[{{"title":"graph","url":"http://p/g"}},{{"title":"bad","url":"ftp://x"}},{{"title":"a","url":"http://a"}},{{"title":"b","url":"http://b"}},{{"title":"c","url":"http://c"}}]}}"#,
            "标题".repeat(30),
            "x".repeat(300),
            rows.join(",")
        );
        let (card, cut) = template_card(&output, Some("http://am")).unwrap();
        assert!(cut);
        assert_eq!(card["card_type"], "text_notice");
        assert_eq!(
            card["main_title"]["title"].as_str().unwrap().chars().count(),
            MAIN_TITLE
        );
        assert_eq!(
            card["sub_title_text"].as_str().unwrap().chars().count(),
            SUB_TITLE
        );
        let rows = card["horizontal_content_list"].as_array().unwrap();
        assert_eq!(rows.len(), ROWS);
        for row in rows {
            assert!(row["keyname"].as_str().unwrap().chars().count() <= KEYNAME);
            assert!(row["value"].as_str().unwrap().chars().count() <= VALUE);
        }
        let jumps = card["jump_list"].as_array().unwrap();
        assert_eq!(jumps.len(), JUMPS);
        assert!(jumps
            .iter()
            .all(|j| j["url"].as_str().unwrap().starts_with("http")));
        assert_eq!(
            card["card_action"],
            serde_json::json!({"type": 1, "url": "http://am"})
        );
    }

    #[test]
    fn output_that_is_not_a_card_is_refused_with_a_reason() {
        assert!(template_card("not json", Some("http://am"))
            .unwrap_err()
            .contains("JSON"));
        assert!(template_card("[]", Some("http://am"))
            .unwrap_err()
            .contains("object"));
        assert!(template_card(r#"{"main_title":{"title":"t"}}"#, None)
            .unwrap_err()
            .contains("card_action"));
        assert!(template_card(r#"{"source":{}}"#, Some("http://am"))
            .unwrap_err()
            .contains("main_title"));
    }
}
