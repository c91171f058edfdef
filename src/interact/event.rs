//! What a decrypted callback says: a button click on one of our template cards
//! (`template_card_event`, 模板卡片事件推送 in WeCom's 接收事件 pages, documents 90240 and
//! 90376), or anything else, which is acknowledged and left alone. Also the reading and
//! writing of WeCom's flat XML (`<xml>` with one text element per field) that the envelope
//! in [`super::crypto`] shares, so hostile XML meets one reader with one set of limits.

use std::borrow::Cow;
use std::io;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesCData, BytesRef, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

use super::error::CallbackError;

/// The longest inner XML we parse. A card click is a few hundred bytes; WeCom's largest
/// events (approval notices) stay in the low kilobytes.
pub const MAX_XML_LEN: usize = 64 * 1024;

/// WeCom's messages are two levels deep, card events with `SelectedItems` five.
const MAX_DEPTH: usize = 16;

const TEMPLATE_CARD_EVENT: &str = "template_card_event";

/// A click on a template card button. Field names follow WeCom's elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardEvent {
    /// `ToUserName`: the corp id.
    pub to_user_name: String,
    /// `FromUserName`: the userid of whoever clicked.
    pub from_user_name: String,
    /// `CreateTime`, unix seconds. With `FromUserName`, what identifies a redelivery.
    pub create_time: i64,
    /// `AgentID`: the app whose card it is.
    pub agent_id: i64,
    /// `EventKey`: the clicked button's `key`.
    pub event_key: String,
    /// `TaskId`: the card's `task_id`.
    pub task_id: String,
    /// `CardType`: `button_interaction`, `text_notice`, ….
    pub card_type: String,
    /// `ResponseCode`: a fresh code for `update_template_card` (usable once, within 72 h).
    /// Empty when the event carried none: WeCom's pages disagree on which card types get
    /// one, so its absence is no reason to drop a click.
    pub response_code: String,
}

/// A decrypted callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    CardEvent(CardEvent),
    /// Any other message or event: acknowledged, not acted on.
    Other {
        msg_type: String,
        event: Option<String>,
    },
}

/// The elements [`parse`] reads; everything else (`SelectedItems`, `MsgId`, …) is skipped.
const FIELDS: [&str; 10] = [
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "Event",
    "AgentID",
    "EventKey",
    "TaskId",
    "CardType",
    "ResponseCode",
];

/// Reads the inner XML of a callback. CDATA and plain text are both accepted; elements it
/// does not need are ignored. A `template_card_event` missing a field we act on is
/// `Malformed`, naming the element.
pub fn parse(xml: &str) -> Result<Incoming, CallbackError> {
    if xml.len() > MAX_XML_LEN {
        return Err(malformed(format!("message is over {MAX_XML_LEN} bytes")));
    }
    let [to_user_name, from_user_name, create_time, msg_type, event, agent_id, event_key, task_id, card_type, response_code] =
        read_fields(xml, FIELDS)?;
    let msg_type = msg_type.ok_or_else(|| malformed("MsgType is missing"))?;
    if msg_type != "event" || event.as_deref() != Some(TEMPLATE_CARD_EVENT) {
        return Ok(Incoming::Other { msg_type, event });
    }
    Ok(Incoming::CardEvent(CardEvent {
        to_user_name: required(to_user_name, "ToUserName")?,
        from_user_name: required(from_user_name, "FromUserName")?,
        create_time: integer(required(create_time, "CreateTime")?, "CreateTime")?,
        agent_id: integer(required(agent_id, "AgentID")?, "AgentID")?,
        event_key: required(event_key, "EventKey")?,
        task_id: required(task_id, "TaskId")?,
        card_type: required(card_type, "CardType")?,
        response_code: response_code.unwrap_or_default(),
    }))
}

fn required(value: Option<String>, element: &str) -> Result<String, CallbackError> {
    value.filter(|value| !value.is_empty()).ok_or_else(|| {
        malformed(format!(
            "{element} is missing or empty in a {TEMPLATE_CARD_EVENT}"
        ))
    })
}

fn integer(value: String, element: &str) -> Result<i64, CallbackError> {
    value
        .trim()
        .parse()
        .map_err(|_| malformed(format!("{element} is not an integer")))
}

