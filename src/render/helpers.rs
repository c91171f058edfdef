//! Template helpers registered on every registry.
//!
//! | helper | example |
//! |---|---|
//! | `time` | `{{time startsAt}}`, `{{time endsAt "%H:%M" tz="UTC"}}` |
//! | `duration` | `firing for {{duration startsAt}}`, `resolved after {{duration startsAt endsAt}}` |
//! | `truncate`, `truncateBytes` | `{{truncate annotations.description 80}}`, `{{truncateBytes x 120}}` |
//! | `join`, `sort`, `labelValues` | `{{join (sort (labelValues alerts "instance")) ", "}}` |
//! | `upper`, `lower` | `{{upper labels.severity}}` |
//! | `default` | `{{default labels.severity "unknown"}}` |
//! | `severityColor`, `statusColor` | `<font color="{{severityColor labels.severity}}">` |
//! | `silenceURL`, `alertmanagerURL` | `[silence]({{{silenceURL labels}}})`, `{{{alertmanagerURL}}}` |
//! | `without` | `{{#each (without labels "alertname")}}{{@key}}={{this}} {{/each}}` |
//! | `safeUrl` | `[graph]({{{safeUrl generatorURL}}})` |
//! | `markdownEscape` | `{{{markdownEscape annotations.summary}}}` |
//!
//! Helpers that take a field as text (`truncate`, `upper`, `markdownEscape`, …) print
//! numbers and booleans as they are, treat `null` as `""`, and reject lists and objects. In
//! strict mode a field that does not exist is an error for them, as it is in `{{x}}`; only
//! `default`, `severityColor`, `time` and `duration` accept a missing field.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::format::{Fixed, Item, StrftimeItems};
use chrono::{DateTime, Datelike, FixedOffset, TimeDelta, Utc};
use handlebars::{
    handlebars_helper, Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use jiff::tz::TimeZone;
use serde_json::{Map, Value};

/// The default output of `{{time …}}`.
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S %Z";

/// Where `{{duration …}}` gets "now" from.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Registers the helpers on a registry, with durations measured against the system clock.
pub fn register(registry: &mut Handlebars<'static>, timezone: TimeZone) {
    register_with_clock(registry, timezone, Arc::new(Utc::now));
}

/// [`register`] with "now" taken from `clock` (for tests and reproducible previews).
pub fn register_with_clock(registry: &mut Handlebars<'static>, timezone: TimeZone, clock: Clock) {
    registry.register_helper("time", Box::new(TimeHelper { timezone }));
    registry.register_helper("duration", Box::new(DurationHelper { clock }));
    registry.register_helper("truncate", Box::new(truncate));
    registry.register_helper("truncateBytes", Box::new(truncateBytes));
    registry.register_helper("join", Box::new(join));
    registry.register_helper("sort", Box::new(sort));
    registry.register_helper("labelValues", Box::new(labelValues));
    registry.register_helper("upper", Box::new(upper));
    registry.register_helper("lower", Box::new(lower));
    registry.register_helper("default", Box::new(default));
    registry.register_helper("severityColor", Box::new(severityColor));
    registry.register_helper("statusColor", Box::new(statusColor));
    registry.register_helper("silenceURL", Box::new(SilenceUrlHelper));
    registry.register_helper("alertmanagerURL", Box::new(AlertmanagerUrlHelper));
    registry.register_helper("without", Box::new(without));
    registry.register_helper("safeUrl", Box::new(safeUrl));
    registry.register_helper("markdownEscape", Box::new(markdownEscape));
}

fn error(message: String) -> RenderError {
    RenderErrorReason::Other(message).into()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A scalar as text: strings as they are, numbers and booleans printed, `null` as "".
fn scalar_text<'a>(helper: &str, value: &'a Value) -> Result<Cow<'a, str>, RenderError> {
    match value {
        Value::String(s) => Ok(Cow::Borrowed(s)),
        Value::Null => Ok(Cow::Borrowed("")),
        Value::Bool(b) => Ok(Cow::Owned(b.to_string())),
        Value::Number(n) => Ok(Cow::Owned(n.to_string())),
        other => Err(error(format!("{helper}: expected text, got {}", kind(other)))),
    }
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// The root context's `externalURL`, if it is an http(s) URL.
fn external_url(ctx: &Context) -> Option<&str> {
    ctx.data()
        .get("externalURL")
        .and_then(Value::as_str)
        .filter(|url| is_http(url))
}

// ---------------------------------------------------------------------------------------
// time and duration

/// An RFC 3339 time; `None` for null, missing, "" and Go's zero time (year 1).
fn parse_time(helper: &str, value: &Value) -> Result<Option<DateTime<Utc>>, RenderError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => {
            let time: DateTime<Utc> = s
                .parse()
                .map_err(|e| error(format!("{helper}: {s:?} is not an RFC 3339 time: {e}")))?;
            Ok((time.year() > 1).then_some(time))
        }
        other => Err(error(format!(
            "{helper}: expected an RFC 3339 time string, got {}",
            kind(other)
        ))),
    }
}

