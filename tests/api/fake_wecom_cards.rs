//! Interactive template cards and callbacks of the fake WeCom: a child module of
//! `fake_wecom.rs` (`#[path = "fake_wecom_cards.rs"] mod cards;`), whose public items that
//! file re-exports. Everything here follows WeCom's pages, cited by title: "发送应用消息"
//! (模板卡片消息 → 按钮交互型, and its 特殊说明), "更新模版卡片消息", "接收消息与事件 → 事件格式"
//! (模板卡片事件推送), "回调配置", "加解密方案说明" (消息体签名校验, 密文解密得到msg的过程) and the
//! "全局错误码" list. Where a page is vague or two pages disagree, the fake takes the reading
//! that is harder on the service, and says so below.
//!
//! # What is modelled
//!
//! - **Callback configuration** ([`FakeWeCom::set_callback`]): what the admin console's
//!   "API接收" saves for an app: URL, Token (letters and digits, at most 32) and
//!   EncodingAESKey (43 letters and digits). The receive id of every encrypted message is the
//!   app's corp id. WeCom saves the URL only after verifying it; the fake saves at once and
//!   [`FakeWeCom::verify_callback_url`] performs that verification on demand: a GET with
//!   `msg_signature`, `timestamp`, `nonce` and `echostr` (URL-encoded ciphertext of a random
//!   19-digit string, like WeCom's), answered correctly only by HTTP 200 whose body is exactly
//!   the plaintext ("不能加引号，不能带bom头，不能带换行符") within **1 s** ("在1秒内响应GET请求").
//! - **Sending** a `template_card` of card_type `button_interaction` (validation rules and
//!   errcodes below). A successful send answers a fresh `response_code` and registers the card
//!   as a task of the app: its recipients resolved to members exactly as the per-member limits
//!   of message/send resolve them, and per member the card as that member sees it
//!   ([`FakeWeCom::card_view`]). A member the per-member limit dropped never got the card: no
//!   view, cannot click.
//! - **Clicking** ([`FakeWeCom::click`]): the `template_card_event` of "事件格式", encrypted
//!   and signed by this file's own WXBizMsgCrypt implementation (RustCrypto aes/cbc, sha1,
//!   base64; independent of the service's), POSTed to the callback URL as
//!   `url?msg_signature=…&timestamp=…&nonce=…` with the body
//!   `<xml><ToUserName/><Encrypt/><AgentID/></xml>` (CDATA, as in WeCom's samples). Each click
//!   issues a fresh ResponseCode. An answer that is not HTTP 200 within 5 s
//!   ([`FakeWeCom::set_callback_timeout`] shortens that) is re-delivered, up to 3 more times
//!   ("企业微信服务器在五秒内收不到响应会断掉连接，并且重新发起请求，总共重试三次"), with the same
//!   plaintext (CreateTime included) and a new timestamp, nonce, random prefix, ciphertext and
//!   signature.
//! - **Updating** with `message/update_template_card`: `button.replace_name` (every button of
//!   the card becomes one grey, non-clickable label) or `template_card` (a whole new card),
//!   for the members named by `userids` / `partyids` / `tagids` / `atall`.
//! - **Crypto helpers** for tests ([`callback_signature`], [`callback_encrypt`],
//!   [`callback_decrypt`], [`xml_fields`]), checked against WeCom's published samples.
//!
//! A member's view ([`FakeWeCom::card_view`]) is the `template_card` JSON as sent or as last
//! replaced. After `button.replace_name`, or a replacement carrying `replace_text` ("按钮替换文案，
//! 填写本字段后会展现灰色不可点击按钮"), the view has no `button_list` and instead
//! `"button_replaced": "<the text>"`; nothing on it is clickable any more.
//!
//! # Errcodes
//!
//! message/send, `template_card` with card_type `button_interaction` (after the token,
//! agentid, msgtype, recipient and flag checks message/send always does):
//!
//! | errcode | when | source |
//! |---|---|---|
//! | 43012 | the app has no callback URL | 特殊说明: "没有配置回调接口的应用不可发送支持回调的卡片"; 全局错误码 43012 "应用需配置回调url" |
//! | 42014 | `task_id` missing, empty, over 128 bytes, not `[0-9A-Za-z_\-@]`, or used before by this app (ever) | 按钮交互型: task_id 是 "同一个应用任务id不能重复，只能由数字、字母和“_-@”组成，最长128字节"; 全局错误码 42014 "任务卡片消息的task_id不合法" — a guess: that code names the older task card; no code is documented for a template card's task_id |
//! | 42033 | `main_title.title` missing or empty | "更新模版卡片消息" lists main_title.title as required (是) for 按钮交互型; 全局错误码 42033 "缺失 Title" — a guess: the list names vertical_content_list and jump_list |
//! | 42038 | a button's `text` missing, empty or over 10 characters | button_list.text 是 "建议不超过10个字"; 42038 "Template_Card.button_list.text 缺失或不合法" |
//! | 42039 | a callback button (type 0) without `key`, a key over 1024 bytes, or a key twice in the card (buttons and action_menu share one key space) | button_list.key "最长支持1024字节，不可重复，button_list.type是0时必填"; 42039 "button_list.key 缺失或不合法" |
//! | 42051 | action_menu keys: missing, over 1024 bytes, repeated | 42051 "action_menu.action_list.key key冲突" |
//! | 42045 | `card_action` of a type other than 0/1, or with an invalid url | 42045 "Template_Card.card_action 缺失或不合法" |
//! | 42028 | a url missing where its type needs one (card_action, quote_area, horizontal_content_list, button_list type 1) | 42028 "Template_Card 缺失 Url" |
//! | 45034 / 40094 | a url button's url without http(s) / malformed or over 1024 bytes (other urls of the card: 40058, card_action's 42045) | as message/send checks every url |
//! | 42027 / 42035 / 42029 / 42050 | horizontal_content_list: keyname missing / more than 6 rows / type 2 (the fake stores no media) / type 3 without a directory userid | 42027, 42035, 42029, 42050 of 全局错误码 |
//! | 42043 / 42037 / 42040 / 42041 | button_selection: question_key missing or over 1024 bytes / option_list not 1..=10 / an option id missing, over 128 bytes or repeated / an option text missing | 42043, 42037, 42040, 42041 of 全局错误码 |
//! | 40058 | anything else: button_list missing or not 1..=6 buttons, a style outside 1..=4, a button type other than 0/1, over-long main_title (36) / desc (44) / sub_title_text (160) / keyname (5) / value (30) / option text (16), action_list not 1..=3, `replace_text` in a send, a field of the wrong JSON type | 40058 "不合法的参数 … 参数字段若是数组类型，若元素个数超出限制，也同样报错40058" |
//!
//! The same send page makes a `text_notice` with `action_menu` a callback card too: the fake
//! answers 43012 for it from an app without callback URL, and 42014 when it has no
//! `task_id` ("填了action_menu字段的话本字段必填"). Its other rules (and their 40058 answers)
//! are unchanged; it gets no `response_code` (below).
//!
//! message/update_template_card, in this order:
//!
//! | errcode | when | source |
//! |---|---|---|
//! | 43002 | not a POST | as message/send |
//! | 41001 / 40014 / 42001 | token missing / invalid / expired | as message/send |
//! | 47001 | body not a JSON object | as message/send |
//! | 41011 / 40056 / 301002 | agentid missing / not an app of the token's corp / another app than the token's | as message/send |
//! | 60140 | `response_code` missing, unknown, already used, or 72 h old | 全局错误码 60140 "无效的response_code — 可能是response_code已经过期"; the page: "一个code只能调用一次该接口，且只能在72小时内调用" |
//! | 42015 | a code issued to another app | 42015 "更新的消息的应用与发送消息的应用不匹配" |
//! | 40058 | both or neither of `button` and `template_card`; atall / enable_id_trans not 0/1; userids not strings; partyids / tagids not integers; replace_name / replace_text over 10 characters (a guess: the button text limit) | 40058 |
//! | 42020 | `button.replace_name` missing or empty | 42020 "缺少按钮名称" |
//! | 42031 | a replacement of a card_type other than button_interaction or text_notice (the fake models no others) | 42031 "Template_Card.CardType 字段不合法" |
//! | 42014 | a replacement naming another `task_id` than the card's | the update page's tables have no task_id; the send's code for a bad task_id (a guess, as there) |
//! | (send's) | a replacement card breaking the send rules of its card_type | as message/send above |
//! | 40032 / 82002 / 82003 | over 1,000 userids / 100 partyids / 100 tagids | the page's limits, message/send's codes |
//! | 82001 | atall not 1 and no userids, partyids or tagids | 82001 "指定的成员/部门/标签全部为空" |
//! | 81013 | every id named is not a recipient of the task (answer carries the lists) | 81013 "UserID、部门ID、标签ID全部非法或无权限" — a guess: the page only documents partial invalidity |
//!
//! A successful update answers `{"errcode":0,"errmsg":"ok","invaliduser":[…]}`: the ids that
//! are not recipients of the task, lower-cased ("不在应用的可见范围内或者不在消息的接收范围内";
//! "返回的列表都统一转为小写"), plus `invalidparty` / `invalidtag` arrays when any party or tag
//! named was not one the card was sent to (the page shows only invaliduser). Those ids are not
//! updated.
//!
//! # Stricter choices
//!
//! - **Button style**: the page says a style outside 1..=4 "不填或错填默认1"; the fake refuses it
//!   (40058), so a card never renders other than the service meant.
//! - **Suggested lengths are limits**: "建议不超过N个字" (button text 10, main_title 36 / desc 44,
//!   sub_title_text 160, keyname 5, value 30, option text 16) are refused beyond N characters,
//!   as for text_notice.
//! - **main_title.title is required** for button_interaction (the update page says 是; the send
//!   page's text_notice rule "main_title.title or sub_title_text" does not apply).
//! - **card_action** is optional for button_interaction (both pages: 否, type "0或不填代表不是链接");
//!   type 2 (mini program) is refused (42045) because the fake knows no mini programs.
//! - **One key space**: button keys and action_menu keys must all differ (both come back as
//!   EventKey); a second button without a key is not a duplicate of the first.
//! - **task_id unique for ever** per app, whatever became of the first card (not just while a
//!   code is valid).
//! - **response_code only for button_interaction**: the current send page also promises one
//!   for a text_notice with action_menu, an older revision and docs/wecom-api.md do not; the
//!   fake gives none there, so a service cannot come to depend on it. A send the duplicate
//!   check suppressed gets no response_code either (nothing was delivered to update).
//! - **Lifetime 72 h** on the fake's monotonic clock: a code is good while it is younger than
//!   72 h (an older revision of the same pages said 24 h; a service should use a code at
//!   once anyway).
//! - **A code is consumed by the first call that presents it** to the right app, even when the
//!   rest of that call is then refused ("一个code只能调用一次该接口": a call, not a successful
//!   update). Calls refused before the code is looked at (token, JSON, agentid) do not consume
//!   it. A service must therefore validate its update before sending it, and never retry an
//!   update with the same code.
//! - **task_id in a replacement**: "任务id只在发消息时候有效，更新消息的时候无效" (智能机器人 →
//!   模板卡片类型, the same cards for robots)
//!   and the update page's tables have no task_id: the fake accepts none or the card's own, and
//!   refuses another (42014).
//! - **Updates count against the per-member limits** of message/send (30 a minute, 1,000 an
//!   hour per app and member, by WeCom's clock, sliding and calendar windows alike; see the
//!   header of fake_wecom.rs). The pages say nothing about updates; the fake counts one per
//!   member whose card it changes, and over a limit silently leaves that member's card as it
//!   was (errcode 0; [`CardUpdate::dropped_for`]). Members with nothing to change (who never
//!   got the card, or, for `button.replace_name`, whose card was replaced by a text_notice) are
//!   not counted ([`CardUpdate::skipped`]). A card already greyed can be relabelled.
//! - **partyids / tagids** must be parties / tags the card was sent to (`toparty` / `totag`),
//!   and update the recipients they reach now; a userid must be a recipient of the task.
//!   atall=1 means every recipient of the task (the other lists are then ignored).
//! - **Re-delivery on any non-200 answer**: "回调配置" says WeCom retries "仅针对网络连接失败或者
//!   网络请求超时情况", the group robot's callback page that a non-200 answer ("其他错误码像302")
//!   is "一律当做失败并发起重试". The fake
//!   re-delivers after a timeout, a connection failure and any status but 200 (most duplicates
//!   for the service's idempotency to absorb); retries follow at once. A passive reply in the
//!   answer's body is recorded ([`CallbackDelivery::response_body`]) but never applied: the
//!   service must update cards through the API.
//! - **Random prefix**: the 16 random bytes before the length are arbitrary bytes (WeCom's
//!   libraries use printable ones), so a service that decodes the plaintext as UTF-8 before
//!   slicing it fails here.
//! - **URL verification within 1 s** ("回调配置"), not the 5 s events get.
//! - Clicks on action_menu items (`template_card_menu_event`), vote and multiple-choice cards
//!   and passive replies are not modelled.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};

