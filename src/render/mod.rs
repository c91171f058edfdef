//! Rendering: alerts → handlebars template → WeCom message content, fitted to WeCom's
//! limits. Built-in templates live in `templates/` and are embedded in the binary; files in
//! `templates.dir` override them by name.

mod bounded;
pub mod card;
mod context;
pub mod digest;
mod errors;
pub mod escape;
pub mod fit;
pub mod helpers;
pub mod message;
pub mod samples;
mod series;

use std::collections::HashMap;
use std::ops::Range;

use handlebars::{DirectorySourceOptionsBuilder, Handlebars, Template};
use rust_embed::RustEmbed;

use crate::config::{MsgType, RouteConfig, TemplateSettings};
use crate::model::{Alert, AlertStatus, WebhookPayload};
use context::MessageContext;
pub use digest::{AlertnameCount, DigestSummary, SeverityCount};
pub use fit::ContentLimits;
pub use message::MessageContent;

/// The name a preview's edited template is compiled under: no built-in template or file
/// of `templates.dir` has it, so its errors cannot quote some other file's lines.
pub const EDITED_TEMPLATE: &str = "<edited template>";
/// Where errors locate an edited template (instead of "built-in template <edited template>").
pub const EDITED_FILE: &str = "edited template";

#[derive(RustEmbed)]
#[folder = "templates/"]
#[include = "*.hbs"]
struct BuiltinTemplates;

/// A template set that failed to load, or a route naming a template that does not exist.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file (or built-in template), line and column, in our words (`errors`).
    #[error("{0}")]
    Syntax(String),
    #[error("cannot load templates from {dir}: {message}")]
    Directory { dir: String, message: String },
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

/// What one notification renders to: usually one message; for text and markdown with more
/// alerts than fit, a numbered series of at most the route's `max_messages`.
#[derive(Debug, Clone)]
pub struct RenderedMessage {
    pub parts: Vec<MessageContent>,
    /// Alerts the messages show in full; the rest are summarised.
    pub shown_alerts: usize,
    pub total_alerts: usize,
    /// Whether fitting left anything out or cut any text.
    pub cut: bool,
}

/// Templates for every msgtype, each registry with the escaping its output needs
/// (markdown and markdown_v2 escape alike and share one).
pub struct Renderer {
    /// `templates.dir`, where the files errors point to are.
    dir: Option<std::path::PathBuf>,
    /// A preview's edited template (`with_template`): its name and source, for its errors
    /// to quote.
    edited: Option<(String, String)>,
    text: Handlebars<'static>,
    markdown: Handlebars<'static>,
    textcard: Handlebars<'static>,
    template_card: Handlebars<'static>,
}

impl Renderer {
    /// Loads the built-in templates and then `settings.dir`; syntax errors are reported here,
    /// not when the first alert arrives.
    pub fn new(settings: &TemplateSettings) -> Result<Renderer, TemplateError> {
        let templates = load_templates(settings)?;
        Ok(Renderer {
            dir: settings.dir.clone(),
            edited: None,
            text: registry(settings, &templates, escape::text),
            markdown: registry(settings, &templates, escape::markdown),
            textcard: registry(settings, &templates, escape::textcard),
            template_card: registry(settings, &templates, escape::json_string),
        })
    }

    /// Checks that every route's template exists.
    pub fn check_routes(&self, routes: &[RouteConfig]) -> Result<(), TemplateError> {
        for route in routes {
            let registry = self.registry(route.msgtype);
            for template in [&route.template, &route.digest_template] {
                if !registry.has_template(template) {
                    let mut available: Vec<&str> = registry
                        .get_templates()
                        .keys()
                        .map(String::as_str)
                        .filter(|name| !name.starts_with("partials/") && !name.starts_with(".."))
                        .collect();
                    available.sort_unstable();
                    return Err(TemplateError::Missing {
                        route: route.name.clone(),
                        template: template.clone(),
                        available: available.join(", "),
                    });
                }
            }
        }
        Ok(())
    }

