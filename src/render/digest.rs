//! Storm digests: the one message that stands for many notifications held back to stay
//! within WeCom's rate limits — counts by severity, alertnames with counts (most severe
//! first), and a link to Alertmanager's alerts page filtered to them. Rendered through the
//! route's `digest_template` (built-ins: `templates/digest/MSGTYPE.hbs`) and fitted like
//! any message, but always one message: a digest must never cost more than one slot.

use serde::Serialize;
use serde_json::Value;

use super::fit::{self, fit_alerts};
use super::{card, escape, ContentLimits, MessageContent, RenderError, RenderedMessage, Renderer};
use crate::config::{MsgType, RouteConfig};

/// What one digest reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestSummary {
    /// Notifications (alert groups) it represents.
    pub notifications: usize,
    pub firing_count: usize,
    pub resolved_count: usize,
    /// Most severe first.
    pub severities: Vec<SeverityCount>,
    /// Most severe first, then the most alerts first.
    pub alertnames: Vec<AlertnameCount>,
    /// Alertmanager's alerts page filtered to the alertnames ("" without an http(s)
    /// external URL).
    #[serde(rename = "alertsURL")]
    pub alerts_url: String,
    /// How long the oldest represented notification waited, in seconds.
    pub waited_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeverityCount {
    /// "" for alerts without the severity label.
    pub severity: String,
    pub firing: usize,
    pub resolved: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertnameCount {
    pub alertname: String,
    /// The most severe severity among its alerts ("" if none has one).
    pub severity: String,
    pub firing: usize,
    pub resolved: usize,
}

/// The line that ends a digest when alertnames were left out.
fn more_alertnames(omitted: usize) -> String {
    let plural = if omitted == 1 { "" } else { "s" };
    format!("\n… and {omitted} more alertname{plural}, see Alertmanager")
}

impl Renderer {
    /// Renders `template` (the route's `digest_template`, or the built-in one for its
    /// msgtype) for `summary` and fits it into one message: alertnames that do not fit are
    /// counted at the end.
    pub fn render_digest(
        &self,
        route: &RouteConfig,
        template: &str,
        summary: &DigestSummary,
        mentions: &[String],
        limits: &ContentLimits,
    ) -> Result<RenderedMessage, RenderError> {
        let error = |message: String| RenderError {
            route: route.name.clone(),
            template: template.to_string(),
            message,
        };
        let registry = self.registry(route.msgtype);
        let mut base = serde_json::to_value(summary).expect("a summary serialises");
        base["route"] = Value::from(route.name.as_str());
        base["mentions"] = serde_json::json!(mentions);
        let total = summary.alertnames.len();
        let render = |shown: usize| -> Result<String, RenderError> {
            let mut data = base.clone();
            data["alertnames"] = serde_json::json!(&summary.alertnames[..shown.min(total)]);
            data["omittedAlertnames"] = Value::from(total - shown.min(total));
            let context = handlebars::Context::wraps(&data)
                .map_err(|e| error(super::errors::render(&e, self.sources())))?;
            super::bounded::render(
                registry,
                template,
                &context,
                self.sources(),
                super::bounded::MAX_RENDER_BYTES,
            )
            .map(|text| text.trim().to_string())
            .map_err(error)
        };
        let (content, shown, cut) = match route.msgtype {
            MsgType::Text | MsgType::Markdown | MsgType::MarkdownV2 => {
                let fitted = fit_alerts(total, limits.max_bytes(route.msgtype), render, more_alertnames)?;
                if fitted.text.trim().is_empty() {
                    return Err(error("the digest template rendered an empty message".into()));
                }
                let content = match route.msgtype {
                    MsgType::Text => MessageContent::Text { content: fitted.text },
                    MsgType::Markdown => MessageContent::Markdown { content: fitted.text },
                    _ => MessageContent::MarkdownV2 { content: fitted.text },
                };
                (content, fitted.shown, fitted.cut)
            }
            MsgType::Textcard => {
                if summary.alerts_url.is_empty() {
                    return Err(error(
                        "a textcard digest needs a link: Alertmanager's externalURL is not http(s)".into(),
                    ));
                }
                let more = |omitted: usize| {
                    let plural = if omitted == 1 { "" } else { "s" };
                    escape::textcard(&format!("… and {omitted} more alertname{plural}"))
                };
                let (content, fitted) = card::textcard(total, summary.alerts_url.clone(), more, render)
                    .map_err(|e| match e {
                        card::CardError::Render(e) => e,
                        card::CardError::Invalid(message) => error(message),
                    })?;
                (content, fitted.shown, fitted.cut)
            }
            MsgType::TemplateCard => {
                let fallback = Some(summary.alerts_url.as_str()).filter(|url| !url.is_empty());
                let (card, cut) = card::template_card(&render(total)?, fallback).map_err(error)?;
                (MessageContent::TemplateCard { card }, total, cut)
            }
        };
        Ok(RenderedMessage {
            parts: vec![content],
            shown_alerts: shown,
            total_alerts: summary.firing_count + summary.resolved_count,
            cut,
        })
    }
}

/// A digest for checks and previews: a storm of three alertnames over two severities.
pub fn sample_summary() -> DigestSummary {
    let alertnames = [
        ("KubePodCrashLooping", "critical", 12, 0),
        ("NodeFilesystemAlmostFull", "warning", 30, 4),
        ("TargetDown", "warning", 7, 2),
    ];
    let alertnames: Vec<AlertnameCount> = alertnames
        .into_iter()
        .map(|(alertname, severity, firing, resolved)| AlertnameCount {
            alertname: alertname.to_string(),
            severity: severity.to_string(),
            firing,
            resolved,
        })
        .collect();
    DigestSummary {
        notifications: 49,
        firing_count: 49,
        resolved_count: 6,
        severities: vec![
            SeverityCount {
                severity: "critical".into(),
                firing: 12,
                resolved: 0,
            },
            SeverityCount {
                severity: "warning".into(),
                firing: 37,
                resolved: 6,
            },
        ],
        alerts_url: super::helpers::alerts_url(
            "http://alertmanager.example:9093",
            &["KubePodCrashLooping", "NodeFilesystemAlmostFull", "TargetDown"],
            fit::TEXTCARD_URL_MAX_BYTES,
        ),
        alertnames,
        waited_seconds: 20,
    }
}