/// The XML WeCom sends for a card click, for tests and our fake server: the elements of
/// WeCom's example, in its order, strings in CDATA (a `]]>` inside a value is split across
/// two sections, so no value can end the section early) and numbers as text.
pub fn card_event_xml(event: &CardEvent) -> String {
    let mut writer = Writer::new(Vec::new());
    writer
        .create_element("xml")
        .write_inner_content(|writer| {
            write_cdata(writer, "ToUserName", &event.to_user_name)?;
            write_cdata(writer, "FromUserName", &event.from_user_name)?;
            writer
                .create_element("CreateTime")
                .write_text_content(BytesText::new(&event.create_time.to_string()))?;
            write_cdata(writer, "MsgType", "event")?;
            write_cdata(writer, "Event", TEMPLATE_CARD_EVENT)?;
            write_cdata(writer, "EventKey", &event.event_key)?;
            write_cdata(writer, "TaskId", &event.task_id)?;
            write_cdata(writer, "CardType", &event.card_type)?;
            write_cdata(writer, "ResponseCode", &event.response_code)?;
            writer
                .create_element("AgentID")
                .write_text_content(BytesText::new(&event.agent_id.to_string()))?;
            Ok(())
        })
        .expect("writing XML into memory cannot fail");
    String::from_utf8(writer.into_inner()).expect("the XML writer writes what it was given: UTF-8")
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interact::crypto::CallbackCrypto;
    use crate::secret::Secret;

    /// The example event of 模板卡片事件推送 (WeCom document 90240, 接收事件), as the
    /// WeCom SDKs reproduce it (WxJava's WxCpXmlMessageTest, byte for byte).
    const DOC_EXAMPLE: &str = "<xml>
<ToUserName><![CDATA[toUser]]></ToUserName>
<FromUserName><![CDATA[FromUser]]></FromUserName>
<CreateTime>123456789</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[template_card_event]]></Event>
<EventKey><![CDATA[key111]]></EventKey>
<TaskId><![CDATA[taskid111]]></TaskId>
<CardType><![CDATA[text_notice]]></CardType>
<ResponseCode><![CDATA[ResponseCode]]></ResponseCode>
<AgentID>1</AgentID>
<SelectedItems>
    <SelectedItem>
        <QuestionKey><![CDATA[QuestionKey1]]></QuestionKey>
        <OptionIds>
            <OptionId><![CDATA[OptionId1]]></OptionId>
            <OptionId><![CDATA[OptionId2]]></OptionId>
        </OptionIds>
    </SelectedItem>
    <SelectedItem>
        <QuestionKey><![CDATA[QuestionKey2]]></QuestionKey>
        <OptionIds>
            <OptionId><![CDATA[OptionId3]]></OptionId>
            <OptionId><![CDATA[OptionId4]]></OptionId>
        </OptionIds>
    </SelectedItem>
