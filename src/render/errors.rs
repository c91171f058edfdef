//! Template errors as the SRE who owns the template reads them: the file (or the built-in
//! template's name), a 1-based line and column, the offending line with a caret, what is
//! wrong in our words and a hint — never the parser's grammar or a Rust debug string.

use std::fmt::Write;
use std::path::Path;

use handlebars::{RenderErrorReason, TemplateErrorReason};

use super::{BuiltinTemplates, EDITED_FILE};

/// Where the templates errors point into are: the files of `templates.dir`, the built-in
/// templates, and a preview's edited template (`(name, source)`: it is no file).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    pub dir: Option<&'a Path>,
    pub edited: Option<(&'a str, &'a str)>,
}

/// Where a template named `name` comes from, and its text: the edited template, a file of
/// `dir`, else a built-in template.
fn locate(name: &str, sources: Sources<'_>) -> (String, Option<String>) {
    if let Some((edited, text)) = sources.edited {
        if name == edited {
            return (EDITED_FILE.to_string(), Some(text.to_string()));
        }
    }
    if let Some(dir) = sources.dir {
        let path = dir.join(format!("{name}.hbs"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            return (path.display().to_string(), Some(text));
        }
    }
    let text = BuiltinTemplates::get(&format!("{name}.hbs"))
        .map(|file| String::from_utf8_lossy(&file.data).into_owned());
    (format!("built-in template {name}"), text)
}

/// The text of template `name`: its file in `dir`, else the built-in one.
pub fn source(name: &str, dir: Option<&Path>) -> Option<String> {
    locate(name, Sources { dir, edited: None }).1
}

/// `reason`, located at `position` of template `name`, with the line quoted.
pub fn located(name: &str, sources: Sources<'_>, position: (usize, usize), reason: &str) -> String {
    let (file, text) = locate(name, sources);
    let mut message = format!("{}: {reason}", at(&file, Some(position)));
    if let Some(shown) = text.and_then(|text| excerpt(&text, position.0, position.1)) {
        message.push_str(&shown);
    }
    message
}

/// The line `line` (1-based) of `text` with a caret under column `column` (1-based).
fn excerpt(text: &str, line: usize, column: usize) -> Option<String> {
    let shown = text.lines().nth(line.checked_sub(1)?)?;
    let number = line.to_string();
    let pad = " ".repeat(number.len());
    let before: String = shown.chars().take(column.saturating_sub(1)).collect();
    let indent: String = before
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    Some(format!("\n {number} | {shown}\n {pad} | {indent}^"))
}

fn at(file: &str, position: Option<(usize, usize)>) -> String {
    match position {
        Some((line, column)) => format!("{file}:{line}:{column}"),
        None => file.to_string(),
    }
}

/// A template that does not parse.
pub fn syntax(error: &handlebars::TemplateError, sources: Sources<'_>) -> String {
    let name = error.name().map_or("(unnamed)", String::as_str);
    let (file, text) = locate(name, sources);
    let position = error.pos();
    let at_end = match (&text, position) {
        (Some(text), Some((line, _))) => line > text.lines().count(),
        _ => false,
    };
    let reason = match error.reason() {
        TemplateErrorReason::InvalidSyntax(_) if at_end => {
            "the template ends inside a block: a {{#if}}, {{#each}}, {{#with}} or {{#unless}} has no closing {{/…}}".to_string()
        }
        TemplateErrorReason::InvalidSyntax(_) => {
            "not valid handlebars here: check that this {{ is closed by }}, that a block is written {{#name …}}…{{/name}}, and that quotes in it are closed".to_string()
        }
        TemplateErrorReason::MismatchingClosedHelper(open, closed) => format!(
            "{{{{/{closed}}}}} closes the block {{{{#{open}}}}}: blocks close innermost first",
            open = open.trim_matches('"'),
            closed = closed.trim_matches('"')
        ),
        TemplateErrorReason::MismatchingClosedDecorator(open, closed) => format!(
            "{{{{/{closed}}}}} closes the decorator {{{{#*{open}}}}}: blocks close innermost first",
            open = open.trim_matches('"'),
            closed = closed.trim_matches('"')
        ),
        TemplateErrorReason::InvalidParam(param) => format!("{param} is not a valid parameter here"),
        TemplateErrorReason::NestedSubexpression => {
            "a subexpression inside a subexpression is not supported: use {{#with (…)}} for the inner one".to_string()
        }
        TemplateErrorReason::IoError(error, name) => format!("cannot read template {name}: {error}"),
        other => other.to_string(),
    };
    // The end of the template is past its last line: point at that line's end instead.
    let position = match (&text, position) {
        (Some(text), Some(_)) if at_end => text
            .lines()
            .enumerate()
            .last()
            .map(|(i, last)| (i + 1, last.chars().count() + 1)),
        _ => position,
    };
    let mut message = format!("{}: {reason}", at(&file, position));
    if let (Some(text), Some((line, column))) = (&text, position) {
        if let Some(shown) = excerpt(text, line, column) {
            message.push_str(&shown);
        }
    }
    message
}

/// A template that failed while rendering (strict mode, a helper's error).
pub fn render(error: &handlebars::RenderError, sources: Sources<'_>) -> String {
    let name = error.template_name.as_deref().unwrap_or("(unnamed)");
    let (file, text) = locate(name, sources);
    let position = error.line_no.zip(error.column_no);
    let reason = match error.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => format!(
            "{path} does not exist here (templates are strict: a missing field is an error, not an empty text). If some alerts lack it, guard it with {{{{#if {path}}}}}…{{{{/if}}}} or give a default: {{{{default {path} \"-\"}}}}; if it is misspelt, fix it"
        ),
        RenderErrorReason::MissingVariable(None) => {
            "a field used here does not exist (templates are strict: guard it with {{#if …}} or use {{default … \"-\"}})".to_string()
        }
        RenderErrorReason::HelperNotFound(helper) => format!(
            "there is no helper or field named {helper} (helpers: time, duration, truncate, truncateBytes, join, sort, labelValues, upper, lower, default, severityColor, statusColor, silenceURL, alertmanagerURL, without, safeUrl, markdownEscape)"
        ),
        RenderErrorReason::PartialNotFound(partial) | RenderErrorReason::TemplateNotFound(partial) => {
            format!("there is no template or partial named {partial} (partials live in templates.dir/partials/)")
        }
        RenderErrorReason::ParamNotFoundForIndex(helper, index) => {
            format!("{helper} needs a parameter number {} here", index + 1)
        }
        RenderErrorReason::ParamNotFoundForName(helper, param) => {
            format!("{helper} needs its {param}= parameter here")
        }
        other => other.to_string(),
    };
    let mut message = format!("{}: {reason}", at(&file, position));
    if let (Some(text), Some((line, column))) = (&text, position) {
        if let Some(shown) = excerpt(text, line, column) {
            let _ = write!(message, "{shown}");
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax_of(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.hbs"), text).unwrap();
        let error = handlebars::Template::compile_with_name(text, "mine".into()).unwrap_err();
        let sources = Sources {
            dir: Some(dir.path()),
            edited: None,
        };
        syntax(&error, sources).replace(&dir.path().display().to_string(), "DIR")
    }

    #[test]
    fn an_unclosed_block_is_said_so_at_the_last_line_in_our_words() {
        let message = syntax_of("{{#each alerts}}\n{{#if labels.x}}\n{{/each}}\n");
        assert!(message.starts_with("DIR/mine.hbs:"), "{message}");
        assert!(message.contains("no closing {{/…}}"), "{message}");
        assert!(!message.contains("expected"), "no grammar dump: {message}");
        assert!(message.contains(" 3 | {{/each}}"), "1-based lines: {message}");
    }

    #[test]
    fn a_broken_expression_points_at_its_line_and_column() {
        let message = syntax_of("{{#each alerts}}\n {{ labels.x \n{{/each}}\n");
        assert!(
            !message.contains("expected") && !message.contains("trailing_tilde"),
            "{message}"
        );
        assert!(
            message.contains("check that this {{ is closed by }}"),
            "{message}"
        );
    }
}