    /// Renders every route's template against the [`samples`] as that route would get them
    /// ([`samples::for_route`]; and all of them at once), so a template that breaks only on
    /// some alerts fails `check`, not a page. `limits` gives the content limits of each
    /// route's target. An error names the sample.
    pub fn check_with_samples(
        &self,
        routes: &[RouteConfig],
        limits: impl Fn(&RouteConfig) -> ContentLimits,
    ) -> Result<(), RenderError> {
        let payloads = samples::payloads();
        for route in routes {
            let limits = limits(route);
            let samples = samples::for_route(route, &payloads);
            for sample in &samples {
                let alerts: Vec<&Alert> = sample.payload.alerts.iter().collect();
                self.render(route, &sample.payload, &alerts, &[], &limits)
                    .map_err(on_sample(sample.name, sample.about))?;
            }
            if let Some(first) = samples.first() {
                let mixed: Vec<&Alert> = samples.iter().flat_map(|s| &s.payload.alerts).collect();
                self.render(route, &first.payload, &mixed, &["alice".to_string()], &limits)
                    .map_err(on_sample(
                        "mixed",
                        "every sample's alerts in one group, with a mention",
                    ))?;
            }
            self.render_digest(
                route,
                &route.digest_template,
                &digest::sample_summary(),
                &[],
                &limits,
            )
            .map_err(on_sample("storm-digest", "a storm digest of three alertnames"))?;
        }
        Ok(())
    }
}

impl Renderer {
    /// A one-off renderer for `msgtype` only, with `source` compiled as template `name`
    /// into a copy of that msgtype's registry: the same escaping, helpers and partials as
    /// the loaded templates, so an edited template previews as it would render once saved
    /// (the playground). The other msgtypes have no templates in it.
    ///
    /// It may include the loaded partials by name but define none and use no decorators:
    /// handlebars only stops a partial that includes itself directly, so an inline partial
    /// calling itself through another would recurse until the stack overflows, and the
    /// source comes from whoever uses the playground. (The loaded templates were rendered
    /// against the samples before they were accepted.)
    pub fn with_template(
        &self,
        msgtype: MsgType,
        name: &str,
        source: &str,
    ) -> Result<Renderer, TemplateError> {
        let sources = errors::Sources {
            dir: self.dir.as_deref(),
            edited: Some((name, source)),
        };
        let template = Template::compile_with_name(source, name.to_string())
            .map_err(|e| TemplateError::Syntax(errors::syntax(&e, sources)))?;
        if let Some((position, what)) = no_recursion(&template, name) {
            return Err(TemplateError::Syntax(errors::located(
                name,
                sources,
                position,
                &format!("{what} (the playground takes partials of templates.dir by name only: one defined here could include itself without end)"),
            )));
        }
        let mut registry = self.registry(msgtype).clone();
        registry.register_template(name, template);
        let mut renderer = Renderer {
            dir: self.dir.clone(),
            edited: Some((name.to_string(), source.to_string())),
            text: Handlebars::new(),
            markdown: Handlebars::new(),
            textcard: Handlebars::new(),
            template_card: Handlebars::new(),
        };
        *match msgtype {
            MsgType::Text => &mut renderer.text,
            MsgType::Markdown | MsgType::MarkdownV2 => &mut renderer.markdown,
            MsgType::Textcard => &mut renderer.textcard,
            MsgType::TemplateCard => &mut renderer.template_card,
        } = registry;
        Ok(renderer)
    }

    /// The text of template `name`: its file in `templates.dir` (as it is now, which a
    /// change soon reloads), else the built-in one; what the playground's editor starts from.
    pub fn template_source(&self, name: &str) -> Option<String> {
        errors::source(name, self.dir.as_deref())
    }

    /// Where this renderer's errors find the templates they quote.
    fn sources(&self) -> errors::Sources<'_> {
        errors::Sources {
            dir: self.dir.as_deref(),
            edited: self
                .edited
                .as_ref()
                .map(|(name, source)| (name.as_str(), source.as_str())),
        }
    }
}