/// `{{time startsAt}}`, `{{time startsAt "%H:%M"}}`, `{{time endsAt tz="Europe/Berlin"}}`:
/// an RFC 3339 time in the configured time zone, or in the IANA zone given as `tz`, with a
/// chrono `strftime` format (default [`DEFAULT_TIME_FORMAT`]). An empty or missing time
/// renders as ""; an unknown zone or a bad format is an error.
pub struct TimeHelper {
    pub timezone: TimeZone,
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
            Some(other) => {
                return Err(error(format!(
                    "time: the format must be a string, got {}",
                    kind(other)
                )))
            }
        };
        let mut zone = None;
        for (key, option) in h.hash() {
            match (*key, option.value()) {
                ("tz", Value::String(name)) => {
                    zone = Some(
                        TimeZone::get(name)
                            .map_err(|_| error(format!("time: unknown time zone {name:?}")))?,
                    );
                }
                ("tz", other) => {
                    return Err(error(format!(
                        "time: tz must be a time zone name such as \"Asia/Shanghai\", got {}",
                        kind(other)
                    )))
                }
                (key, _) => return Err(error(format!("time: unknown option {key:?} (known: tz)"))),
            }
        }
        let Some(time) = parse_time("time", value)? else {
            return Ok(ScopedJson::Derived(Value::String(String::new())));
        };
        let out = format_in_zone(time, zone.as_ref().unwrap_or(&self.timezone), format)
            .ok_or_else(|| error(format!("time: invalid format {format:?}")))?;
        Ok(ScopedJson::Derived(Value::String(out)))
    }
}

/// `time` in `zone`, formatted with a chrono `strftime` format; `None` for a bad format.
/// The zone's rules come from jiff's bundled copy of the IANA database (compact TZif data,
/// unlike chrono-tz's tables, which cost about 1 MiB of memory in every process); chrono
/// formats the local time, with `%Z` as the zone's abbreviation (CST, CET, +04).
pub fn format_in_zone(time: DateTime<Utc>, zone: &TimeZone, format: &str) -> Option<String> {
    let instant = jiff::Timestamp::new(time.timestamp(), time.timestamp_subsec_nanos() as i32).ok()?;
    let info = zone.to_offset_info(instant);
    let offset = FixedOffset::east_opt(info.offset().seconds())?;
    let abbreviation = info.abbreviation();
    let items = StrftimeItems::new(format).map(|item| match item {
        Item::Fixed(Fixed::TimezoneName) => Item::Literal(abbreviation),
        item => item,
    });
    let mut out = String::new();
    write!(out, "{}", time.with_timezone(&offset).format_with_items(items)).ok()?;
    Some(out)
}

/// A duration as its two most significant units: `3h12m`, `45s`, `2d3h`, `12m5s`, `1h`
/// (units: d, h, m, s; rounded down; "0s" for zero or negative).
pub fn format_duration(duration: TimeDelta) -> String {
    const UNITS: [(i64, char); 4] = [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')];
    let seconds = duration.num_seconds();
    if seconds <= 0 {
        return "0s".to_string();
    }
    let Some(first) = UNITS.iter().position(|(size, _)| seconds >= *size) else {
        return "0s".to_string();
    };
    let (size, unit) = UNITS[first];
    let mut out = format!("{}{unit}", seconds / size);
    if let Some(&(next_size, next_unit)) = UNITS.get(first + 1) {
        let next = seconds % size / next_size;
        if next > 0 {
            let _ = write!(out, "{next}{next_unit}");
        }
    }
    out
}

/// `firing for {{duration startsAt}}` (until now), `resolved after {{duration startsAt endsAt}}`
/// (between the two; an empty end means now, so the same expression serves firing and
/// resolved alerts). Formatted by [`format_duration`]: `3h12m`, `45s`, `2d3h`. An empty or
/// missing start renders as "", and so does an end that is not after the start:
/// Alertmanager sends `endsAt` = `startsAt` for some resolved alerts, and "after 0s" would
/// be false; `{{#if (duration startsAt endsAt)}}` tells the two apart.
pub struct DurationHelper {
    pub clock: Clock,
}

impl HelperDef for DurationHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let start = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("duration", 0))?
            .value();
        let Some(start) = parse_time("duration", start)? else {
            return Ok(ScopedJson::Derived(Value::String(String::new())));
        };
        let end = match h.param(1) {
            Some(end) => parse_time("duration", end.value())?,
            None => None,
        };
        let text = match end {
            Some(end) if end <= start => String::new(),
            end => format_duration(end.unwrap_or_else(|| (self.clock)()) - start),
        };
        Ok(ScopedJson::Derived(Value::String(text)))
    }
}

// ---------------------------------------------------------------------------------------
// text

const ELLIPSIS: &str = "…";

/// `{{truncate annotations.description 80}}`: at most `max` characters; when cut, the last
/// of them is "…".
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(), // fits
        Some(_) if max == 0 => String::new(),
        Some(_) => {
            let end = text.char_indices().nth(max - 1).map_or(text.len(), |(i, _)| i);
            format!("{}{ELLIPSIS}", &text[..end])
        }
    }
}

/// `{{truncateBytes annotations.description 120}}`: at most `max` UTF-8 bytes, cut on a
/// character boundary; when cut, ends with "…" (3 bytes) if that fits in `max`.
pub fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let (budget, ellipsis) = match max.checked_sub(ELLIPSIS.len()) {
        Some(budget) => (budget, ELLIPSIS),
        None => (max, ""),
    };
    let mut end = budget;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &text[..end])
}

fn limit(max: u64) -> usize {
    usize::try_from(max).unwrap_or(usize::MAX)
}

