//! Rendering with a cap on the output: a template loops over what the webhook sends, so a
//! loop inside a loop over a big group (or a playground edit) could otherwise grow one
//! render without bound. The cap is far above anything WeCom takes (its largest message is
//! 4 KiB; the series and fitting re-render parts of a group, never more than the group).

use std::io::{self, Write};

use handlebars::{Context, Handlebars};

use super::errors::{self, Sources};

/// The most bytes one render may write before it is stopped.
pub const MAX_RENDER_BYTES: usize = 16 << 20;

/// A buffer that refuses to grow past its limit.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + data.len() > self.limit {
            self.over = true;
            return Err(io::Error::other("render output limit"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Renders the registered template `name` with `context`, stopped at `limit` bytes; the
/// error in our words (`errors::render`) either way.
pub fn render(
    registry: &Handlebars<'_>,
    name: &str,
    context: &Context,
    sources: Sources<'_>,
    limit: usize,
) -> Result<String, String> {
    let mut out = Capped {
        bytes: Vec::new(),
        limit,
        over: false,
    };
    let result = registry.render_with_context_to_write(name, context, &mut out);
    if out.over {
        return Err(format!(
            "template {name}: its output passed {} MiB before it finished, and was stopped (a loop inside a loop over the alerts? WeCom takes at most a few KiB)",
            limit >> 20
        ));
    }
    result.map_err(|e| errors::render(&e, sources))?;
    // Handlebars writes `str` segments only, so the bytes are UTF-8.
    String::from_utf8(out.bytes).map_err(|_| format!("template {name}: its output is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry(template: &str) -> Handlebars<'static> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_template_string("t", template).unwrap();
        registry
    }

    #[test]
    fn a_render_within_the_limit_is_the_plain_render() {
        let registry = registry("{{#each xs}}<{{this}}>{{/each}}");
        let context = Context::wraps(json!({"xs": [1, 2, 3]})).unwrap();
        assert_eq!(
            render(&registry, "t", &context, Sources::default(), 1 << 20).unwrap(),
            "<1><2><3>"
        );
    }

    /// A loop inside a loop inside a loop over 200 items writes 200³ lines: stopped at the
    /// limit with a message that says why, instead of growing to gigabytes.
    #[test]
    fn a_runaway_render_is_stopped_at_the_limit() {
        let registry = registry(
            "{{#each xs}}{{#each @root.xs}}{{#each @root.xs}}a line of output\n{{/each}}{{/each}}{{/each}}",
        );
        let xs: Vec<u32> = (0..200).collect();
        let context = Context::wraps(json!({ "xs": xs })).unwrap();
        let error = render(&registry, "t", &context, Sources::default(), 1 << 20).unwrap_err();
        assert!(error.contains("passed 1 MiB before it finished"), "{error}");
    }

    #[test]
    fn template_errors_are_still_told_in_our_words() {
        let registry = registry("{{nope}}");
        let context = Context::wraps(json!({})).unwrap();
        let error = render(&registry, "t", &context, Sources::default(), 1 << 20).unwrap_err();
        assert!(error.contains("nope"), "{error}");
        assert!(!error.contains("Some("), "{error}");
    }
}
