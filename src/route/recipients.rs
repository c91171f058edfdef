//! Recipients derived from the alert: entries of `to`, `fallback_to` and `mention` may be
//! templates over the alert's labels and annotations (`"{{labels.owner}}"`), and a value
//! may name several recipients separated by `|` or `,`.

use handlebars::{no_escape, Handlebars};
use log::warn;
use serde_json::{json, Value};

use crate::config::{Recipients, RouteConfig};
use crate::model::Alert;

/// A recipient entry that is not a valid template.
#[derive(Debug, thiserror::Error)]
#[error("route {route:?}: recipient template {entry:?}: {message}")]
pub struct RecipientTemplateError {
    pub route: String,
    pub entry: String,
    pub message: String,
}

/// Renders recipient entries for one alert.
pub struct RecipientResolver {
    /// Each templated entry is registered under its own text as name.
    registry: Handlebars<'static>,
}

impl RecipientResolver {
    pub fn new(routes: &[RouteConfig]) -> Result<RecipientResolver, RecipientTemplateError> {
        let mut registry = Handlebars::new();
        // Not strict: a missing label gives "", which is dropped (then `fallback_to` applies).
        registry.register_escape_fn(no_escape);
        for route in routes {
            let specs = std::iter::once(&route.to).chain(route.fallback_to.as_ref());
            let entries = specs
                .flat_map(|r| r.users.iter().chain(&r.parties).chain(&r.tags))
                .chain(&route.mention.users);
            for entry in entries.filter(|e| is_template(e)) {
                registry
                    .register_template_string(entry, entry)
                    .map_err(|e| RecipientTemplateError {
                        route: route.name.clone(),
                        entry: entry.clone(),
                        message: e.to_string(),
                    })?;
            }
        }
        Ok(RecipientResolver { registry })
    }

    /// The data a recipient template sees.
    pub fn data(alert: &Alert) -> Value {
        json!({ "labels": alert.labels, "annotations": alert.annotations, "status": alert.status.as_str() })
    }

    /// Recipients of `spec` for the alert whose data is `data`. Party and tag ids are
    /// written as WeCom takes them ([`Recipients::wecom_id`]); those that are not numbers
    /// are dropped (WeCom would refuse them).
    pub fn resolve(&self, spec: &Recipients, data: &Value) -> Recipients {
        let numeric = |kind: &str, ids: Vec<String>| -> Vec<String> {
            let mut out: Vec<String> = Vec::with_capacity(ids.len());
            for id in ids {
                match Recipients::wecom_id(&id) {
                    Some(id) if !out.contains(&id) => out.push(id),
                    Some(_) => {}
                    None => warn!("ignoring {kind} id {id:?}: WeCom {kind} ids are numbers"),
                }
            }
            out
        };
        Recipients {
            users: self.expand(&spec.users, data),
            parties: numeric("party", self.expand(&spec.parties, data)),
            tags: numeric("tag", self.expand(&spec.tags, data)),
        }
    }

    /// Renders and splits entries: `"a|b"`, `"a, b"` → `[a, b]`; empty results vanish.
    pub fn expand(&self, entries: &[String], data: &Value) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for entry in entries {
            let rendered = if is_template(entry) {
                match self.registry.render(entry, data) {
                    Ok(text) => text,
                    Err(e) => {
                        warn!("recipient template {entry:?} failed: {e}");
                        String::new()
                    }
                }
            } else {
                entry.clone()
            };
            for id in rendered
                .split(['|', ','])
                .map(str::trim)
                .filter(|id| !id.is_empty())
            {
                if !out.iter().any(|seen| seen == id) {
                    out.push(id.to_string());
                }
            }
        }
        out
    }
}

/// Whether any recipient entry of the route (`to`, `fallback_to`, `mention.users`) is a
/// template over the alert.
pub fn has_templates(route: &RouteConfig) -> bool {
    std::iter::once(&route.to)
        .chain(route.fallback_to.as_ref())
        .flat_map(|r| r.users.iter().chain(&r.parties).chain(&r.tags))
        .chain(&route.mention.users)
        .any(|e| is_template(e))
}

fn is_template(entry: &str) -> bool {
    entry.contains("{{")
}