</SelectedItems>
</xml>";

    fn doc_event() -> CardEvent {
        CardEvent {
            to_user_name: "toUser".into(),
            from_user_name: "FromUser".into(),
            create_time: 123456789,
            agent_id: 1,
            event_key: "key111".into(),
            task_id: "taskid111".into(),
            card_type: "text_notice".into(),
            response_code: "ResponseCode".into(),
        }
    }

    fn malformed_naming(xml: &str, element: &str) {
        match parse(xml) {
            Err(CallbackError::Malformed(message)) => {
                assert!(message.contains(element), "{message} does not name {element}")
            }
            other => panic!("{other:?} for {xml}"),
        }
    }

    #[test]
    fn wecoms_example_is_a_card_event() {
        assert_eq!(parse(DOC_EXAMPLE).unwrap(), Incoming::CardEvent(doc_event()));
    }

    #[test]
    fn plain_text_reads_like_cdata() {
        let plain = "<xml><ToUserName>toUser</ToUserName><FromUserName>FromUser</FromUserName><CreateTime>123456789</CreateTime><MsgType>event</MsgType><Event>template_card_event</Event><EventKey>key111</EventKey><TaskId>taskid111</TaskId><CardType>text_notice</CardType><ResponseCode>ResponseCode</ResponseCode><AgentID><![CDATA[1]]></AgentID></xml>";
        assert_eq!(parse(plain).unwrap(), Incoming::CardEvent(doc_event()));
        // Layout around CDATA is not part of the value; references resolve.
        let spaced = DOC_EXAMPLE
            .replace(
                "<TaskId><![CDATA[taskid111]]>",
                "<TaskId>\n  <![CDATA[taskid111]]>  ",
            )
            .replace("<CreateTime>123456789", "<CreateTime> 123456789 ")
            .replace("<![CDATA[key111]]>", "key&#x31;&#49;&amp;<![CDATA[1]]>");
        let mut expected = doc_event();
        expected.event_key = "key11&1".into();
        assert_eq!(parse(&spaced).unwrap(), Incoming::CardEvent(expected));
    }

    #[test]
    fn the_xml_we_write_is_read_back() {
        let event = CardEvent {
            to_user_name: "ww1436e0e65a779aee".into(),
            from_user_name: "zhangsan".into(),
            create_time: 1_700_000_000,
            agent_id: 1000002,
            event_key: "silence:2h".into(),
            task_id: "am-0123456789abcdef".into(),
            card_type: "button_interaction".into(),
            response_code: "rc-1".into(),
        };
        let xml = card_event_xml(&event);
        assert_eq!(
            xml,
            "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[silence:2h]]></EventKey><TaskId><![CDATA[am-0123456789abcdef]]></TaskId><CardType><![CDATA[button_interaction]]></CardType><ResponseCode><![CDATA[rc-1]]></ResponseCode><AgentID>1000002</AgentID></xml>"
        );
        assert_eq!(parse(&xml).unwrap(), Incoming::CardEvent(event));
    }

    #[test]
    fn a_cdata_end_inside_a_value_round_trips() {
        let event = CardEvent {
            to_user_name: "corp]]>".into(),
            from_user_name: "]]>]]>".into(),
            create_time: -1,
            agent_id: i64::MAX,
            event_key: "a]]><ResponseCode>forged</ResponseCode><![CDATA[".into(),
            task_id: "<&>\"' ]] > ]]".into(),
            card_type: " 告警 ".into(),
            response_code: "]]".into(),
        };
        // The forged element stays inside EventKey's CDATA, so ResponseCode is still "]]".
        assert_eq!(
            parse(&card_event_xml(&event)).unwrap(),
            Incoming::CardEvent(event)
        );
    }

    #[test]
    fn other_messages_and_events_are_acknowledged_only() {
        // The text message of WeCom's WXBizMsgCrypt samples (decrypted).
        let text = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>\n";
        assert_eq!(
            parse(text).unwrap(),
            Incoming::Other {
                msg_type: "text".into(),
                event: None
            }
        );
        for event in ["enter_agent", "template_card_menu_event", "subscribe"] {
            let xml = DOC_EXAMPLE.replace(TEMPLATE_CARD_EVENT, event);
            assert_eq!(
                parse(&xml).unwrap(),
                Incoming::Other {
                    msg_type: "event".into(),
                    event: Some(event.into())
                }
            );
        }
        // Other events need none of a card event's fields.
        assert_eq!(
            parse("<xml><MsgType>event</MsgType><Event>enter_agent</Event></xml>").unwrap(),
            Incoming::Other {
                msg_type: "event".into(),
                event: Some("enter_agent".into())
            }
        );
    }

    #[test]
    fn a_card_event_missing_a_field_names_it() {
        for element in [
            "ToUserName",
            "FromUserName",
            "CreateTime",
            "AgentID",
            "EventKey",
            "TaskId",
            "CardType",
        ] {
            let without: String = DOC_EXAMPLE
                .lines()
                .filter(|line| !line.starts_with(&format!("<{element}>")))
                .collect();
            malformed_naming(&without, element);
        }
        malformed_naming(&DOC_EXAMPLE.replace("<![CDATA[taskid111]]>", ""), "TaskId");
        malformed_naming(
            &DOC_EXAMPLE.replace("<TaskId><![CDATA[taskid111]]></TaskId>", "<TaskId/>"),
            "TaskId",
        );
        malformed_naming(&DOC_EXAMPLE.replace("123456789", "yesterday"), "CreateTime");
        malformed_naming(&DOC_EXAMPLE.replace("<AgentID>1<", "<AgentID>1.5<"), "AgentID");
        malformed_naming(
            &DOC_EXAMPLE.replace("<MsgType><![CDATA[event]]></MsgType>", ""),
            "MsgType",
        );
        // A missing ResponseCode is not a reason to drop the click.
        let without: String = DOC_EXAMPLE
            .lines()
            .filter(|line| !line.starts_with("<ResponseCode>"))
            .collect();
        let mut expected = doc_event();
        expected.response_code.clear();
        assert_eq!(parse(&without).unwrap(), Incoming::CardEvent(expected));
    }

    #[test]
    fn hostile_xml_is_malformed() {
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(100), "</a>".repeat(100));
        let deep_empty = format!(
            "<xml>{}<a/>{}</xml>",
            "<a>".repeat(MAX_DEPTH - 1),
            "</a>".repeat(MAX_DEPTH - 1)
        );
        let huge = format!(
            "<xml><MsgType>text</MsgType><Content>{}</Content></xml>",
            "a".repeat(MAX_XML_LEN)
        );
        let doctype = format!("<!DOCTYPE xml [<!ENTITY a \"b\">]>{DOC_EXAMPLE}");
        for xml in [
            "",
            "   ",
            "not xml",
            "<",
            "<xml>",
            "<xml></other>",
            "<xml/><xml/>",
            "<other><MsgType>text</MsgType></other>",
            "text<xml><MsgType>text</MsgType></xml>",
            "<xml><MsgType>text</MsgType></xml>trailing",
            "<xml><MsgType>&unknown;</MsgType></xml>",
            "<xml><MsgType>&#0;</MsgType></xml>",
            "<xml><MsgType>&#xZZ;</MsgType></xml>",
            "<xml><MsgType>a & b</MsgType></xml>",
            "<xml><MsgType>text</MsgType><MsgType>event</MsgType></xml>",
            "<xml><MsgType><b>text</b></MsgType></xml>",
            "<xml><MsgType><b/>text</MsgType></xml>",
            "<xml><MsgType>text</MsgType>",
            deep.as_str(),
            deep_empty.as_str(),
            huge.as_str(),
            doctype.as_str(),
        ] {
            assert!(
                matches!(parse(xml), Err(CallbackError::Malformed(_))),
                "{xml:.200}"
            );
        }
        malformed_naming(
            &DOC_EXAMPLE.replace("</TaskId>", "</TaskId><TaskId>t2</TaskId>"),
            "TaskId",
        );
        // Just inside the depth limit is fine.
        let nested = format!(
            "<xml><MsgType>text</MsgType>{}{}</xml>",
            "<a>".repeat(MAX_DEPTH - 1),
            "</a>".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&nested).is_ok());
    }

    #[test]
    fn no_cut_or_corruption_of_a_card_event_panics() {
        let xml = card_event_xml(&doc_event());
        for end in (0..xml.len()).filter(|&end| xml.is_char_boundary(end)) {
            let _ = parse(&xml[..end]);
        }
        for position in 0..xml.len() {
            for byte in [b'<', b'>', b'&', b']', b'/', b'!', b'"', b'?'] {
                let mut bytes = xml.clone().into_bytes();
                bytes[position] = byte;
                if let Ok(text) = String::from_utf8(bytes) {
                    let _ = parse(&text);
                }
            }
        }
    }

    #[test]
    fn a_card_click_goes_through_the_whole_protocol() {
        // WeCom's sample credentials (see crypto's tests): what our fake server will send.
        let crypto = CallbackCrypto::new(
            Secret::new("QDG6eK"),
            &Secret::new("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"),
            "wx5823bf96d3bd56c7",
        )
        .unwrap();
        let xml = card_event_xml(&doc_event());
        let body = crypto.encrypt_reply(&xml, "1409659813", "1372623149");
        let encrypt = envelope_encrypt(&body).unwrap();
        let signature = crypto.signature("1409659813", "1372623149", &encrypt);
        let inner = crypto
            .decrypt_message(&signature, "1409659813", "1372623149", body.as_bytes())
            .unwrap();
        assert_eq!(parse(&inner).unwrap(), Incoming::CardEvent(doc_event()));
    }
}
