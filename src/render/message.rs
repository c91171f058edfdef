//! The content of a WeCom app message, per msgtype, as it goes on the wire.

use serde_json::{json, Value};

use crate::config::MsgType;

/// Rendered and fitted message content; recipients and agent id are added at delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageContent {
    Text {
        content: String,
    },
    Markdown {
        content: String,
    },
    MarkdownV2 {
        content: String,
    },
    Textcard {
        title: String,
        description: String,
        url: String,
        btntxt: String,
    },
    /// A `text_notice` card, already fitted.
    TemplateCard {
        card: Value,
    },
}

impl MessageContent {
    pub fn msgtype(&self) -> MsgType {
        match self {
            MessageContent::Text { .. } => MsgType::Text,
            MessageContent::Markdown { .. } => MsgType::Markdown,
            MessageContent::MarkdownV2 { .. } => MsgType::MarkdownV2,
            MessageContent::Textcard { .. } => MsgType::Textcard,
            MessageContent::TemplateCard { .. } => MsgType::TemplateCard,
        }
    }

    /// The msgtype-specific object of a `message/send` body, e.g. `{"content": …}`.
    pub fn body(&self) -> Value {
        match self {
            MessageContent::Text { content }
            | MessageContent::Markdown { content }
            | MessageContent::MarkdownV2 { content } => {
                json!({ "content": content })
            }
            MessageContent::Textcard {
                title,
                description,
                url,
                btntxt,
            } => json!({ "title": title, "description": description, "url": url, "btntxt": btntxt }),
            MessageContent::TemplateCard { card } => card.clone(),
        }
    }

    /// The size in UTF-8 bytes of each field WeCom limits, for previews.
    pub fn sizes(&self) -> Vec<(&'static str, usize)> {
        match self {
            MessageContent::Text { content }
            | MessageContent::Markdown { content }
            | MessageContent::MarkdownV2 { content } => vec![("content", content.len())],
            MessageContent::Textcard {
                title,
                description,
                url,
                ..
            } => vec![
                ("title", title.len()),
                ("description", description.len()),
                ("url", url.len()),
            ],
            MessageContent::TemplateCard { card } => vec![("card", card.to_string().len())],
        }
    }
}