/// The first decorator (`{{#*inline}}`, `{{*…}}`), partial block or partial not named by
/// a plain name (or naming the template itself) of `template`, with its position.
fn no_recursion(template: &Template, name: &str) -> Option<((usize, usize), &'static str)> {
    use handlebars::template::{Parameter, TemplateElement};
    for (index, element) in template.elements.iter().enumerate() {
        let at = template.mapping.get(index).map_or((1, 1), |m| (m.0, m.1));
        let inner: Vec<&Template> = match element {
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                return Some((at, "decorators and inline partials are not taken here"));
            }
            TemplateElement::PartialBlock(_) => return Some((at, "partial blocks are not taken here")),
            TemplateElement::PartialExpression(partial) => match &partial.name {
                Parameter::Name(partial) if partial != name && !partial.starts_with('@') => Vec::new(),
                _ => return Some((at, "this partial is not named by a plain name of templates.dir")),
            },
            TemplateElement::HelperBlock(helper) => helper.template.iter().chain(&helper.inverse).collect(),
            _ => Vec::new(),
        };
        if let Some(found) = inner.into_iter().find_map(|t| no_recursion(t, name)) {
            return Some(found);
        }
    }
    None
}

/// Adds which sample a check failed on to its error.
fn on_sample(name: &'static str, about: &'static str) -> impl Fn(RenderError) -> RenderError {
    move |mut error| {
        error.message = format!("{} (rendering the sample {name}: {about})", error.message);
        error
    }
}