handlebars_helper!(truncate: |text: Json, max: u64| {
    truncate_chars(&scalar_text("truncate", text)?, limit(max))
});

handlebars_helper!(truncateBytes: |text: Json, max: u64| {
    truncate_bytes(&scalar_text("truncateBytes", text)?, limit(max))
});

/// `{{upper labels.severity}}` → `CRITICAL`.
pub fn upper_text(text: &str) -> String {
    text.to_uppercase()
}

handlebars_helper!(upper: |text: Json| upper_text(&scalar_text("upper", text)?));

/// `{{lower labels.env}}` → `prod`.
pub fn lower_text(text: &str) -> String {
    text.to_lowercase()
}

handlebars_helper!(lower: |text: Json| lower_text(&scalar_text("lower", text)?));

/// `{{{markdownEscape annotations.summary}}}`: the markdown escaping of `{{x}}` in the
/// markdown msgtypes ([`super::escape::markdown`]), for text templates or triple braces.
pub fn markdown_escape(text: &str) -> String {
    super::escape::markdown(text)
}

handlebars_helper!(markdownEscape: |text: Json| {
    markdown_escape(&scalar_text("markdownEscape", text)?)
});

/// Whether `default` replaces a value: missing, null, "", [] and {} (not `false` or 0).
fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// `{{default labels.severity "unknown"}}`: the value unless it is missing (no error in
/// strict mode), null or empty, else the fallback. With more arguments, the first non-empty
/// one: `{{default annotations.summary annotations.description "no summary"}}`.
pub fn first_non_blank<'a>(values: &[&'a Value]) -> Option<&'a Value> {
    values
        .iter()
        .copied()
        .find(|v| !is_blank(v))
        .or_else(|| values.last().copied())
}

handlebars_helper!(default: |*args| {
    if args.len() < 2 {
        return Err(error(
            "default: needs a value and a fallback, e.g. {{default labels.severity \"unknown\"}}".into(),
        ));
    }
    first_non_blank(&args).cloned().unwrap_or(Value::Null)
});

// ---------------------------------------------------------------------------------------
// lists

/// `{{join list ", "}}`: the items (strings, numbers, booleans; null as "") joined with the
/// separator (default ", ").
pub fn join_values(list: &[Value], separator: &str) -> Result<String, RenderError> {
    let mut out = String::new();
    for (i, item) in list.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push_str(&scalar_text("join", item)?);
    }
    Ok(out)
}

handlebars_helper!(join: |list: array, *args| {
    let separator = match args.get(1) {
        None => ", ",
        Some(Value::String(separator)) => separator.as_str(),
        Some(other) => {
            return Err(error(format!("join: the separator must be a string, got {}", kind(other))))
        }
    };
    join_values(list, separator)?
});

/// `{{#each (sort list)}}`, `{{join (sort (labelValues alerts "instance")) ", "}}`: a sorted
/// copy of a list of strings and numbers (numbers first, by value; strings by code point).
pub fn sorted(list: &[Value]) -> Result<Vec<Value>, RenderError> {
    if let Some(other) = list
        .iter()
        .find(|v| !matches!(v, Value::String(_) | Value::Number(_)))
    {
        return Err(error(format!(
            "sort: expected a list of strings or numbers, found {}",
            kind(other)
        )));
    }
    let mut list = list.to_vec();
    list.sort_by(|a, b| match (a, b) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
        (Value::Number(_), _) => Ordering::Less,
        (_, Value::Number(_)) => Ordering::Greater,
        (a, b) => a.as_str().cmp(&b.as_str()),
    });
    Ok(list)
}

handlebars_helper!(sort: |list: array| sorted(list)?);

/// `{{labelValues alerts "instance"}}`: the distinct values of a label across alerts (or
/// `firing`, `resolved`), in first-seen order; alerts without the label (or with an empty
/// value, which Prometheus treats the same) are skipped.
pub fn label_values(alerts: &[Value], name: &str) -> Result<Vec<Value>, RenderError> {
    let mut seen = HashSet::new();
    let mut values = Vec::new();
    for alert in alerts {
        let Some(labels) = alert.get("labels").and_then(Value::as_object) else {
            return Err(error(format!(
                "labelValues: expected a list of alerts (each with labels), found {}",
                kind(alert)
            )));
        };
        let Some(value) = labels.get(name) else {
            continue;
        };
        let value = scalar_text("labelValues", value)?;
        if !value.is_empty() && seen.insert(value.to_string()) {
            values.push(Value::String(value.into_owned()));
        }
    }
    Ok(values)
}

handlebars_helper!(labelValues: |alerts: array, name: str| label_values(alerts, name)?);