use super::{
    answer_later, apply_fault, array, check_template_card, check_url, finish, flag, get_str, Endpoint, Fail,
    FakeWeCom, Fault, Reply, Shared, Stamp, State, MAX_PARTIES, MAX_TAGS, MAX_USERS,
};

/// A response_code is good for this long after it was issued ("72小时内有效").
pub const RESPONSE_CODE_LIFETIME: Duration = Duration::from_secs(72 * 3600);
/// button_list: "列表长度不超过6" (and at least one: a button card without buttons is refused).
pub const CARD_BUTTONS_MAX: usize = 6;
/// button_list.text "建议不超过10个字"; also the fake's limit for replace_name / replace_text.
pub const BUTTON_TEXT_MAX_CHARS: usize = 10;
/// button_list.key, action_list.key, question_key: "最长支持1024字节".
pub const CARD_KEY_MAX_BYTES: usize = 1024;
/// option_list.id: "最长支持128字节".
pub const CARD_OPTION_ID_MAX_BYTES: usize = 128;
pub const CARD_MAIN_TITLE_MAX_CHARS: usize = 36;
pub const CARD_MAIN_DESC_MAX_CHARS: usize = 44;
pub const CARD_SUB_TITLE_MAX_CHARS: usize = 160;
pub const CARD_OPTION_TEXT_MAX_CHARS: usize = 16;
pub const CARD_OPTIONS_MAX: usize = 10;
pub const CARD_ACTIONS_MAX: usize = 3;
/// WeCom gives up on an event answered later than this and delivers it again.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);
/// "总共重试三次": deliveries after the first.
pub const CALLBACK_RETRIES: usize = 3;
/// The admin console's URL verification must be answered within this ("在1秒内响应GET请求").
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(1);
/// Token: "由英文或数字组成且长度不超过32位".
pub const CALLBACK_TOKEN_MAX_CHARS: usize = 32;
/// EncodingAESKey: "由英文或数字组成且长度为43位".
pub const ENCODING_AES_KEY_CHARS: usize = 43;

// ---------------------------------------------------------------------------------------
// WXBizMsgCrypt, as "加解密方案说明" describes it. Written here from the page, deliberately
// independent of the service's own implementation, so that one cannot hide a bug of the other.

/// base64 as WeCom's libraries decode it: standard alphabet, padded, and tolerant of
/// non-zero trailing bits. A 43-character EncodingAESKey plus "=" usually ends in a symbol
/// whose low bits are not zero (the sample key ends in 't'); a strict decoder refuses it.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// The 32-byte AES key of an EncodingAESKey: `Base64_Decode(EncodingAESKey + "=")`.
pub fn callback_aes_key(encoding_aes_key: &str) -> Result<[u8; 32], String> {
    if encoding_aes_key.len() != ENCODING_AES_KEY_CHARS
        || !encoding_aes_key.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(format!(
            "EncodingAESKey must be {ENCODING_AES_KEY_CHARS} letters and digits, got {encoding_aes_key:?}"
        ));
    }
    let bytes = B64
        .decode(format!("{encoding_aes_key}="))
        .map_err(|e| format!("EncodingAESKey is not base64: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("EncodingAESKey decodes to {} bytes, not 32", b.len()))
}

/// msg_signature: SHA1 (lower-case hex) of token, timestamp, nonce and the ciphertext,
/// sorted as strings and concatenated ("消息体签名校验").
pub fn callback_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    hex(&Sha1::digest(parts.concat().as_bytes()))
}

/// `Base64_Encode(AES_Encrypt(random(16B) + msg_len(4B, big-endian) + msg + receiveid))`:
/// AES-256-CBC, IV = the first 16 key bytes, PKCS#7 padding to a multiple of 32 bytes.
/// `random` is a parameter so that published samples can be reproduced byte for byte.
pub fn callback_encrypt(
    encoding_aes_key: &str,
    receive_id: &str,
    msg: &[u8],
    random: [u8; 16],
) -> Result<String, String> {
    let key = callback_aes_key(encoding_aes_key)?;
    let len = u32::try_from(msg.len()).map_err(|_| "message longer than 4 GiB".to_string())?;
    let mut buf = Vec::with_capacity(20 + msg.len() + receive_id.len() + 32);
    buf.extend_from_slice(&random);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(msg);
    buf.extend_from_slice(receive_id.as_bytes());
    // PKCS#7 with a 32-byte block: always 1..=32 bytes of padding, each holding the count
    let pad = 32 - buf.len() % 32;
    buf.resize(buf.len() + pad, pad as u8);
    let n = buf.len();
    let ciphertext = Aes256CbcEnc::new_from_slices(&key, &key[..16])
        .map_err(|e| format!("AES key: {e}"))?
        .encrypt_padded_mut::<NoPadding>(&mut buf, n)
        .map_err(|e| format!("AES: {e}"))?;
    Ok(B64.encode(ciphertext))
}