impl Renderer {
    fn registry(&self, msgtype: MsgType) -> &Handlebars<'static> {
        match msgtype {
            MsgType::Text => &self.text,
            MsgType::Markdown | MsgType::MarkdownV2 => &self.markdown,
            MsgType::Textcard => &self.textcard,
            MsgType::TemplateCard => &self.template_card,
        }
    }

    /// Renders the route's message for `alerts` (mentioning `mentions`, for robots) and
    /// fits it to WeCom's limits: `limits` for text and markdown (they depend on the
    /// target), the card limits for cards.
    pub fn render(
        &self,
        route: &RouteConfig,
        payload: &WebhookPayload,
        alerts: &[&Alert],
        mentions: &[String],
        limits: &ContentLimits,
    ) -> Result<RenderedMessage, RenderError> {
        let error = |message: String| RenderError {
            route: route.name.clone(),
            template: route.template.clone(),
            message,
        };
        let mut context = MessageContext::new(route, payload, alerts, mentions);
        let registry = self.registry(route.msgtype);
        let mut render = |range: Range<usize>, compact: bool| -> Result<String, RenderError> {
            context.set_compact(compact);
            context.render(range, |context| {
                // A prepared context: `render(&data)` would deep-copy the data first.
                bounded::render(
                    registry,
                    &route.template,
                    context,
                    self.sources(),
                    bounded::MAX_RENDER_BYTES,
                )
                .map_err(error)
            })
        };
        let total = alerts.len();
        match route.msgtype {
            MsgType::Text | MsgType::Markdown | MsgType::MarkdownV2 => {
                let max_bytes = limits.max_bytes(route.msgtype);
                let mut split = |compact: bool| {
                    series::split(total, max_bytes, route.max_messages, |range| {
                        render(range, compact).map(|text| text.trim().to_string())
                    })
                };
                // The full form when it fits one message; else one line per alert, which
                // shows many more alerts in fewer messages (each one a notification).
                let mut series = split(false)?;
                if series.cut || series.texts.len() > 1 {
                    let compact = split(true)?;
                    if compact.shown >= series.shown {
                        series = compact;
                    }
                }
                if series.texts.iter().any(|text| text.trim().is_empty()) {
                    return Err(error("the template rendered an empty message".into()));
                }
                let parts = series
                    .texts
                    .into_iter()
                    .map(|content| match route.msgtype {
                        MsgType::Text => MessageContent::Text { content },
                        MsgType::Markdown => MessageContent::Markdown { content },
                        _ => MessageContent::MarkdownV2 { content },
                    })
                    .collect();
                Ok(RenderedMessage {
                    parts,
                    shown_alerts: series.shown,
                    total_alerts: total,
                    cut: series.cut,
                })
            }
            MsgType::Textcard => {
                let url = card::textcard_link(alerts, &payload.external_url).ok_or_else(|| {
                    error(
                        "textcard needs an http(s) URL: the alerts have no generatorURL and \
                         Alertmanager's externalURL is not http(s)"
                            .into(),
                    )
                })?;
                let card_error = |e| match e {
                    card::CardError::Render(e) => e,
                    card::CardError::Invalid(message) => error(message),
                };
                let mut card = |compact: bool| {
                    card::textcard(total, url.clone(), card::more_alerts, |k| render(0..k, compact))
                        .map_err(card_error)
                };
                // As for text: one line per alert when the full form leaves alerts out.
                let (mut content, mut fitted) = card(false)?;
                if fitted.shown < total {
                    let (compact_content, compact_fitted) = card(true)?;
                    if compact_fitted.shown >= fitted.shown {
                        (content, fitted) = (compact_content, compact_fitted);
                    }
                }
                Ok(RenderedMessage {
                    parts: vec![content],
                    shown_alerts: fitted.shown,
                    total_alerts: total,
                    cut: fitted.cut,
                })
            }
            MsgType::TemplateCard => {
                let fallback = card::link(alerts, &payload.external_url);
                let (mut card, cut, shown) =
                    card::fitted_template_card(total, fallback.as_deref(), |k| render(0..k, false)).map_err(
                        |e| match e {
                            card::CardError::Render(e) => e,
                            card::CardError::Invalid(message) => error(message),
                        },
                    )?;
                // Buttons act on firing alerts; a resolved card has nothing left to act on.
                if let Some(buttons) = &route.buttons {
                    let firing = alerts.iter().filter(|a| a.status == AlertStatus::Firing).count();
                    let actions = card::ButtonAction::of(buttons, firing);
                    if firing > 0 && !actions.is_empty() {
                        card::with_buttons(&mut card, &actions);
                    }
                }
                Ok(RenderedMessage {
                    parts: vec![MessageContent::TemplateCard { card }],
                    shown_alerts: shown,
                    total_alerts: total,
                    cut,
                })
            }
        }
    }
}

/// The built-in templates, then `settings.dir` over them: read and parsed once, shared by
/// every registry.
fn load_templates(settings: &TemplateSettings) -> Result<HashMap<String, Template>, TemplateError> {
    let mut loader = Handlebars::new();
    loader
        .register_embed_templates_with_extension::<BuiltinTemplates>(".hbs")
        .map_err(|e| TemplateError::Syntax(errors::syntax(&e, errors::Sources::default())))?;
    if let Some(dir) = &settings.dir {
        let options = DirectorySourceOptionsBuilder::default()
            .tpl_extension(".hbs")
            .build()
            .expect("all options have defaults");
        loader.register_templates_directory(dir, options).map_err(|e| {
            if e.name().is_some() || e.pos().is_some() {
                TemplateError::Syntax(errors::syntax(
                    &e,
                    errors::Sources {
                        dir: Some(dir),
                        edited: None,
                    },
                ))
            } else {
                TemplateError::Directory {
                    dir: dir.display().to_string(),
                    message: e.to_string(),
                }
            }
        })?;
    }
    Ok(loader.get_templates().clone())
}

/// A strict registry with the helpers, `templates` and the escaping one msgtype needs.
fn registry(
    settings: &TemplateSettings,
    templates: &HashMap<String, Template>,
    escape: fn(&str) -> String,
) -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(escape);
    helpers::register(&mut registry, settings.timezone.clone());
    for (name, template) in templates {
        registry.register_template(name, template.clone());
    }
    registry
}

#[cfg(test)]
mod tests;