handlebars_helper!(without: |object: object, *args| {
    // `{{#each (without labels "alertname" "severity")}}`: the object minus the named keys;
    // a label set among the names drops its keys, so `(without labels @root.commonLabels)`
    // leaves what sets one alert of a group apart.
    let drop: Vec<&str> = args
        .iter()
        .skip(1)
        .flat_map(|v| match v {
            Value::String(name) => vec![name.as_str()],
            Value::Object(set) => set.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    object
        .iter()
        .filter(|(key, _)| !drop.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect::<Map<String, Value>>()
});

// ---------------------------------------------------------------------------------------
// colours

/// `<font color="{{severityColor labels.severity}}">`: the WeCom markdown colour for a
/// severity, case-insensitive: critical, error, high, page, warning → `warning`
/// (orange-red); anything else, including a missing label → `comment` (grey).
pub fn severity_color(severity: &str) -> &'static str {
    match severity.to_ascii_lowercase().as_str() {
        "critical" | "error" | "high" | "page" | "warning" => "warning",
        _ => "comment",
    }
}

handlebars_helper!(severityColor: |*args| {
    static NULL: Value = Value::Null;
    let severity = args.first().copied().unwrap_or(&NULL);
    severity_color(&scalar_text("severityColor", severity)?)
});

/// `<font color="{{statusColor status}}">`: `firing` → `warning` (orange-red), `resolved` →
/// `info` (green), anything else → `comment` (grey).
pub fn status_color(status: &str) -> &'static str {
    match status.to_ascii_lowercase().as_str() {
        "firing" => "warning",
        "resolved" => "info",
        _ => "comment",
    }
}

handlebars_helper!(statusColor: |status: str| status_color(status));

// ---------------------------------------------------------------------------------------
// links

/// `[graph]({{{safeUrl generatorURL}}})`: an http(s) URL with the characters that would end
/// a markdown link or an HTML attribute percent-encoded; anything else becomes "".
pub fn safe_url(url: &str) -> String {
    if !is_http(url) {
        return String::new();
    }
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
            // A backslash or a control character would break the JSON of a card (its
            // templates write links in triple braces) and means nothing in a URL.
            '\\' => out.push_str("%5C"),
            c if c.is_whitespace() => out.push_str("%20"),
            c if c.is_control() => {
                let mut bytes = [0; 4];
                for byte in c.encode_utf8(&mut bytes).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

handlebars_helper!(safeUrl: |url: str| safe_url(url));

/// Percent-encodes like JavaScript's `encodeURIComponent`, and also `'`, `(`, `)` and `*`
/// so the result is safe inside markdown links and HTML attributes (decoding gives the same
/// text).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'!' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The link Alertmanager's UI gives an alert's "Silence" button: the new-silence form with
/// one `name="value"` matcher per label (sorted by name, values quoted as JSON strings,
/// which is how Alertmanager quotes matcher values: `\"`, `\\`, `\n`).
pub fn silence_url(external_url: &str, labels: &Map<String, Value>) -> Result<String, RenderError> {
    Ok(format!(
        "{}/#/silences/new?filter={}",
        safe_url(external_url.trim_end_matches('/')),
        percent_encode(&matchers(labels)?)
    ))
}

/// Alertmanager's alerts page filtered to the label set's matchers (as in [`silence_url`]):
/// there each alert has its graph ("Source") and a Silence button, so one link serves
/// cards that carry one link only. "" when `external_url` is not http(s).
pub fn alerts_page_url(external_url: &str, labels: &Map<String, Value>) -> Result<String, RenderError> {
    let base = safe_url(external_url.trim_end_matches('/'));
    if base.is_empty() {
        return Ok(base);
    }
    Ok(format!(
        "{base}/#/alerts?filter={}",
        percent_encode(&matchers(labels)?)
    ))
}

/// `{name="value", …}`: one matcher per label, sorted by name, values quoted as JSON
/// strings (how Alertmanager quotes matcher values: `\"`, `\\`, `\n`); "" for no labels.
fn matchers(labels: &Map<String, Value>) -> Result<String, RenderError> {
    let mut pairs: Vec<(&String, &Value)> = labels.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut filter = String::new();
    for (i, (name, value)) in pairs.into_iter().enumerate() {
        let value = scalar_text("silenceURL", value)?;
        let quoted = serde_json::to_string(value.as_ref()).expect("a string serialises");
        let _ = write!(filter, "{}{name}={quoted}", if i > 0 { ", " } else { "" });
    }
    if !filter.is_empty() {
        filter = format!("{{{filter}}}");
    }
    Ok(filter)
}

/// Alertmanager's alerts page filtered to `alertnames` (`{alertname=~"a|b"}`, names
/// regex-quoted), or the unfiltered page when the filter would make the link longer than
/// `max_bytes`; "" when `external_url` is not http(s).
pub fn alerts_url(external_url: &str, alertnames: &[&str], max_bytes: usize) -> String {
    let base = safe_url(external_url.trim_end_matches('/'));
    if base.is_empty() {
        return base;
    }
    let page = format!("{base}/#/alerts");
    if alertnames.is_empty() {
        return page;
    }
    let alternatives: Vec<String> = alertnames.iter().map(|name| regex_quote(name)).collect();
    let filter = format!(
        "{{alertname=~{}}}",
        serde_json::to_string(&alternatives.join("|")).expect("a string serialises")
    );
    let filtered = format!("{page}?filter={}", percent_encode(&filter));
    if filtered.len() <= max_bytes {
        filtered
    } else {
        page
    }
}

/// Quotes regex metacharacters, as Alertmanager's matchers take RE2 syntax.
fn regex_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `[silence]({{{silenceURL labels}}})`: Alertmanager's new-silence form pre-filled with the
/// label set's matchers (see [`silence_url`]), built on the root `externalURL`; "" when
/// `externalURL` is not http(s). Narrow it with `(without labels "pod")`. Use triple braces:
/// the markdown escaping of `{{…}}` would break the `#`.
pub struct SilenceUrlHelper;

impl HelperDef for SilenceUrlHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("silenceURL", 0))?;
        let labels = match param.value() {
            Value::Object(labels) if !param.is_value_missing() => labels,
            other => {
                let what = if param.is_value_missing() {
                    format!(
                        "{:?}, which does not exist",
                        param.relative_path().map_or("", String::as_str)
                    )
                } else {
                    kind(other).to_string()
                };
                return Err(error(format!(
                    "silenceURL: expected a label set such as labels or commonLabels, got {what}"
                )));
            }
        };
        let url = match external_url(ctx) {
            Some(base) => silence_url(base, labels)?,
            None => String::new(),
        };
        Ok(ScopedJson::Derived(Value::String(url)))
    }
}

