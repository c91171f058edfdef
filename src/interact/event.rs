//! Reading and writing WeCom's flat XML (`<xml>` with one text element per field), for the
//! callback envelope in [`super::crypto`] now and the decrypted events next, so hostile XML
//! meets one reader with one set of limits.

use std::borrow::Cow;
use std::io;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesCData, BytesRef, BytesStart, Event};
use quick_xml::{Reader, Writer};

use super::crypto::CallbackError;

/// WeCom's messages are two levels deep, card events with `SelectedItems` five.
const MAX_DEPTH: usize = 16;

/// `<name><![CDATA[value]]></name>`, split into several sections where `value` holds `]]>`.
pub(super) fn write_cdata<W: io::Write>(writer: &mut Writer<W>, name: &str, value: &str) -> io::Result<()> {
    writer.create_element(name).write_inner_content(|writer| {
        for section in BytesCData::escaped(value) {
            writer.write_event(Event::CData(section))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The `Encrypt` element of a callback envelope (or of a passive reply).
pub(super) fn envelope_encrypt(xml: &str) -> Result<String, CallbackError> {
    let [encrypt] = read_fields(xml, ["Encrypt"])?;
    encrypt
        .filter(|encrypt| !encrypt.is_empty())
        .ok_or_else(|| malformed("Encrypt is missing or empty"))
}

fn malformed(what: impl Into<String>) -> CallbackError {
    CallbackError::Malformed(what.into())
}

/// The text of the root `<xml>` element's children named in `names`, in that order.
///
/// Refuses what WeCom never sends and a hostile sender might: a DOCTYPE (so no entity
/// definitions at all), entities beyond XML's five, more than one root, nesting beyond
/// [`MAX_DEPTH`], a wanted element twice (which copy would be the signed one?) or holding
/// elements. Callers bound the size first.
fn read_fields<const N: usize>(xml: &str, names: [&str; N]) -> Result<[Option<String>; N], CallbackError> {
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    let mut seen_root = false;
    // The wanted element being read (always at depth 2) and its text so far.
    let mut open: Option<(usize, Value)> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|_| malformed("not well-formed XML"))?;
        match event {
            Event::Start(start) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(malformed(format!("nested deeper than {MAX_DEPTH} elements")));
                }
                match depth {
                    1 => root(&start, &mut seen_root)?,
                    2 => open = wanted(&names, &values, &start)?.map(|i| (i, Value::default())),
                    _ => holds_elements(&names, &open)?,
                }
            }
            Event::Empty(start) => match depth {
                0 => root(&start, &mut seen_root)?,
                1 => {
                    if let Some(i) = wanted(&names, &values, &start)? {
                        values[i] = Some(String::new());
                    }
                }
                _ if depth >= MAX_DEPTH => {
                    return Err(malformed(format!("nested deeper than {MAX_DEPTH} elements")));
                }
                _ => holds_elements(&names, &open)?,
            },
            Event::End(_) => {
                if depth == 2 {
                    if let Some((i, value)) = open.take() {
                        values[i] = Some(value.finish());
                    }
                }
                // The reader refuses unmatched end tags, so depth is never 0 here.
                depth = depth.saturating_sub(1);
            }
            Event::Text(text) => {
                let content = text.xml10_content().map_err(|_| malformed("text is not UTF-8"))?;
                if depth == 0 && !is_xml_whitespace(&content) {
                    return Err(malformed("text outside the root element"));
                }
                if let Some((_, value)) = open.as_mut() {
                    value.text(content);
                }
            }
            Event::CData(cdata) => {
                let content = cdata
                    .xml10_content()
                    .map_err(|_| malformed("CDATA is not UTF-8"))?;
                if depth == 0 {
                    return Err(malformed("CDATA outside the root element"));
                }
                if let Some((_, value)) = open.as_mut() {
                    value.literal(content.into_owned(), true);
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = resolve(&reference)?;
                if depth == 0 {
                    return Err(malformed("a reference outside the root element"));
                }
                if let Some((_, value)) = open.as_mut() {
                    value.literal(resolved, false);
                }
            }
            Event::DocType(_) => return Err(malformed("a DOCTYPE is not accepted")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if depth != 0 {
        return Err(malformed("an element is not closed"));
    }
    if !seen_root {
        return Err(malformed("no <xml> root element"));
    }
    Ok(values)
}

fn root(start: &BytesStart, seen_root: &mut bool) -> Result<(), CallbackError> {
    if std::mem::replace(seen_root, true) {
        return Err(malformed("more than one root element"));
    }
    if start.name().as_ref() != b"xml" {
        return Err(malformed("the root element is not <xml>"));
    }
    Ok(())
}

/// Which of `names` a child of the root is, refusing a second copy.
fn wanted<const N: usize>(
    names: &[&str; N],
    values: &[Option<String>; N],
    start: &BytesStart,
) -> Result<Option<usize>, CallbackError> {
    let Some(i) = names
        .iter()
        .position(|name| name.as_bytes() == start.name().as_ref())
    else {
        return Ok(None);
    };
    if values[i].is_some() {
        return Err(malformed(format!("{} appears more than once", names[i])));
    }
    Ok(Some(i))
}

fn holds_elements<const N: usize>(
    names: &[&str; N],
    open: &Option<(usize, Value)>,
) -> Result<(), CallbackError> {
    match open {
        Some((i, _)) => Err(malformed(format!("{} holds elements, not text", names[*i]))),
        None => Ok(()),
    }
}

/// A character reference or one of XML's five predefined entities; nothing else exists
/// without a DOCTYPE, which [`read_fields`] refuses.
fn resolve(reference: &BytesRef) -> Result<String, CallbackError> {
    let bad = || malformed("an unknown or invalid reference");
    if let Some(ch) = reference.resolve_char_ref().map_err(|_| bad())? {
        return Ok(ch.to_string());
    }
    let name = reference.decode().map_err(|_| bad())?;
    resolve_predefined_entity(&name)
        .map(str::to_string)
        .ok_or_else(bad)
}

fn is_xml_whitespace(text: &str) -> bool {
    text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// An element's text, piece by piece. When it holds CDATA, whitespace-only text around the
/// sections is layout (`<TaskId> <![CDATA[t]]> </TaskId>`), not part of the value; without
/// CDATA, the text is kept as it is.
#[derive(Default)]
struct Value {
    /// Each piece, and whether it is whitespace-only plain text.
    pieces: Vec<(String, bool)>,
    cdata: bool,
}

impl Value {
    fn text(&mut self, text: Cow<str>) {
        let layout = is_xml_whitespace(&text);
        self.pieces.push((text.into_owned(), layout));
    }

    fn literal(&mut self, text: String, cdata: bool) {
        self.cdata |= cdata;
        self.pieces.push((text, false));
    }

    fn finish(self) -> String {
        let pieces = if self.cdata {
            let first = self.pieces.iter().position(|(_, layout)| !layout);
            let last = self.pieces.iter().rposition(|(_, layout)| !layout);
            match (first, last) {
                (Some(first), Some(last)) => &self.pieces[first..=last],
                _ => &[][..],
            }
        } else {
            &self.pieces[..]
        };
        pieces.iter().map(|(text, _)| text.as_str()).collect()
    }
}
