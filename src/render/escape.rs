//! How label and annotation values are escaped, per msgtype. Values are data: whatever they
//! contain must show up as literal text and must not change the message's markup.

/// Textcard descriptions are HTML-ish (`<div class=…>`, `<br>`): HTML-escape values.
pub fn textcard(value: &str) -> String {
    handlebars::html_escape(value)
}

/// Undoes [`textcard`] for the card title, which WeCom shows as plain text.
pub fn unescape_html(value: &str) -> String {
    if !value.contains('&') {
        return value.to_string();
    }
    value
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x60;", "`")
        .replace("&#x3D;", "=")
        .replace("&amp;", "&")
}

/// WeCom app markdown understands `#` headings, `**bold**`, `[text](url)`, `` `code` ``,
/// `> quote` and `<font color=…>`. Markdown punctuation is backslash-escaped and angle
/// brackets become entities, so a value can open none of them.
pub fn markdown(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '*' | '`' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// `template_card` templates write the card's JSON: values become JSON string contents.
pub fn json_string(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_string()
}

/// Text messages have no markup but `<a href>` links; values go in as they are.
pub fn text(value: &str) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_values_cannot_open_markup() {
        let escaped = markdown(r#"<font color="warning">x</font> **bold** [l](http://e) `c` # h"#);
        assert!(!escaped.contains('<'));
        assert!(!escaped.contains("**"));
        assert!(escaped.contains(r"\[l\](http://e)"), "{escaped}");
        assert_eq!(markdown("a_b (c)"), "a_b (c)");
        assert_eq!(markdown("*"), r"\*");
    }

    #[test]
    fn the_textcard_title_gets_its_plain_text_back() {
        let original = r#"<b>"扩容" & 'x' = `y`</b>"#;
        assert_eq!(unescape_html(&textcard(original)), original);
    }
}