/// The inverse of [`callback_encrypt`]: `(msg, receiveid)`. Refuses (Err) anything that is
/// not exactly what WeCom produces: bad base64, a length that is not a multiple of 32,
/// padding that is not PKCS#7 with 1..=32 bytes, a msg_len running past the end.
pub fn callback_decrypt(encoding_aes_key: &str, encrypt: &str) -> Result<(Vec<u8>, String), String> {
    let key = callback_aes_key(encoding_aes_key)?;
    let mut buf = B64
        .decode(encrypt)
        .map_err(|e| format!("Encrypt is not base64: {e}"))?;
    if buf.is_empty() || buf.len() % 32 != 0 {
        return Err(format!(
            "ciphertext of {} bytes is not a multiple of 32",
            buf.len()
        ));
    }
    let plain = Aes256CbcDec::new_from_slices(&key, &key[..16])
        .map_err(|e| format!("AES key: {e}"))?
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|e| format!("AES: {e}"))?;
    let pad = usize::from(*plain.last().expect("not empty"));
    if !(1..=32).contains(&pad) || plain[plain.len() - pad..].iter().any(|&b| usize::from(b) != pad) {
        return Err("bad PKCS#7 padding".to_string());
    }
    let plain = &plain[..plain.len() - pad];
    if plain.len() < 20 {
        return Err("plaintext shorter than random + msg_len".to_string());
    }
    let len = u32::from_be_bytes(plain[16..20].try_into().expect("4 bytes")) as usize;
    let end = 20usize
        .checked_add(len)
        .filter(|&e| e <= plain.len())
        .ok_or_else(|| format!("msg_len {len} runs past the plaintext"))?;
    let receive_id =
        String::from_utf8(plain[end..].to_vec()).map_err(|_| "receiveid is not UTF-8".to_string())?;
    Ok((plain[20..end].to_vec(), receive_id))
}