/// `{{{alertmanagerURL}}}`: the root `externalURL` if it is http(s) (made safe as by
/// `safeUrl`), else "", e.g. for a card's `card_action`.
pub struct AlertmanagerUrlHelper;

impl HelperDef for AlertmanagerUrlHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        _: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let url = external_url(ctx).map(safe_url).unwrap_or_default();
        Ok(ScopedJson::Derived(Value::String(url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    /// The time `{{duration …}}` sees as now: 2026-11-25 18:00:00 UTC.
    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 0).unwrap()
    }

    /// A strict registry like the real ones, in Asia/Shanghai, without escaping unless asked.
    fn registry() -> Handlebars<'static> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        register_with_clock(
            &mut registry,
            jiff::tz::TimeZone::get("Asia/Shanghai").unwrap(),
            Arc::new(now),
        );
        registry
    }

    fn render(template: &str, data: &Value) -> Result<String, RenderError> {
        registry().render_template(template, data)
    }

    fn ok(template: &str, data: &Value) -> String {
        render(template, data).unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    fn err(template: &str, data: &Value) -> String {
        match render(template, data) {
            Ok(out) => panic!("{template} rendered {out:?}, expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn alert() -> Value {
        json!({
            "status": "firing",
            "labels": {"alertname": "DiskFull", "instance": "db-1:9100", "severity": "critical"},
            "annotations": {"summary": "disk full"},
            "startsAt": "2026-11-25T14:47:30Z",
            "endsAt": "",
            "generatorURL": "http://prom:9090/graph?g0.expr=up",
            "fingerprint": "abc",
        })
    }

    #[test]
    fn register_registers_every_helper() {
        let mut registry = Handlebars::new();
        register(&mut registry, jiff::tz::TimeZone::UTC);
        for name in [
            "time",
            "duration",
            "truncate",
            "truncateBytes",
            "join",
            "sort",
            "labelValues",
            "upper",
            "lower",
            "default",
            "severityColor",
            "statusColor",
            "silenceURL",
            "alertmanagerURL",
            "without",
            "safeUrl",
            "markdownEscape",
        ] {
            let result = registry.render_template(&format!("{{{{#if ({name})}}}}{{{{/if}}}}"), &json!({}));
            if let Err(e) = result {
                assert!(!e.to_string().contains("Helper not found"), "{name}: {e}");
            }
        }
        let e = registry
            .render_template("{{#if (nonesuch)}}{{/if}}", &json!({}))
            .unwrap_err();
        assert!(e.to_string().contains("Helper not found"), "{e}");
        // The system clock: an alert from 2000 has been firing for days.
        let out = registry
            .render_template("{{duration t}}", &json!({"t": "2000-01-01T00:00:00Z"}))
            .unwrap();
        assert!(out.ends_with('h') || out.ends_with('d'), "{out}");
    }

    #[test]
    fn time_in_the_configured_zone_with_formats() {
        let data = alert();
        assert_eq!(ok("{{time startsAt}}", &data), "2026-11-25 22:47:30 CST");
        assert_eq!(ok("{{time startsAt \"%H:%M\"}}", &data), "22:47");
        assert_eq!(ok("{{time endsAt}}", &data), "");
        assert_eq!(ok("{{time endsAt \"%H:%M\"}}", &data), "");
        // A missing field is "no time", not a strict-mode error; so is Go's zero time.
        assert_eq!(ok("[{{time labels.nothing}}]", &data), "[]");
        assert_eq!(ok("[{{time t}}]", &json!({"t": "0001-01-01T00:00:00Z"})), "[]");
    }

    #[test]
    fn time_zone_override_per_call() {
        let data = alert();
        assert_eq!(
            ok("{{time startsAt tz=\"UTC\"}}", &data),
            "2026-11-25 14:47:30 UTC"
        );
        assert_eq!(
            ok("{{time startsAt \"%H:%M %Z\" tz=\"Europe/Berlin\"}}", &data),
            "15:47 CET"
        );
        // The override does not stick.
        assert_eq!(ok("{{time startsAt \"%H:%M\"}}", &data), "22:47");
    }

    #[test]
    fn zones_follow_daylight_saving_and_their_own_abbreviations() {
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        let zone = |name: &str| jiff::tz::TimeZone::get(name).unwrap();
        let format = "%Y-%m-%d %H:%M:%S%.3f %Z %z";
        let table = [
            (
                "2026-07-01T12:00:00.5Z",
                "Europe/Berlin",
                "2026-07-01 14:00:00.500 CEST +0200",
            ),
            (
                "2026-12-01T12:00:00Z",
                "Europe/Berlin",
                "2026-12-01 13:00:00.000 CET +0100",
            ),
            // 2026-03-08 07:30 UTC is 03:30 EDT, just after New York's spring-forward.
            (
                "2026-03-08T07:30:00Z",
                "America/New_York",
                "2026-03-08 03:30:00.000 EDT -0400",
            ),
            (
                "2026-03-08T06:30:00Z",
                "America/New_York",
                "2026-03-08 01:30:00.000 EST -0500",
            ),
            (
                "2026-11-25T14:47:30Z",
                "Asia/Kolkata",
                "2026-11-25 20:17:30.000 IST +0530",
            ),
            (
                "2026-11-25T14:47:30Z",
                "Asia/Dubai",
                "2026-11-25 18:47:30.000 +04 +0400",
            ),
            ("2026-11-25T14:47:30Z", "UTC", "2026-11-25 14:47:30.000 UTC +0000"),
        ];
        for (time, name, expected) in table {
            assert_eq!(
                format_in_zone(at(time), &zone(name), format).as_deref(),
                Some(expected),
                "{time} in {name}"
            );
        }
        // A literal "%Z" stays literal; a bad format is None.
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(
            format_in_zone(at("2026-11-25T14:47:30Z"), &utc, "%%Z=%Z").as_deref(),
            Some("%Z=UTC")
        );
        assert_eq!(format_in_zone(at("2026-11-25T14:47:30Z"), &utc, "%Q"), None);
    }

    #[test]
    fn time_errors_name_the_problem() {
        let data = alert();
        let e = err("{{time startsAt tz=\"Mars/Olympus\"}}", &data);
        assert!(e.contains("Mars/Olympus") && e.contains("line 1"), "{e}");
        let e = err("{{time startsAt tz=labels.nothing}}", &data);
        assert!(e.contains("tz"), "{e}");
        let e = err("{{time startsAt zone=\"UTC\"}}", &data);
        assert!(e.contains("zone"), "{e}");
        let e = err("{{time startsAt \"%Q\"}}", &data);
        assert!(e.contains("%Q"), "{e}");
        let e = err("{{time annotations.summary}}", &data);
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn duration_formatting() {
        let table = [
            (-5, "0s"),
            (0, "0s"),
            (1, "1s"),
            (45, "45s"),
            (60, "1m"),
            (725, "12m5s"),
            (3_599, "59m59s"),
            (3_600, "1h"),
            (3_605, "1h"), // seconds are the third unit
            (11_520, "3h12m"),
            (11_579, "3h12m"),
            (86_400, "1d"),
            (2 * 86_400 + 3 * 3_600 + 59 * 60, "2d3h"),
            (2 * 86_400 + 30 * 60, "2d"),
            (400 * 86_400 + 3_600, "400d1h"),
        ];
        for (seconds, expected) in table {
            assert_eq!(
                format_duration(TimeDelta::seconds(seconds)),
                expected,
                "{seconds}s"
            );
        }
        assert_eq!(format_duration(TimeDelta::milliseconds(999)), "0s");
    }

    #[test]
    fn duration_until_now_or_until_the_end() {
        let data = json!({
            "firing": {"startsAt": "2026-11-25T14:47:30Z", "endsAt": ""},
            "resolved": {"startsAt": "2026-11-25T14:47:30+08:00", "endsAt": "2026-11-25T07:00:00.5Z"},
        });
        assert_eq!(ok("{{duration firing.startsAt}}", &data), "3h12m");
        assert_eq!(ok("{{duration firing.startsAt firing.endsAt}}", &data), "3h12m");
        assert_eq!(
            ok("{{duration resolved.startsAt resolved.endsAt}}", &data),
            "12m30s"
        );
        assert_eq!(ok("[{{duration firing.nothing}}]", &data), "[]");
        // Alertmanager may send endsAt = startsAt (or earlier): no "after 0s".
        let edge = json!({
            "same": {"startsAt": "2026-11-25T17:46:48Z", "endsAt": "2026-11-25T17:46:48Z"},
            "before": {"startsAt": "2026-11-25T17:46:48Z", "endsAt": "2026-11-25T17:00:00Z"},
        });
        assert_eq!(ok("[{{duration same.startsAt same.endsAt}}]", &edge), "[]");
        assert_eq!(ok("[{{duration before.startsAt before.endsAt}}]", &edge), "[]");
        let e = err("{{duration firing.startsAt \"soon\"}}", &data);
        assert!(e.contains("soon"), "{e}");
    }

    #[test]
    fn truncate_by_characters() {
        let data = json!({"zh": "数据库连接数过高，请检查", "en": "hello", "n": 12345});
        assert_eq!(ok("{{truncate zh 5}}", &data), "数据库连…");
        assert_eq!(ok("{{truncate zh 12}}", &data), "数据库连接数过高，请检查");
        assert_eq!(ok("{{truncate zh 11}}", &data), "数据库连接数过高，请…");
        assert_eq!(ok("{{truncate en 1}}", &data), "…");
        assert_eq!(ok("[{{truncate en 0}}]", &data), "[]");
        assert_eq!(ok("{{truncate n 3}}", &data), "12…");
        for max in 0..15 {
            let out = truncate_chars("数据库连接数过高，请检查", max);
            assert!(out.chars().count() <= max, "{max}: {out}");
        }
        // A misspelt field is still an error in strict mode.
        assert!(err("{{truncate zhh 5}}", &data).contains("truncate"));
        assert!(err("{{truncate zh \"5\"}}", &data).contains("truncate"));
    }

    #[test]
    fn truncate_by_bytes_never_splits_a_character() {
        let data = json!({"zh": "数据库连接数过高", "en": "hello world"});
        // 8 characters of 3 bytes each.
        assert_eq!(ok("{{truncateBytes zh 24}}", &data), "数据库连接数过高");
        assert_eq!(ok("{{truncateBytes zh 23}}", &data), "数据库连接数…");
        assert_eq!(ok("{{truncateBytes zh 10}}", &data), "数据…");
        assert_eq!(ok("{{truncateBytes zh 3}}", &data), "…");
        assert_eq!(ok("[{{truncateBytes zh 2}}]", &data), "[]");
        assert_eq!(ok("{{truncateBytes en 8}}", &data), "hello…");
        assert_eq!(ok("{{truncateBytes en 2}}", &data), "he");
        for max in 0..30 {
            let out = truncate_bytes("数据库a连接数过高b", max);
            assert!(out.len() <= max, "{max}: {out}");
        }
    }

    #[test]
    fn join_sort_and_label_values() {
        let data = json!({
            "alerts": [
                {"labels": {"instance": "web-2", "job": "node"}},
                {"labels": {"job": "node"}},
                {"labels": {"instance": "db-1", "job": "mysql"}},
                {"labels": {"instance": "web-2", "job": "node"}},
                {"labels": {"instance": "", "job": "node"}},
                {"labels": {"instance": "app-10", "job": "node"}},
            ],
            "numbers": [10, 9, 1.5],
            "mixed": ["b", 2, "a", 1],
        });
        assert_eq!(
            ok("{{join (labelValues alerts \"instance\") \", \"}}", &data),
            "web-2, db-1, app-10"
        );
        assert_eq!(
            ok("{{join (sort (labelValues alerts \"instance\")) \", \"}}", &data),
            "app-10, db-1, web-2"
        );
        assert_eq!(
            ok("{{join (labelValues alerts \"job\") \"|\"}}", &data),
            "node|mysql"
        );
        assert_eq!(
            ok("[{{join (labelValues alerts \"nothing\") \",\"}}]", &data),
            "[]"
        );
        assert_eq!(ok("{{join numbers}}", &data), "10, 9, 1.5");
        assert_eq!(ok("{{join (sort numbers) \" \"}}", &data), "1.5 9 10");
        assert_eq!(ok("{{join (sort mixed) \"\"}}", &data), "12ab");
        assert_eq!(
            ok(
                "{{#each (sort (labelValues alerts \"instance\"))}}<{{this}}>{{/each}}",
                &data
            ),
            "<app-10><db-1><web-2>"
        );
        // sort copies: the list itself keeps its order.
        assert_eq!(
            ok("{{join (sort numbers) \",\"}} {{join numbers \",\"}}", &data),
            "1.5,9,10 10,9,1.5"
        );
        assert!(err("{{join alerts \",\"}}", &data).contains("join"));
        assert!(err("{{sort alerts}}", &data).contains("sort"));
        assert!(err("{{labelValues numbers \"x\"}}", &data).contains("labelValues"));
        assert!(err("{{join nothing \",\"}}", &data).contains("join"));
    }

    #[test]
    fn upper_and_lower() {
        let data = json!({"labels": {"severity": "Critical", "env": "PROD-ß"}});
        assert_eq!(ok("{{upper labels.severity}}", &data), "CRITICAL");
        assert_eq!(ok("{{lower labels.env}}", &data), "prod-ß");
        assert_eq!(ok("{{upper (default labels.team \"sre\")}}", &data), "SRE");
        assert!(err("{{upper labels.team}}", &data).contains("upper"));
    }

    #[test]
    fn default_works_for_missing_fields_in_strict_mode() {
        let data = json!({
            "labels": {"severity": "", "team": "db", "zero": 0},
            "annotations": {"description": "details"},
        });
        assert_eq!(ok("{{default labels.severity \"unknown\"}}", &data), "unknown");
        assert_eq!(ok("{{default labels.nothing \"unknown\"}}", &data), "unknown");
        assert_eq!(ok("{{default nothing.at.all \"unknown\"}}", &data), "unknown");
        assert_eq!(ok("{{default labels.team \"unknown\"}}", &data), "db");
        assert_eq!(ok("{{default labels.zero \"unknown\"}}", &data), "0");
        assert_eq!(
            ok(
                "{{default annotations.summary annotations.description \"-\"}}",
                &data
            ),
            "details"
        );
        let e = err("{{default labels.team}}", &data);
        assert!(e.contains("fallback"), "{e}");
        // Without the helper the field is still a strict-mode error.
        assert!(render("{{labels.nothing}}", &data).is_err());
    }

    #[test]
    fn severity_and_status_colours() {
        let table = [
            ("critical", "warning"),
            ("CRITICAL", "warning"),
            ("error", "warning"),
            ("High", "warning"),
            ("page", "warning"),
            ("warning", "warning"),
            ("info", "comment"),
            ("low", "comment"),
            ("none", "comment"),
            ("", "comment"),
            ("whatever", "comment"),
        ];
        for (severity, colour) in table {
            let data = json!({"labels": {"severity": severity}});
            assert_eq!(
                ok("{{severityColor labels.severity}}", &data),
                colour,
                "{severity}"
            );
        }
        let data = json!({"labels": {}, "status": "firing", "other": "resolved"});
        assert_eq!(
            ok("<font color=\"{{severityColor labels.severity}}\">", &data),
            "<font color=\"comment\">"
        );
        assert_eq!(
            ok("{{statusColor status}} {{statusColor other}}", &data),
            "warning info"
        );
        assert_eq!(ok("{{statusColor \"pending\"}}", &data), "comment");
    }

    #[test]
    fn silence_url_matches_alertmanagers_ui() {
        let data = json!({
            "externalURL": "https://am.example.com/",
            "labels": {"instance": "db-1:9100", "alertname": "Disk \"full\" 满"},
        });
        let expected = "https://am.example.com/#/silences/new?filter=\
            %7Balertname%3D%22Disk%20%5C%22full%5C%22%20%E6%BB%A1%22%2C%20instance%3D%22db-1%3A9100%22%7D";
        assert_eq!(ok("{{silenceURL labels}}", &data), expected);
        // Inside a block the root externalURL is still used.
        assert_eq!(
            ok("{{#with labels}}{{silenceURL this}}{{/with}}", &data),
            expected
        );
    }

    #[test]
    fn silence_url_details() {
        let labels = json!({"a": "back\\slash\nnew(line)*'", "b": 7});
        let url = silence_url("http://am:9093/prefix", labels.as_object().unwrap()).unwrap();
        assert_eq!(
            url,
            "http://am:9093/prefix/#/silences/new?filter=\
             %7Ba%3D%22back%5C%5Cslash%5Cnnew%28line%29%2A%27%22%2C%20b%3D%227%22%7D"
        );
        assert_eq!(
            silence_url("http://am", &Map::new()).unwrap(),
            "http://am/#/silences/new?filter="
        );
        let data = json!({"externalURL": "am.local:9093", "labels": {"a": "b"}});
        assert_eq!(ok("[{{silenceURL labels}}]", &data), "[]");
        let data = json!({"externalURL": "http://am", "labels": {"a": "b"}});
        let e = err("{{silenceURL lables}}", &data);
        assert!(e.contains("lables"), "{e}");
        assert!(err("{{silenceURL externalURL}}", &data).contains("label set"));
    }

    #[test]
    fn safe_url_encodes_what_would_break_a_cards_json() {
        assert_eq!(
            safe_url("http://p.example/a\\b\u{1}c\u{7f}d"),
            "http://p.example/a%5Cb%01c%7Fd"
        );
    }

    #[test]
    fn alertmanager_url() {
        let data = json!({"externalURL": "https://am.example.com/x(y)"});
        assert_eq!(
            ok("{{alertmanagerURL}}", &data),
            "https://am.example.com/x%28y%29"
        );
        assert_eq!(
            ok("[{{alertmanagerURL}}]", &json!({"externalURL": "javascript:x"})),
            "[]"
        );
        assert_eq!(ok("[{{alertmanagerURL}}]", &json!({})), "[]");
    }

    #[test]
    fn without_drops_keys() {
        let data = json!({"labels": {"alertname": "A", "severity": "s", "pod": "p", "ns": "n"}});
        assert_eq!(
            ok(
                "{{#each (without labels \"alertname\" \"severity\")}}{{@key}}={{this}} {{/each}}",
                &data
            ),
            "ns=n pod=p "
        );
        // A label set drops its keys: what sets one alert of a group apart.
        let data = json!({"labels": {"alertname": "A", "pod": "p", "ns": "n"}, "common": {"alertname": "A", "ns": "n"}});
        assert_eq!(
            ok(
                "{{#each (without labels common)}}{{@key}}={{this}} {{/each}}",
                &data
            ),
            "pod=p "
        );
    }

    #[test]
    fn the_alerts_page_is_filtered_to_the_labels() {
        let labels = json!({"team": "pay", "alertname": "A\"B"});
        assert_eq!(
            alerts_page_url("http://am/", labels.as_object().unwrap()).unwrap(),
            "http://am/#/alerts?filter=%7Balertname%3D%22A%5C%22B%22%2C%20team%3D%22pay%22%7D"
        );
        assert_eq!(
            alerts_page_url("am:9093", labels.as_object().unwrap()).unwrap(),
            ""
        );
    }

    #[test]
    fn safe_url_keeps_links_intact() {
        let data = json!({"u": "http://p/graph?g0.expr=rate(x[5m]) > 0", "bad": "javascript:alert(1)"});
        assert_eq!(
            ok("{{safeUrl u}}", &data),
            "http://p/graph?g0.expr=rate%28x%5B5m%5D%29%20%3E%200"
        );
        assert_eq!(ok("[{{safeUrl bad}}]", &data), "[]");
    }

    #[test]
    fn markdown_escape_like_the_markdown_msgtype() {
        let data = json!({"x": "<b>*bold*</b> [l](u) #1", "n": 5});
        let mut markdown = registry();
        markdown.register_escape_fn(super::super::escape::markdown);
        let escaped = markdown.render_template("{{x}}", &data).unwrap();
        assert_eq!(ok("{{{markdownEscape x}}}", &data), escaped);
        assert_eq!(
            markdown.render_template("{{{markdownEscape x}}}", &data).unwrap(),
            escaped
        );
        assert_eq!(escaped, r"&lt;b&gt;\*bold\*&lt;/b&gt; \[l\](u) \#1");
        assert_eq!(ok("{{markdownEscape n}}", &data), "5");
    }
}
