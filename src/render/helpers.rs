//! Template helpers registered on every registry.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use handlebars::{
    handlebars_helper, Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use serde_json::Value;

/// The default output of `{{time …}}`.
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S %Z";

/// `{{time startsAt}}` or `{{time startsAt "%H:%M"}}`: an RFC 3339 time in the configured
/// time zone. An empty or missing time renders as "".
pub struct TimeHelper {
    pub timezone: Tz,
}

impl HelperDef for TimeHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let value = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("time", 0))?
            .value();
        let format = match h.param(1).map(|p| p.value()) {
            None => DEFAULT_TIME_FORMAT,
            Some(Value::String(format)) => format.as_str(),
            Some(_) => {
                return Err(RenderErrorReason::ParamTypeMismatchForName(
                    "time",
                    "format".into(),
                    "string".into(),
                )
                .into())
            }
        };
        let text = match value {
            Value::Null => String::new(),
            Value::String(s) if s.is_empty() => String::new(),
            Value::String(s) => {
                let time: DateTime<Utc> = s.parse().map_err(|e| {
                    RenderErrorReason::Other(format!("time: {s:?} is not an RFC 3339 time: {e}"))
                })?;
                let mut out = String::new();
                use std::fmt::Write;
                write!(out, "{}", time.with_timezone(&self.timezone).format(format))
                    .map_err(|_| RenderErrorReason::Other(format!("time: invalid format {format:?}")))?;
                out
            }
            other => {
                return Err(
                    RenderErrorReason::Other(format!("time: expected a time string, got {other}")).into(),
                )
            }
        };
        Ok(ScopedJson::Derived(Value::String(text)))
    }
}

handlebars_helper!(without: |object: object, *args| {
    // `{{#each (without labels "alertname" "severity")}}`: the object minus the named keys.
    let drop: Vec<&str> = args.iter().skip(1).filter_map(|v| v.as_str()).collect();
    object
        .iter()
        .filter(|(key, _)| !drop.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect::<serde_json::Map<String, Value>>()
});

/// Registers the helpers on a registry.
pub fn register(registry: &mut Handlebars<'static>, timezone: Tz) {
    registry.register_helper("time", Box::new(TimeHelper { timezone }));
    registry.register_helper("without", Box::new(without));
    registry.register_helper("safeUrl", Box::new(safe_url));
}

handlebars_helper!(safe_url: |url: str| {
    // `{{{safeUrl generatorURL}}}`: an http(s) URL made safe inside markdown link
    // parentheses and HTML attributes; anything else becomes "".
    if url.starts_with("http://") || url.starts_with("https://") {
        let mut out = String::with_capacity(url.len());
        for c in url.chars() {
            match c {
                '(' => out.push_str("%28"),
                ')' => out.push_str("%29"),
                '<' => out.push_str("%3C"),
                '>' => out.push_str("%3E"),
                '"' => out.push_str("%22"),
                '\'' => out.push_str("%27"),
                '[' => out.push_str("%5B"),
                ']' => out.push_str("%5D"),
                '`' => out.push_str("%60"),
                '*' => out.push_str("%2A"),
                c if c.is_whitespace() => out.push_str("%20"),
                c => out.push(c),
            }
        }
        out
    } else {
        String::new()
    }
});