/// The child elements of the root of a flat XML document, in order, with their text (CDATA
/// and escaped text alike; the text of deeper elements is left out). For tests that read what
/// the fake posts, and for the fake to read nothing it did not write.
pub fn xml_fields(xml: &str) -> Result<Vec<(String, String)>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    let mut current: Option<(String, String)> = None;
    let mut fields = Vec::new();
    let bad = |e: &dyn std::fmt::Display| format!("XML: {e}");
    loop {
        match reader.read_event().map_err(|e| bad(&e))? {
            Event::Start(e) => {
                depth += 1;
                if depth == 2 {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    current = Some((name, String::new()));
                }
            }
            Event::Empty(e) if depth == 1 => {
                fields.push((
                    String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    String::new(),
                ));
            }
            Event::End(_) => {
                if depth == 2 {
                    fields.extend(current.take());
                }
                depth = depth.checked_sub(1).ok_or("XML: unbalanced end tag")?;
            }
            Event::Text(t) if depth == 2 => {
                if let Some((_, text)) = current.as_mut() {
                    text.push_str(&t.decode().map_err(|e| bad(&e))?);
                }
            }
            Event::CData(t) if depth == 2 => {
                if let Some((_, text)) = current.as_mut() {
                    text.push_str(&t.decode().map_err(|e| bad(&e))?);
                }
            }
            Event::GeneralRef(r) if depth == 2 => {
                let name = r.decode().map_err(|e| bad(&e))?;
                let ch = match &*name {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    _ => r
                        .resolve_char_ref()
                        .map_err(|e| bad(&e))?
                        .ok_or_else(|| format!("XML: unknown entity &{name};"))?,
                };
                if let Some((_, text)) = current.as_mut() {
                    text.push(ch);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err("XML: unclosed element".to_string());
    }
    Ok(fields)
}

/// The text of the first child element of the root named `name`.
pub fn xml_field(xml: &str, name: &str) -> Option<String> {
    xml_fields(xml)
        .ok()?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<![CDATA[s]]>`, splitting any "]]>" inside (a button key may hold one).
fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters (echostr is base64).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Public records

/// Where a response_code came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeOrigin {
    /// The reply of the message/send that created the task.
    Send,
    /// The `template_card_event` of this member's click on this key.
    Click { user: String, event_key: String },
}

/// One message/update_template_card call that presented a valid code of a task (and so
/// consumed it), whatever its outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct CardUpdate {
    /// The request JSON.
    pub body: Value,
    /// The request body as received (lossy UTF-8).
    pub raw: String,
    pub response_code: String,
    pub code_origin: CodeOrigin,
    /// What the call answered (0: accepted).
    pub errcode: i64,
    /// Members whose card it changed (directory spelling, sorted).
    pub applied_to: Vec<String>,
    /// Members over a per-member limit: answered errcode 0, card left as it was.
    pub dropped_for: Vec<String>,
    /// Members it named with nothing to change: they never got the card, or (for
    /// `button.replace_name`) their card was replaced by one without buttons (text_notice).
    pub skipped: Vec<String>,
    /// What the reply listed as invalid (`invaliduser`, `invalidparty`, `invalidtag`).
    pub invalid_users: Vec<String>,
    pub invalid_parties: Vec<String>,
    pub invalid_tags: Vec<String>,
}

/// One HTTP exchange with the app's callback URL.
#[derive(Clone, Debug)]
pub struct CallbackDelivery {
    /// Path and query string requested (e.g. `/wecom?msg_signature=…&timestamp=…&nonce=…`).
    pub path_and_query: String,
    /// The body sent (empty for the verification GET).
    pub body: Vec<u8>,
    /// HTTP status of the answer; `None` when none came in time or the connection failed.
    pub status: Option<u16>,
    /// No complete answer within the timeout.
    pub timed_out: bool,
    /// Transport error (connection refused, reset, …), when there was one.
    pub error: Option<String>,
    /// Body of the answer (a passive reply is recorded here, never applied).
    pub response_body: String,
    /// From sending the request to the end of the answer (or to giving up).
    pub elapsed: Duration,
}

impl CallbackDelivery {
    /// HTTP 200 in time: WeCom takes the event as received.
    pub fn acknowledged(&self) -> bool {
        self.status == Some(200) && !self.timed_out
    }
}

/// What [`FakeWeCom::click`] did.
#[derive(Clone, Debug)]
pub struct ClickResult {
    /// Whether the event was posted at all (false: refused, see `refused`).
    pub posted: bool,
    /// Why the click was refused (not a member who got the card, not a clickable key, …).
    pub refused: Option<String>,
    /// The fresh ResponseCode the event carried.
    pub response_code: Option<String>,
    /// CreateTime of the event (WeCom's wall clock, seconds), the same in every delivery.
    pub create_time: Option<i64>,
    /// The plaintext event XML, the same in every delivery.
    pub event_xml: Option<String>,
    /// Every delivery, first to last (at most 1 + [`CALLBACK_RETRIES`]).
    pub deliveries: Vec<CallbackDelivery>,
}

impl ClickResult {
    /// The last delivery was answered HTTP 200 in time.
    pub fn acknowledged(&self) -> bool {
        self.deliveries.last().is_some_and(CallbackDelivery::acknowledged)
    }

    fn refused(reason: String) -> ClickResult {
        ClickResult {
            posted: false,
            refused: Some(reason),
            response_code: None,
            create_time: None,
            event_xml: None,
            deliveries: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// State

/// An app's callback configuration ("API接收").
#[derive(Clone, Debug)]
pub(super) struct CallbackConfig {
    url: String,
    token: String,
    encoding_aes_key: String,
}

#[derive(Default)]
pub(super) struct CardsState {
    /// In send order.
    tasks: Vec<Task>,
    /// response_code -> what it is for.
    codes: BTreeMap<String, CodeInfo>,
    update_calls: usize,
    update_faults: VecDeque<Fault>,
    /// None: [`CALLBACK_TIMEOUT`].
    callback_timeout: Option<Duration>,
    /// agent id -> the last event POST (path and query, body).
    last_callback: BTreeMap<i64, (String, Vec<u8>)>,
}

/// A card as message/send accepted it (built by send_inner, registered after the per-member
/// limits decided who got it).
pub(super) struct NewTask {
    pub(super) card: Value,
    pub(super) parties: Vec<String>,
    pub(super) tags: Vec<String>,
    pub(super) recipients: BTreeSet<String>,
}

struct Task {
    app: usize,
    agent_id: i64,
    task_id: String,
    /// card_type of the card sent.
    card_type: String,
    /// Valid parties / tags the card was sent to.
    parties: Vec<String>,
    tags: Vec<String>,
    /// Every member the send was addressed to (directory spelling).
    recipients: BTreeSet<String>,
    /// Member -> the card as that member sees it now (only members who got it).
    views: BTreeMap<String, Value>,
    /// response_codes issued for this task, in order.
    codes: Vec<String>,
    updates: Vec<CardUpdate>,
}

struct CodeInfo {
    app: usize,
    task: usize,
    issued_at: Instant,
    used: bool,
    origin: CodeOrigin,
}

/// Everything a click needs once the state lock is released.
struct PreparedEvent {
    callback: CallbackConfig,
    corp_id: String,
    agent_id: i64,
    xml: String,
}

type Rejected = (i64, &'static str, Option<Value>);

fn plain(f: Fail) -> Rejected {
    (f.0, f.1, None)
}

/// Whether a message/send body is a template_card of card_type button_interaction.
pub(super) fn is_button_interaction(obj: &Map<String, Value>) -> bool {
    obj.get("template_card")
        .and_then(|c| c.get("card_type"))
        .and_then(Value::as_str)
        == Some("button_interaction")
}

/// The keys a member can click on a card as they see it: callback buttons (type 0 or absent)
/// of a button_interaction card whose buttons have not been replaced by a label.
fn clickable_keys(view: &Value) -> Vec<String> {
    if view.get("card_type").and_then(Value::as_str) != Some("button_interaction")
        || view.get("button_replaced").is_some()
    {
        return Vec::new();
    }
    view.get("button_list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| matches!(b.get("type").and_then(Value::as_i64), None | Some(0)))
        .filter_map(|b| b.get("key").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The card with every button turned into one grey label.
fn greyed(card: &Value, label: &str) -> Value {
    let mut card = card.clone();
    if let Some(obj) = card.as_object_mut() {
        obj.remove("button_list");
        obj.insert("button_replaced".into(), Value::String(label.to_string()));
    }
    card
}

/// The view a replacement card gives: as sent, greyed when it carries replace_text.
fn replacement_view(card: &Value) -> Value {
    match card.get("replace_text").and_then(Value::as_str) {
        Some(text) if !text.is_empty() => greyed(card, text),
        _ => card.clone(),
    }
}

fn object<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Map<String, Value>>, Fail> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err((40058, "invalid parameter type")),
    }
}

/// An optional small integer field (absent/null -> None).
fn int(obj: &Map<String, Value>, key: &str) -> Result<Option<i64>, Fail> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or((40058, "invalid parameter type")),
    }
}

fn chars_over(s: &str, max: usize) -> bool {
    s.chars().count() > max
}

/// `[0-9A-Za-z_\-@]{1,128}`.
fn task_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= super::CARD_TASK_ID_MAX_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@'))
}

/// Which rules a button_interaction card is checked against.
#[derive(Clone, Copy)]
enum CardMode<'a> {
    /// message/send: task_id required and fresh, no replace_text.
    Send,
    /// A replacement in message/update_template_card for the task with this id.
    Update { task_id: &'a str },
}

// ---------------------------------------------------------------------------------------
// Validation ("发送应用消息" → 按钮交互型; "更新模版卡片消息" → 按钮交互型)

impl State {
    /// message/send of a button_interaction card: the app needs a callback URL, then the card
    /// must satisfy the send rules (task_id freshness is checked by send_inner).
    pub(super) fn check_send_button_interaction(
        &self,
        app: usize,
        obj: &Map<String, Value>,
    ) -> Result<(), Fail> {
        if self.apps[app].callback.is_none() {
            return Err((43012, "require agent with callback url"));
        }
        let card = object(obj, "template_card")?.ok_or((40058, "template_card missing"))?;
        self.check_button_interaction(card, CardMode::Send)
    }

    /// A text_notice with action_menu is a callback card too: callback URL and task_id
    /// required ("填了action_menu字段的话本字段必填").
    pub(super) fn check_text_notice_action_menu(
        &self,
        app: usize,
        obj: &Map<String, Value>,
    ) -> Result<(), Fail> {
        let Some(card) = object(obj, "template_card")? else {
            return Ok(());
        };
        if object(card, "action_menu")?.is_none() {
            return Ok(());
        }
        if self.apps[app].callback.is_none() {
            return Err((43012, "require agent with callback url"));
        }
        check_action_menu(card, &mut BTreeSet::new())?;
        match get_str(card, "task_id")? {
            Some(id) if task_id_ok(id) => Ok(()),
            _ => Err((42014, "template_card.task_id required with action_menu")),
        }
    }

    fn check_button_interaction(&self, card: &Map<String, Value>, mode: CardMode) -> Result<(), Fail> {
        const BAD: Fail = (40058, "invalid template_card");
        if get_str(card, "card_type")? != Some("button_interaction") {
            return Err((42031, "template_card.card_type invalid"));
        }

        // task_id: required and well-formed in a send; in an update none or the card's own
        match (mode, get_str(card, "task_id")?) {
            (CardMode::Send, Some(id)) if task_id_ok(id) => {}
            (CardMode::Send, _) => return Err((42014, "template_card.task_id missing or invalid")),
            (CardMode::Update { .. }, None) => {}
            (CardMode::Update { task_id }, Some(id)) if id == task_id => {}
            (CardMode::Update { .. }, Some(_)) => {
                return Err((42014, "template_card.task_id is not the card's task_id"))
            }
        }

        // source: an object; desc_color 0..=3
        if let Some(source) = object(card, "source")? {
            get_str(source, "icon_url")?;
            get_str(source, "desc")?;
            if !matches!(int(source, "desc_color")?, None | Some(0..=3)) {
                return Err((40058, "template_card.source.desc_color must be 0..=3"));
            }
        }

        // main_title.title: required (是) for button_interaction
        let main = object(card, "main_title")?.ok_or((42033, "template_card.main_title.title missing"))?;
        let title = get_str(main, "title")?.unwrap_or("");
        if title.is_empty() {
            return Err((42033, "template_card.main_title.title missing"));
        }
        if chars_over(title, CARD_MAIN_TITLE_MAX_CHARS) {
            return Err((40058, "template_card.main_title.title exceeds 36 characters"));
        }
        if chars_over(get_str(main, "desc")?.unwrap_or(""), CARD_MAIN_DESC_MAX_CHARS) {
            return Err((40058, "template_card.main_title.desc exceeds 44 characters"));
        }
        if chars_over(
            get_str(card, "sub_title_text")?.unwrap_or(""),
            CARD_SUB_TITLE_MAX_CHARS,
        ) {
            return Err((40058, "template_card.sub_title_text exceeds 160 characters"));
        }

        // quote_area: no click (0), or a url (1); no mini programs here
        if let Some(quote) = object(card, "quote_area")? {
            get_str(quote, "title")?;
            get_str(quote, "quote_text")?;
            match int(quote, "type")? {
                None | Some(0) => {}
                Some(1) => link(quote, BAD)?,
                _ => return Err((40058, "template_card.quote_area.type must be 0 or 1")),
            }
        }

        self.check_horizontal_content(card)?;

        // card_action: optional; 0 or absent = no link, 1 = url
        if let Some(action) = object(card, "card_action")? {
            match int(action, "type")? {
                None | Some(0) => {}
                Some(1) => link(action, (42045, "template_card.card_action invalid"))?,
                _ => return Err((42045, "template_card.card_action.type must be 0 or 1")),
            }
        }

        // every EventKey of the card: action_menu keys and button keys, one key space
        let mut keys = BTreeSet::new();
        if object(card, "action_menu")?.is_some() {
            check_action_menu(card, &mut keys)?;
        }
        check_button_selection(card)?;
        check_buttons(card, &mut keys)?;

        match (mode, get_str(card, "replace_text")?) {
            (_, None) => {}
            (CardMode::Send, Some(_)) => {
                return Err((
                    40058,
                    "template_card.replace_text is for update_template_card only",
                ))
            }
            (CardMode::Update { .. }, Some(text)) => {
                if chars_over(text, BUTTON_TEXT_MAX_CHARS) {
                    return Err((40058, "template_card.replace_text exceeds 10 characters"));
                }
            }
        }
        Ok(())
    }

    /// horizontal_content_list: at most 6 rows; keyname (≤ 5 characters) required; value ≤ 30;
    /// type 1 needs a url, 2 a media_id (the fake has none), 3 a directory userid.
    fn check_horizontal_content(&self, card: &Map<String, Value>) -> Result<(), Fail> {
        let rows = array(card, "horizontal_content_list")?;
        if rows.len() > super::CARD_HORIZONTAL_MAX {
            return Err((42035, "template_card.horizontal_content_list exceeds 6"));
        }
        for row in rows {
            let row = row.as_object().ok_or((40058, "invalid parameter type"))?;
            let keyname = get_str(row, "keyname")?.unwrap_or("");
            if keyname.is_empty() {
                return Err((42027, "template_card.horizontal_content_list.keyname missing"));
            }
            if chars_over(keyname, super::CARD_KEYNAME_MAX_CHARS)
                || chars_over(get_str(row, "value")?.unwrap_or(""), super::CARD_VALUE_MAX_CHARS)
            {
                return Err((40058, "horizontal_content_list keyname/value too long"));
            }
            match int(row, "type")? {
                None | Some(0) => {}
                Some(1) => link(row, (40058, "horizontal_content_list url invalid"))?,
                Some(2) => return Err((42029, "template_card.horizontal_content_list.media_id invalid")),
                Some(3) => match get_str(row, "userid")? {
                    Some(u) if self.lookup_user(u).is_some() => {}
                    _ => return Err((42050, "template_card.horizontal_content_list.userid invalid")),
                },
                _ => return Err((40058, "horizontal_content_list.type must be 0..=3")),
            }
        }
        Ok(())
    }
}

/// A `url` the object's type 1 needs: missing 42028, otherwise as message/send checks urls
/// (`invalid` when it is not one).
fn link(obj: &Map<String, Value>, invalid: Fail) -> Result<(), Fail> {
    let url = get_str(obj, "url")?.unwrap_or("");
    if url.is_empty() {
        return Err((42028, "template_card url missing"));
    }
    check_url(url).map_err(|_| invalid)
}

/// action_menu: 1..=3 actions, each with a text and a key (≤ 1024 bytes) no other key of
/// the card has.
fn check_action_menu(card: &Map<String, Value>, keys: &mut BTreeSet<String>) -> Result<(), Fail> {
    let menu = object(card, "action_menu")?.ok_or((40058, "action_menu missing"))?;
    get_str(menu, "desc")?;
    let actions = array(menu, "action_list")?;
    if !(1..=CARD_ACTIONS_MAX).contains(&actions.len()) {
        return Err((
            40058,
            "template_card.action_menu.action_list must hold 1..=3 actions",
        ));
    }
    for action in actions {
        let action = action.as_object().ok_or((40058, "invalid parameter type"))?;
        if get_str(action, "text")?.unwrap_or("").is_empty() {
            return Err((40058, "template_card.action_menu.action_list.text missing"));
        }
        let key = get_str(action, "key")?.unwrap_or("");
        if key.is_empty() || key.len() > CARD_KEY_MAX_BYTES || !keys.insert(key.to_string()) {
            return Err((
                42051,
                "template_card.action_menu.action_list.key missing, too long or repeated",
            ));
        }
    }
    Ok(())
}

/// button_selection: question_key (≤ 1024 bytes), 1..=10 options with distinct ids
/// (≤ 128 bytes) and texts (≤ 16 characters).
fn check_button_selection(card: &Map<String, Value>) -> Result<(), Fail> {
    let Some(selection) = object(card, "button_selection")? else {
        return Ok(());
    };
    let question = get_str(selection, "question_key")?.unwrap_or("");
    if question.is_empty() || question.len() > CARD_KEY_MAX_BYTES {
        return Err((
            42043,
            "template_card.button_selection.question_key missing or too long",
        ));
    }
    get_str(selection, "title")?;
    get_str(selection, "selected_id")?;
    let options = array(selection, "option_list")?;
    if !(1..=CARD_OPTIONS_MAX).contains(&options.len()) {
        return Err((42037, "template_card.option_list must hold 1..=10 options"));
    }
    let mut ids = BTreeSet::new();
    for option in options {
        let option = option.as_object().ok_or((40058, "invalid parameter type"))?;
        let id = get_str(option, "id")?.unwrap_or("");
        if id.is_empty() || id.len() > CARD_OPTION_ID_MAX_BYTES || !ids.insert(id) {
            return Err((
                42040,
                "template_card.option_list.id missing, too long or repeated",
            ));
        }
        let text = get_str(option, "text")?.unwrap_or("");
        if text.is_empty() {
            return Err((42041, "template_card.option_list.text missing"));
        }
        if chars_over(text, CARD_OPTION_TEXT_MAX_CHARS) {
            return Err((40058, "template_card.option_list.text exceeds 16 characters"));
        }
    }
    Ok(())
}

/// button_list: 1..=6 buttons; text 1..=10 characters; style 1..=4; type 0 (callback, key
/// required) or 1 (url required); keys ≤ 1024 bytes and unique among all keys of the card.
fn check_buttons(card: &Map<String, Value>, keys: &mut BTreeSet<String>) -> Result<(), Fail> {
    let buttons = match card.get("button_list") {
        None | Some(Value::Null) => return Err((40058, "template_card.button_list missing")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err((40058, "invalid parameter type")),
    };
    if !(1..=CARD_BUTTONS_MAX).contains(&buttons.len()) {
        return Err((40058, "template_card.button_list must hold 1..=6 buttons"));
    }
    for button in buttons {
        let button = button.as_object().ok_or((40058, "invalid parameter type"))?;
        let text = get_str(button, "text")?.unwrap_or("");
        if text.is_empty() || chars_over(text, BUTTON_TEXT_MAX_CHARS) {
            return Err((
                42038,
                "template_card.button_list.text missing or over 10 characters",
            ));
        }
        if !matches!(int(button, "style")?, None | Some(1..=4)) {
            return Err((40058, "template_card.button_list.style must be 1..=4"));
        }
        let key = get_str(button, "key")?;
        match int(button, "type")? {
            None | Some(0) => {
                if key.unwrap_or("").is_empty() {
                    return Err((42039, "template_card.button_list.key missing"));
                }
            }
            Some(1) => {
                let url = get_str(button, "url")?.unwrap_or("");
                if url.is_empty() {
                    return Err((42028, "template_card.button_list.url missing"));
                }
                check_url(url)?;
            }
            _ => return Err((40058, "template_card.button_list.type must be 0 or 1")),
        }
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            if key.len() > CARD_KEY_MAX_BYTES || !keys.insert(key.to_string()) {
                return Err((42039, "template_card.button_list.key too long or repeated"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Tasks and response codes

impl State {
    /// Registers a card message/send accepted; `delivered` are the members who got it (the
    /// rest of its recipients were silently dropped). Answers the send's response_code.
    pub(super) fn register_card_task(
        &mut self,
        app: usize,
        agent_id: i64,
        task: NewTask,
        delivered: &[String],
    ) -> String {
        let views = delivered.iter().map(|m| (m.clone(), task.card.clone())).collect();
        self.cards.tasks.push(Task {
            app,
            agent_id,
            task_id: task.card["task_id"].as_str().unwrap_or_default().to_string(),
            card_type: task.card["card_type"].as_str().unwrap_or_default().to_string(),
            parties: task.parties,
            tags: task.tags,
            recipients: task.recipients,
            views,
            codes: Vec::new(),
            updates: Vec::new(),
        });
        let index = self.cards.tasks.len() - 1;
        self.issue_code(index, CodeOrigin::Send)
    }

    fn issue_code(&mut self, task: usize, origin: CodeOrigin) -> String {
        let code = loop {
            let code = self.rng.string(64);
            if !self.cards.codes.contains_key(&code) {
                break code;
            }
        };
        let info = CodeInfo {
            app: self.cards.tasks[task].app,
            task,
            issued_at: self.now(),
            used: false,
            origin,
        };
        self.cards.codes.insert(code.clone(), info);
        self.cards.tasks[task].codes.push(code.clone());
        code
    }

    fn task_index(&self, task_id: &str) -> Option<usize> {
        self.cards.tasks.iter().position(|t| t.task_id == task_id)
    }
}

// ---------------------------------------------------------------------------------------
// message/update_template_card ("更新模版卡片消息")

/// Who an update names, resolved against its task.
#[derive(Default)]
struct Targets {
    members: BTreeSet<String>,
    invalid_users: Vec<String>,
    invalid_parties: Vec<String>,
    invalid_tags: Vec<String>,
}

impl Targets {
    fn write_into(&self, v: &mut Value) {
        v["invaliduser"] = json!(self.invalid_users);
        if !self.invalid_parties.is_empty() {
            v["invalidparty"] = json!(self
                .invalid_parties
                .iter()
                .map(|p| p.parse::<i64>().unwrap_or(-1))
                .collect::<Vec<_>>());
        }
        if !self.invalid_tags.is_empty() {
            v["invalidtag"] = json!(self
                .invalid_tags
                .iter()
                .map(|t| t.parse::<i64>().unwrap_or(-1))
                .collect::<Vec<_>>());
        }
    }
}

/// What an update does to each member's card.
enum Change {
    Grey(String),
    Replace(Value),
}

impl State {
    fn update_template_card(&mut self, req: &HttpRequest, raw: &[u8]) -> Value {
        match self.update_inner(req, raw) {
            Ok(v) => v,
            Err((code, msg, extra)) => {
                let mut v = self.error(code, msg);
                if let (Some(extra), Some(obj)) = (extra, v.as_object_mut()) {
                    if let Some(fields) = extra.as_object() {
                        obj.extend(fields.clone());
                    }
                }
                v
            }
        }
    }

    fn update_inner(&mut self, req: &HttpRequest, raw: &[u8]) -> Result<Value, Rejected> {
        if req.method() != Method::POST {
            return Err((43002, "require POST method", None));
        }
        // token and body, as message/send; members are counted as of now (receipt)
        let app = self.check_token(req).map_err(plain)?;
        let stamp = self.stamp();
        let body: Value = serde_json::from_slice(raw).map_err(|_| (47001, "data format error", None))?;
        let obj = body.as_object().ok_or((47001, "data format error", None))?;
        let agent_id = match obj.get("agentid") {
            None | Some(Value::Null) => return Err((41011, "agentid missing", None)),
            Some(v) => v.as_i64().ok_or((40056, "invalid agentid", None))?,
        };
        let corp = &self.apps[app].corp_id;
        let agent_app = self
            .apps
            .iter()
            .position(|a| &a.corp_id == corp && a.agent_id == agent_id)
            .ok_or((40056, "invalid agentid", None))?;
        if agent_app != app {
            return Err((301002, "access_token and agentid mismatch", None));
        }

        // the code: this app's, unused, younger than 72 h; consumed from here on, whatever
        // the rest of the call turns out to be
        let code = get_str(obj, "response_code")
            .map_err(plain)?
            .filter(|c| !c.is_empty())
            .ok_or((60140, "invalid response_code", None))?
            .to_string();
        let now = stamp.at;
        let info = self
            .cards
            .codes
            .get_mut(&code)
            .ok_or((60140, "invalid response_code", None))?;
        if info.app != app {
            return Err((42015, "response_code belongs to another app", None));
        }
        if info.used {
            return Err((60140, "invalid response_code, already used", None));
        }
        if now.duration_since(info.issued_at) >= RESPONSE_CODE_LIFETIME {
            return Err((60140, "invalid response_code, expired", None));
        }
        info.used = true;
        let (task, origin) = (info.task, info.origin.clone());

        let mut record = CardUpdate {
            body: body.clone(),
            raw: String::from_utf8_lossy(raw).into_owned(),
            response_code: code,
            code_origin: origin,
            errcode: 0,
            applied_to: Vec::new(),
            dropped_for: Vec::new(),
            skipped: Vec::new(),
            invalid_users: Vec::new(),
            invalid_parties: Vec::new(),
            invalid_tags: Vec::new(),
        };
        let outcome = self.apply_update(app, task, obj, stamp, &mut record);
        record.errcode = match &outcome {
            Ok(_) => 0,
            Err((code, _, _)) => *code,
        };
        self.cards.tasks[task].updates.push(record);
        outcome
    }

    /// The part of an update after its code was consumed. Fills `record` with what it did.
    fn apply_update(
        &mut self,
        app: usize,
        task: usize,
        obj: &Map<String, Value>,
        stamp: Stamp,
        record: &mut CardUpdate,
    ) -> Result<Value, Rejected> {
        flag(obj, "enable_id_trans").map_err(plain)?;
        let button = object(obj, "button").map_err(plain)?;
        let card = object(obj, "template_card").map_err(plain)?;
        let change = match (button, card) {
            (Some(_), Some(_)) => {
                return Err((40058, "button and template_card are mutually exclusive", None))
            }
            (None, None) => return Err((40058, "button or template_card required", None)),
            (Some(button), None) => {
                let name = get_str(button, "replace_name").map_err(plain)?.unwrap_or("");
                if name.is_empty() {
                    return Err((42020, "button.replace_name missing", None));
                }
                if chars_over(name, BUTTON_TEXT_MAX_CHARS) {
                    return Err((40058, "button.replace_name exceeds 10 characters", None));
                }
                if self.cards.tasks[task].card_type != "button_interaction" {
                    return Err((40058, "button can only be updated on interaction cards", None));
                }
                Change::Grey(name.to_string())
            }
            (None, Some(card)) => {
                let task_id = self.cards.tasks[task].task_id.clone();
                match get_str(card, "card_type").map_err(plain)? {
                    Some("button_interaction") => self
                        .check_button_interaction(card, CardMode::Update { task_id: &task_id })
                        .map_err(plain)?,
                    Some("text_notice") => {
                        let mut wrapped = Map::new();
                        wrapped.insert("template_card".into(), Value::Object(card.clone()));
                        check_template_card(&wrapped).map_err(plain)?;
                        if object(card, "action_menu").map_err(plain)?.is_some() {
                            check_action_menu(card, &mut BTreeSet::new()).map_err(plain)?;
                        }
                        if get_str(card, "task_id").map_err(plain)?.is_some_and(|t| t != task_id) {
                            return Err((42014, "template_card.task_id is not the card's task_id", None));
                        }
                    }
                    _ => return Err((42031, "template_card.card_type invalid (the fake models button_interaction and text_notice)", None)),
                }
                Change::Replace(Value::Object(card.clone()))
            }
        };

        let targets = self.update_targets(task, obj)?;
        record.invalid_users = targets.invalid_users.clone();
        record.invalid_parties = targets.invalid_parties.clone();
        record.invalid_tags = targets.invalid_tags.clone();

        // per member: something to change? within the per-member limits? then change it
        for member in &targets.members {
            let changeable = match self.cards.tasks[task].views.get(member) {
                None => false,
                Some(view) => match &change {
                    Change::Grey(_) => {
                        view.get("card_type").and_then(Value::as_str) == Some("button_interaction")
                    }
                    Change::Replace(_) => true,
                },
            };
            if !changeable {
                record.skipped.push(member.clone());
                continue;
            }
            if !self.admit_member(app, member, stamp) {
                record.dropped_for.push(member.clone());
                continue;
            }
            let view = self.cards.tasks[task]
                .views
                .get_mut(member)
                .expect("checked above");
            *view = match &change {
                Change::Grey(name) => greyed(view, name),
                Change::Replace(card) => replacement_view(card),
            };
            record.applied_to.push(member.clone());
        }

        let mut ok = json!({"errcode": 0, "errmsg": "ok"});
        targets.write_into(&mut ok);
        Ok(ok)
    }

    /// userids / partyids / tagids / atall against the task's recipients.
    fn update_targets(&self, task: usize, obj: &Map<String, Value>) -> Result<Targets, Rejected> {
        let task = &self.cards.tasks[task];
        let atall = flag(obj, "atall").map_err(plain)? == 1;
        let list = |key: &str, strings: bool| -> Result<Vec<String>, Rejected> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) if strings => Ok(s.clone()),
                        Value::Number(n) if !strings && n.is_u64() => Ok(n.to_string()),
                        _ => Err((40058, "invalid parameter type", None)),
                    })
                    .collect(),
                Some(_) => Err((40058, "invalid parameter type", None)),
            }
        };
        let users = list("userids", true)?;
        let parties = list("partyids", false)?;
        let tags = list("tagids", false)?;
        if users.len() > MAX_USERS {
            return Err((40032, "invalid size of userid list", None));
        }
        if parties.len() > MAX_PARTIES {
            return Err((82002, "invalid size of partyid list", None));
        }
        if tags.len() > MAX_TAGS {
            return Err((82003, "invalid size of tagid list", None));
        }

        let mut targets = Targets::default();
        if atall {
            targets.members = task.recipients.clone();
            return Ok(targets);
        }
        if users.is_empty() && parties.is_empty() && tags.is_empty() {
            return Err((82001, "all userids & partyids & tagids empty", None));
        }
        let mut any_valid = false;
        for u in &users {
            match self.lookup_user(u).filter(|c| task.recipients.contains(c)) {
                Some(member) => {
                    any_valid = true;
                    targets.members.insert(member);
                }
                None => super::push_unique(&mut targets.invalid_users, u.to_lowercase()),
            }
        }
        for p in &parties {
            if task.parties.contains(p) {
                any_valid = true;
                let mut reach = super::Reach::default();
                self.party_reach(p, &mut reach);
                targets
                    .members
                    .extend(reach.members.into_iter().filter(|m| task.recipients.contains(m)));
            } else {
                super::push_unique(&mut targets.invalid_parties, p.clone());
            }
        }
        for t in &tags {
            if task.tags.contains(t) {
                any_valid = true;
                let reach = self.reach(&[], &[], std::slice::from_ref(t));
                targets
                    .members
                    .extend(reach.members.into_iter().filter(|m| task.recipients.contains(m)));
            } else {
                super::push_unique(&mut targets.invalid_tags, t.clone());
            }
        }
        if !any_valid {
            let mut lists = json!({});
            targets.write_into(&mut lists);
            return Err((81013, "userids & partyids & tagids all invalid", Some(lists)));
        }
        Ok(targets)
    }
}

pub(super) async fn update_template_card_handler(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let fault = {
        let mut st = shared.lock();
        st.cards.update_calls += 1;
        st.cards.update_faults.pop_front()
    };
    let reply = match apply_fault(fault).await {
        Some(r) => r,
        None => Reply::Json(shared.lock().update_template_card(&req, &body)),
    };
    let resp = finish(&shared, Endpoint::UpdateTemplateCard, &req, &body, reply);
    answer_later(&shared).await;
    resp
}

// ---------------------------------------------------------------------------------------
// Clicks and the callback URL ("接收消息与事件", "回调配置")

impl State {
    fn callback_timeout(&self) -> Duration {
        self.cards.callback_timeout.unwrap_or(CALLBACK_TIMEOUT)
    }

    /// The first app with this agent id and its callback configuration.
    fn callback_of(&self, agent_id: i64) -> Result<(usize, CallbackConfig), String> {
        let app = self
            .apps
            .iter()
            .position(|a| a.agent_id == agent_id)
            .ok_or_else(|| format!("no app with agent id {agent_id}"))?;
        let callback = self.apps[app]
            .callback
            .clone()
            .ok_or_else(|| format!("app {agent_id} has no callback URL (set_callback)"))?;
        Ok((app, callback))
    }

    /// Checks a click and builds its event (issuing the ResponseCode it carries).
    fn prepare_click(
        &mut self,
        task_id: &str,
        user: &str,
        event_key: &str,
    ) -> Result<(PreparedEvent, String, i64), String> {
        let ti = self
            .task_index(task_id)
            .ok_or_else(|| format!("no card task {task_id:?}"))?;
        let member = self
            .lookup_user(user)
            .ok_or_else(|| format!("{user:?} is not in the directory"))?;
        let task = &self.cards.tasks[ti];
        let view = task.views.get(&member).ok_or_else(|| {
            format!("{member} did not receive card {task_id} (not a recipient, or silently dropped)")
        })?;
        if !clickable_keys(view).iter().any(|k| k == event_key) {
            return Err(format!(
                "{event_key:?} is not a clickable button of card {task_id} as {member} sees it"
            ));
        }
        // a selection box on the card: its current choice travels with the click
        let selection = view.get("button_selection").map(|s| {
            let chosen = s
                .get("option_list")
                .and_then(Value::as_array)
                .and_then(|options| {
                    let selected = s.get("selected_id").and_then(Value::as_str);
                    options
                        .iter()
                        .filter_map(|o| o.get("id").and_then(Value::as_str))
                        .find(|id| Some(*id) == selected)
                        .or_else(|| options.first()?.get("id")?.as_str())
                })
                .unwrap_or_default()
                .to_string();
            let question = s["question_key"].as_str().unwrap_or_default().to_string();
            (question, chosen)
        });
        let card_type = view["card_type"].as_str().unwrap_or_default().to_string();
        let (app, agent_id) = (task.app, task.agent_id);
        let callback = self.apps[app]
            .callback
            .clone()
            .ok_or_else(|| format!("app {agent_id} has no callback URL"))?;
        let corp_id = self.apps[app].corp_id.clone();
        let code = self.issue_code(
            ti,
            CodeOrigin::Click {
                user: member.clone(),
                event_key: event_key.to_string(),
            },
        );
        let create_time = (self.wall_nanos().div_euclid(1_000_000_000)) as i64;
        let mut xml = format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName>\
             <CreateTime>{create_time}</CreateTime><MsgType>{}</MsgType><Event>{}</Event>\
             <EventKey>{}</EventKey><TaskId>{}</TaskId><CardType>{}</CardType>\
             <ResponseCode>{}</ResponseCode><AgentID>{agent_id}</AgentID>",
            cdata(&corp_id),
            cdata(&member),
            cdata("event"),
            cdata("template_card_event"),
            cdata(event_key),
            cdata(task_id),
            cdata(&card_type),
            cdata(&code),
        );
        if let Some((question, chosen)) = selection {
            xml.push_str(&format!(
                "<SelectedItems><SelectedItem><QuestionKey>{}</QuestionKey><OptionIds><OptionId>{}</OptionId></OptionIds></SelectedItem></SelectedItems>",
                cdata(&question),
                cdata(&chosen)
            ));
        }
        xml.push_str("</xml>");
        Ok((
            PreparedEvent {
                callback,
                corp_id,
                agent_id,
                xml,
            },
            code,
            create_time,
        ))
    }

    /// A fresh request for `xml`: `(query, body)` with a new timestamp (WeCom's wall clock),
    /// nonce, random prefix, ciphertext and signature.
    fn seal(
        &mut self,
        callback: &CallbackConfig,
        corp_id: &str,
        agent_id: i64,
        xml: &str,
    ) -> (String, Vec<u8>) {
        let timestamp = self.wall_nanos().div_euclid(1_000_000_000).to_string();
        let nonce = (1_000_000_000 + self.rng.next_u64() % 9_000_000_000).to_string();
        let mut random = [0u8; 16];
        for chunk in random.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        let encrypt = callback_encrypt(&callback.encoding_aes_key, corp_id, xml.as_bytes(), random)
            .expect("key checked by set_callback");
        let signature = callback_signature(&callback.token, &timestamp, &nonce, &encrypt);
        let query = format!("msg_signature={signature}&timestamp={timestamp}&nonce={nonce}");
        let body = format!(
            "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt><AgentID>{}</AgentID></xml>",
            cdata(corp_id),
            cdata(&encrypt),
            cdata(&agent_id.to_string())
        );
        (query, body.into_bytes())
    }
}

/// `url` plus `query`, after the url's own query if it has one.
fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// The path-and-query part of an absolute URL (`/` when it has no path).
fn path_and_query(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => "/".to_string(),
    }
}

fn origin(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

/// One request to the callback URL, given up after `timeout`.
async fn exchange(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Vec<u8>,
    timeout: Duration,
) -> CallbackDelivery {
    let path_and_query = path_and_query(&url);
    let started = Instant::now();
    let mut request = client.request(method.clone(), &url);
    if method == reqwest::Method::POST {
        request = request
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(body.clone());
    }
    let attempt = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok::<_, reqwest::Error>((status, text))
    };
    let (status, timed_out, error, response_body) = match tokio::time::timeout(timeout, attempt).await {
        Err(_) => (None, true, None, String::new()),
        Ok(Err(e)) => (None, false, Some(e.to_string()), String::new()),
        Ok(Ok((status, text))) => (Some(status), false, None, text),
    };
    CallbackDelivery {
        path_and_query,
        body,
        status,
        timed_out,
        error,
        response_body,
        elapsed: started.elapsed(),
    }
}

fn http_client() -> reqwest::Client {
    // the callback URL is on loopback in tests: no proxy from the environment may intercept it
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("fake WeCom: HTTP client")
}

// ---------------------------------------------------------------------------------------
// The test-facing API

impl FakeWeCom {
    /// What the admin console's "API接收" saves for the app with this agent id (the first app
    /// registered with it): the callback URL, Token and EncodingAESKey. Messages to it are
    /// encrypted with the app's corp id as receive id. Panics for an unknown agent id, a url
    /// that is not http(s), a Token that is not 1..=32 letters and digits, or an
    /// EncodingAESKey that is not 43 letters and digits (the console refuses them). Setting it
    /// again replaces it. WeCom verifies the URL before saving; here that is
    /// [`FakeWeCom::verify_callback_url`], on demand.
    pub fn set_callback(&self, agent_id: i64, url: &str, token: &str, encoding_aes_key: &str) {
        assert!(
            check_url(url).is_ok(),
            "fake WeCom set_callback: {url:?} is not an http(s) URL"
        );
        assert!(
            (1..=CALLBACK_TOKEN_MAX_CHARS).contains(&token.len())
                && token.bytes().all(|b| b.is_ascii_alphanumeric()),
            "fake WeCom set_callback: Token must be 1..=32 letters and digits, got {token:?}"
        );
        if let Err(e) = callback_aes_key(encoding_aes_key) {
            panic!("fake WeCom set_callback: {e}");
        }
        let mut st = self.shared.lock();
        let app = st
            .apps
            .iter_mut()
            .find(|a| a.agent_id == agent_id)
            .unwrap_or_else(|| {
                panic!("fake WeCom set_callback: no app with agent id {agent_id} (call add_app first)")
            });
        app.callback = Some(CallbackConfig {
            url: url.to_string(),
            token: token.to_string(),
            encoding_aes_key: encoding_aes_key.to_string(),
        });
    }

    /// How long a click's delivery waits for HTTP 200 before WeCom delivers it again
    /// (default [`CALLBACK_TIMEOUT`], 5 s). Also the timeout of
    /// [`FakeWeCom::post_callback_raw`]; URL verification keeps its 1 s.
    pub fn set_callback_timeout(&self, timeout: Duration) {
        self.shared.lock().cards.callback_timeout = Some(timeout);
    }

    /// Faults for the next calls of message/update_template_card, FIFO.
    pub fn inject_update_faults(&self, faults: Vec<Fault>) {
        self.shared.lock().cards.update_faults.extend(faults);
    }

    /// Requests received by message/update_template_card (including failed and faulted ones).
    pub fn update_calls(&self) -> usize {
        self.shared.lock().cards.update_calls
    }

    /// task_id of every button_interaction card accepted, in send order.
    pub fn card_tasks(&self) -> Vec<String> {
        self.shared
            .lock()
            .cards
            .tasks
            .iter()
            .map(|t| t.task_id.clone())
            .collect()
    }

    /// The card of this task as this member (matched case-insensitively) sees it now: the
    /// `template_card` JSON as sent or last replaced; after `button.replace_name` or a
    /// replacement with `replace_text`, without `button_list` and with
    /// `"button_replaced": "<text>"`. `None` if the member never got it (not a recipient, or
    /// dropped by the per-member limit) or there is no such task.
    pub fn card_view(&self, task_id: &str, user: &str) -> Option<Value> {
        let st = self.shared.lock();
        let member = st.lookup_user(user)?;
        let task = &st.cards.tasks[st.task_index(task_id)?];
        task.views.get(&member).cloned()
    }

    /// Members who got the card of this task (directory spelling, sorted).
    pub fn card_members(&self, task_id: &str) -> Vec<String> {
        let st = self.shared.lock();
        st.task_index(task_id)
            .map(|i| st.cards.tasks[i].views.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every update call that consumed a code of this task, in order.
    pub fn card_updates(&self, task_id: &str) -> Vec<CardUpdate> {
        let st = self.shared.lock();
        st.task_index(task_id)
            .map(|i| st.cards.tasks[i].updates.clone())
            .unwrap_or_default()
    }

    /// Every response_code issued for this task (the send's first, then one per click).
    pub fn response_codes_issued(&self, task_id: &str) -> Vec<String> {
        let st = self.shared.lock();
        st.task_index(task_id)
            .map(|i| st.cards.tasks[i].codes.clone())
            .unwrap_or_default()
    }

    /// A member clicks a button: refused (nothing posted) unless the member got the card and
    /// `event_key` is a clickable button of it as they see it now; otherwise a fresh
    /// ResponseCode is issued and the `template_card_event` is delivered to the app's
    /// callback URL, again after a timeout or a non-200 answer, up to 3 more times.
    pub async fn click(&self, task_id: &str, user: &str, event_key: &str) -> ClickResult {
        let prepared = self.shared.lock().prepare_click(task_id, user, event_key);
        let (event, code, create_time) = match prepared {
            Ok(p) => p,
            Err(reason) => return ClickResult::refused(reason),
        };
        let client = http_client();
        let mut deliveries = Vec::new();
        for _ in 0..=CALLBACK_RETRIES {
            let (query, body, timeout) = {
                let mut st = self.shared.lock();
                let (query, body) = st.seal(&event.callback, &event.corp_id, event.agent_id, &event.xml);
                let url = with_query(&event.callback.url, &query);
                st.cards
                    .last_callback
                    .insert(event.agent_id, (path_and_query(&url), body.clone()));
                (query, body, st.callback_timeout())
            };
            let url = with_query(&event.callback.url, &query);
            let delivery = exchange(&client, reqwest::Method::POST, url, body, timeout).await;
            let done = delivery.acknowledged();
            deliveries.push(delivery);
            if done {
                break;
            }
        }
        ClickResult {
            posted: true,
            refused: None,
            response_code: Some(code),
            create_time: Some(create_time),
            event_xml: Some(event.xml),
            deliveries,
        }
    }

    /// The last event POSTed to this app's callback URL: (path and query, body), to replay it
    /// byte for byte with [`FakeWeCom::post_callback_raw`].
    pub fn last_callback(&self, agent_id: i64) -> Option<(String, Vec<u8>)> {
        self.shared.lock().cards.last_callback.get(&agent_id).cloned()
    }

    /// POSTs `body` to the app's callback server: to its origin plus `path_and_query`, or,
    /// when `path_and_query` starts with `?`, to the callback URL itself with that query
    /// appended. Answers (status, body); status 0 and the error text when no answer came
    /// within the callback timeout or the connection failed. Not recorded as a delivery.
    pub async fn post_callback_raw(
        &self,
        agent_id: i64,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let (callback, timeout) = {
            let st = self.shared.lock();
            let (_, callback) = st
                .callback_of(agent_id)
                .unwrap_or_else(|e| panic!("fake WeCom post_callback_raw: {e}"));
            (callback, st.callback_timeout())
        };
        let url = match path_and_query.strip_prefix('?') {
            Some(query) => with_query(&callback.url, query),
            None => format!("{}{path_and_query}", origin(&callback.url)),
        };
        let d = exchange(&http_client(), reqwest::Method::POST, url, body, timeout).await;
        match d.status {
            Some(status) => (status, d.response_body),
            None if d.timed_out => (0, format!("no answer within {timeout:?}")),
            None => (0, d.error.unwrap_or_default()),
        }
    }

    /// A correctly encrypted and signed request for arbitrary inner XML, as WeCom would send
    /// it to this app now: (query string without `?`, body). Post it with
    /// `post_callback_raw(agent_id, &format!("?{query}"), body)`.
    pub fn encrypt_for(&self, agent_id: i64, xml: &str) -> (String, Vec<u8>) {
        let mut st = self.shared.lock();
        let (app, callback) = st
            .callback_of(agent_id)
            .unwrap_or_else(|e| panic!("fake WeCom encrypt_for: {e}"));
        let corp_id = st.apps[app].corp_id.clone();
        st.seal(&callback, &corp_id, agent_id, xml)
    }

    /// What the admin console does when the callback URL is saved: a GET with
    /// `msg_signature`, `timestamp`, `nonce` and `echostr` (the URL-encoded ciphertext of a
    /// random 19-digit string). Ok when the answer is HTTP 200 with exactly that string as its
    /// body within [`VERIFY_TIMEOUT`] (1 s); Err says what was wrong.
    pub async fn verify_callback_url(&self, agent_id: i64) -> Result<(), String> {
        let (url, echo) = {
            let mut st = self.shared.lock();
            let (app, callback) = st.callback_of(agent_id)?;
            let corp_id = st.apps[app].corp_id.clone();
            let echo = format!(
                "{}",
                1_000_000_000_000_000_000 + st.rng.next_u64() % 8_000_000_000_000_000_000
            );
            let timestamp = st.wall_nanos().div_euclid(1_000_000_000).to_string();
            let nonce = (1_000_000_000 + st.rng.next_u64() % 9_000_000_000).to_string();
            let mut random = [0u8; 16];
            for chunk in random.chunks_mut(8) {
                chunk.copy_from_slice(&st.rng.next_u64().to_le_bytes());
            }
            let echostr = callback_encrypt(&callback.encoding_aes_key, &corp_id, echo.as_bytes(), random)?;
            let signature = callback_signature(&callback.token, &timestamp, &nonce, &echostr);
            let query = format!(
                "msg_signature={signature}&timestamp={timestamp}&nonce={nonce}&echostr={}",
                url_encode(&echostr)
            );
            (with_query(&callback.url, &query), echo)
        };
        let d = exchange(
            &http_client(),
            reqwest::Method::GET,
            url,
            Vec::new(),
            VERIFY_TIMEOUT,
        )
        .await;
        match d.status {
            None if d.timed_out => Err(format!("no answer within {VERIFY_TIMEOUT:?}")),
            None => Err(format!("request failed: {}", d.error.unwrap_or_default())),
            Some(200) if d.response_body == echo => Ok(()),
            Some(200) => Err(format!(
                "answered {:?} instead of exactly the decrypted echostr {echo:?}",
                d.response_body
            )),
            Some(status) => Err(format!("answered HTTP {status}")),
        }
    }
}
