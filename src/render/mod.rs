//! Rendering: alerts → handlebars template → WeCom message content, fitted to WeCom's
//! limits. Built-in templates live in `templates/` and are embedded in the binary; files in
//! `templates.dir` override them by name.

pub mod escape;
pub mod fit;
pub mod helpers;
pub mod message;

use std::collections::BTreeMap;

use handlebars::{DirectorySourceOptionsBuilder, Handlebars};
use rust_embed::RustEmbed;
use serde_json::{json, Map, Value};

use crate::config::{MsgType, RouteConfig, TemplateSettings};
use crate::ingest::payload::{Alert, AlertStatus, LabelSet, WebhookPayload};
use fit::{cut_to_fit, fit_alerts, Fitted};
pub use message::MessageContent;

#[derive(RustEmbed)]
#[folder = "templates/"]
#[include = "*.hbs"]
struct BuiltinTemplates;

/// Notifications captured from a real Alertmanager, used to test templates before use.
const SAMPLE_PAYLOADS: [&str; 3] = [
    include_str!("../../tests/fixtures/firing-crashloop.json"),
    include_str!("../../tests/fixtures/firing-unicode-markup.json"),
    include_str!("../../tests/fixtures/resolved-targetdown.json"),
];

/// Button text of textcards: "details", at most 4 characters.
const TEXTCARD_BUTTON: &str = "详情";

/// A template set that failed to load, or a route naming a template that does not exist.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The handlebars message names the template, line and column.
    #[error("{0}")]
    Syntax(#[from] Box<handlebars::TemplateError>),
    #[error("cannot load templates from {dir}: {message}")]
    Directory { dir: String, message: String },
    #[error("{0}")]
    Recipients(String),
    /// A template failed on a sample notification.
    #[error("{0} (rendering a sample notification)")]
    Sample(String),
    #[error("route {route:?}: no template named {template:?} (available: {available})")]
    Missing {
        route: String,
        template: String,
        available: String,
    },
}

/// A template failed while rendering a message, or produced nothing deliverable.
#[derive(Debug, thiserror::Error)]
#[error("route {route:?}, template {template:?}: {message}")]
pub struct RenderError {
    pub route: String,
    pub template: String,
    pub message: String,
}

/// A message ready to address and send.
#[derive(Debug, Clone)]
pub struct RenderedMessage {
    pub content: MessageContent,
    /// Alerts the message shows in full; the rest are summarised.
    pub shown_alerts: usize,
    pub total_alerts: usize,
    /// Whether fitting left anything out or cut any text.
    pub cut: bool,
}

/// Templates for every msgtype, each registry with the escaping its output needs.
pub struct Renderer {
    text: Handlebars<'static>,
    markdown: Handlebars<'static>,
    textcard: Handlebars<'static>,
    markdown_v2: Handlebars<'static>,
}

impl Renderer {
    /// Loads the built-in templates and then `settings.dir`; syntax errors are reported here,
    /// not when the first alert arrives.
    pub fn new(settings: &TemplateSettings) -> Result<Renderer, TemplateError> {
        Ok(Renderer {
            text: registry(settings, escape::text)?,
            markdown: registry(settings, escape::markdown)?,
            textcard: registry(settings, escape::textcard)?,
            markdown_v2: registry(settings, escape::markdown)?,
        })
    }

    /// Checks that every route's template exists.
    pub fn check_routes(&self, routes: &[RouteConfig]) -> Result<(), TemplateError> {
        for route in routes {
            let registry = self.registry(route.msgtype);
            if !registry.has_template(&route.template) {
                let mut available: Vec<&str> = registry
                    .get_templates()
                    .keys()
                    .map(String::as_str)
                    .filter(|name| !name.starts_with("partials/"))
                    .collect();
                available.sort_unstable();
                return Err(TemplateError::Missing {
                    route: route.name.clone(),
                    template: route.template.clone(),
                    available: available.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Renders every route's template against sample notifications (firing, resolved, both
    /// at once), so a template that breaks only on some alerts fails `check`, not a page.
    pub fn check_with_samples(&self, routes: &[RouteConfig]) -> Result<(), RenderError> {
        let samples: Vec<WebhookPayload> = SAMPLE_PAYLOADS
            .iter()
            .map(|text| WebhookPayload::parse(text.as_bytes()).expect("bundled samples parse"))
            .collect();
        let mixed: Vec<&Alert> = samples.iter().flat_map(|p| &p.alerts).collect();
        for route in routes {
            for sample in &samples {
                let alerts: Vec<&Alert> = sample.alerts.iter().collect();
                self.render(route, sample, &alerts, &[])?;
            }
            self.render(route, &samples[0], &mixed, &["alice".to_string()])?;
        }
        Ok(())
    }

    fn registry(&self, msgtype: MsgType) -> &Handlebars<'static> {
        match msgtype {
            MsgType::Text => &self.text,
            MsgType::Markdown => &self.markdown,
            MsgType::Textcard => &self.textcard,
            MsgType::MarkdownV2 => &self.markdown_v2,
        }
    }

    /// Renders the route's message for `alerts` (mentioning `mentions`, for robots) and
    /// fits it to WeCom's limits.
    pub fn render(
        &self,
        route: &RouteConfig,
        payload: &WebhookPayload,
        alerts: &[&Alert],
        mentions: &[String],
    ) -> Result<RenderedMessage, RenderError> {
        let error = |message: String| RenderError {
            route: route.name.clone(),
            template: route.template.clone(),
            message,
        };
        let context = MessageContext::new(route, payload, alerts, mentions);
        let registry = self.registry(route.msgtype);
        let render = |shown: usize| -> Result<String, RenderError> {
            registry
                .render(&route.template, &context.with_shown(shown))
                .map_err(|e| error(e.to_string()))
        };
        let total = alerts.len();
        let more_line = |omitted: usize| format!("\n… and {omitted} more alert{}", plural(omitted));

        let (content, fitted) = match route.msgtype {
            MsgType::Text | MsgType::Markdown | MsgType::MarkdownV2 => {
                let max = match (route.msgtype, route.is_robot()) {
                    (MsgType::Text, _) => fit::TEXT_MAX_BYTES,
                    (MsgType::Markdown, false) => fit::MARKDOWN_MAX_BYTES,
                    _ => fit::ROBOT_MARKDOWN_MAX_BYTES,
                };
                let fitted = fit_alerts(total, max, |k| render(k).map(|t| t.trim().to_string()), more_line)?;
                if fitted.text.trim().is_empty() {
                    return Err(error("the template rendered an empty message".into()));
                }
                let content = fitted.text.clone();
                let content = match route.msgtype {
                    MsgType::Text => MessageContent::Text { content },
                    MsgType::Markdown => MessageContent::Markdown { content },
                    _ => MessageContent::MarkdownV2 { content },
                };
                (content, fitted)
            }
            MsgType::Textcard => {
                let full = render(total)?;
                let (raw_title, _) = split_title(&full);
                if raw_title.trim().is_empty() {
                    return Err(error(
                        "the template rendered no title (its first non-empty line)".into(),
                    ));
                }
                let (title, title_cut) = cut_to_fit(
                    &escape::unescape_html(raw_title.trim()),
                    fit::TEXTCARD_TITLE_MAX_BYTES,
                );
                let more_div = |omitted: usize| {
                    format!(
                        "<div class=\"gray\">… and {omitted} more alert{}</div>",
                        plural(omitted)
                    )
                };
                let description = |k: usize| render(k).map(|out| split_title(&out).1.trim().to_string());
                let mut fitted =
                    fit_alerts(total, fit::TEXTCARD_DESCRIPTION_MAX_BYTES, description, more_div)?;
                if fitted.text.is_empty() {
                    // WeCom requires a description; the title says it all.
                    fitted.text = escape::textcard(&title);
                }
                fitted.cut |= title_cut;
                let url = card_url(alerts, &payload.external_url).ok_or_else(|| {
                    error("textcard needs an http(s) URL: the alerts have no generatorURL and Alertmanager's externalURL is not http(s)".into())
                })?;
                let content = MessageContent::Textcard {
                    title,
                    description: fitted.text.clone(),
                    url,
                    btntxt: TEXTCARD_BUTTON.to_string(),
                };
                (content, fitted)
            }
        };
        let Fitted { shown, cut, .. } = fitted;
        Ok(RenderedMessage {
            content,
            shown_alerts: shown,
            total_alerts: total,
            cut,
        })
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Splits template output into its first non-empty line and the rest.
fn split_title(output: &str) -> (&str, &str) {
    let trimmed = output.trim_start();
    match trimmed.split_once('\n') {
        Some((title, rest)) => (title, rest),
        None => (trimmed, ""),
    }
}

/// The card's link: the first alert's Prometheus graph, else Alertmanager itself.
fn card_url(alerts: &[&Alert], external_url: &str) -> Option<String> {
    let usable = |url: &str| {
        (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() <= fit::TEXTCARD_URL_MAX_BYTES
    };
    alerts
        .iter()
        .map(|a| a.generator_url.as_str())
        .chain(std::iter::once(external_url))
        .find(|url| usable(url))
        .map(str::to_string)
}

fn registry(
    settings: &TemplateSettings,
    escape: fn(&str) -> String,
) -> Result<Handlebars<'static>, TemplateError> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(escape);
    helpers::register(&mut registry, settings.timezone);
    registry
        .register_embed_templates_with_extension::<BuiltinTemplates>(".hbs")
        .map_err(|e| TemplateError::Syntax(Box::new(e)))?;
    if let Some(dir) = &settings.dir {
        let options = DirectorySourceOptionsBuilder::default()
            .tpl_extension(".hbs")
            .build()
            .expect("all options have defaults");
        registry.register_templates_directory(dir, options).map_err(|e| {
            if e.name().is_some() || e.pos().is_some() {
                TemplateError::Syntax(Box::new(e))
            } else {
                TemplateError::Directory {
                    dir: dir.display().to_string(),
                    message: e.to_string(),
                }
            }
        })?;
    }
    Ok(registry)
}

/// The data a template sees for one message. Built once; `with_shown(k)` gives the view
/// with the first `k` alerts (firing first) for fitting.
struct MessageContext {
    base: Map<String, Value>,
    /// Firing alerts first, then resolved, each as template data.
    alerts: Vec<(AlertStatus, Value)>,
}

impl MessageContext {
    fn new(
        route: &RouteConfig,
        payload: &WebhookPayload,
        alerts: &[&Alert],
        mentions: &[String],
    ) -> MessageContext {
        let firing = alerts.iter().filter(|a| a.status == AlertStatus::Firing).count();
        let resolved = alerts.len() - firing;
        let mut base = Map::new();
        base.insert("route".into(), json!(route.name));
        base.insert("mentions".into(), json!(mentions));
        base.insert("receiver".into(), json!(payload.receiver));
        base.insert(
            "status".into(),
            json!(if firing > 0 { "firing" } else { "resolved" }),
        );
        base.insert("firingCount".into(), json!(firing));
        base.insert("resolvedCount".into(), json!(resolved));
        base.insert("groupLabels".into(), json!(payload.group_labels));
        base.insert(
            "commonLabels".into(),
            json!(common(alerts.iter().map(|a| &a.labels))),
        );
        base.insert(
            "commonAnnotations".into(),
            json!(common(alerts.iter().map(|a| &a.annotations))),
        );
        base.insert("externalURL".into(), json!(payload.external_url));
        base.insert("truncatedAlerts".into(), json!(payload.truncated_alerts));

        let mut ordered: Vec<&Alert> = alerts.to_vec();
        ordered.sort_by_key(|a| a.status == AlertStatus::Resolved); // stable: firing first
        let alerts = ordered.into_iter().map(|a| (a.status, alert_data(a))).collect();
        MessageContext { base, alerts }
    }

    fn with_shown(&self, shown: usize) -> Value {
        let shown = &self.alerts[..shown.min(self.alerts.len())];
        let pick = |status: Option<AlertStatus>| -> Value {
            Value::Array(
                shown
                    .iter()
                    .filter(|(s, _)| status.is_none_or(|wanted| *s == wanted))
                    .map(|(_, data)| data.clone())
                    .collect(),
            )
        };
        let mut data = self.base.clone();
        data.insert("alerts".into(), pick(None));
        data.insert("firing".into(), pick(Some(AlertStatus::Firing)));
        data.insert("resolved".into(), pick(Some(AlertStatus::Resolved)));
        data.insert("omittedAlerts".into(), json!(self.alerts.len() - shown.len()));
        Value::Object(data)
    }
}

fn alert_data(alert: &Alert) -> Value {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    json!({
        "status": alert.status.as_str(),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": time(alert.starts_at),
        "endsAt": time(alert.ends_at),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    })
}

/// The pairs every set has in common.
fn common<'a>(mut sets: impl Iterator<Item = &'a LabelSet>) -> LabelSet {
    let Some(first) = sets.next() else {
        return BTreeMap::new();
    };
    let mut common = first.clone();
    for set in sets {
        common.retain(|key, value| set.get(key) == Some(value));
    }
    common
}

#[cfg(test)]
mod tests;
