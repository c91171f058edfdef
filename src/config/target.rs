//! Where messages go: the kinds of delivery target, the msgtypes each accepts, and the
//! `robots:` section. How a target sends is `deliver::target`'s business; this file only
//! knows what an operator may configure.

use std::collections::HashSet;

use super::file::RobotSection;
use super::secrets::{SecretKind, Secrets};
use super::storm::{validate_rate_limit, RateLimit};
use super::{normalize_api_url, Problem, Problems};
use crate::secret::Secret;

/// A WeCom message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    Text,
    Markdown,
    Textcard,
    /// Group robots only: markdown with tables and code blocks, no colours or mentions.
    MarkdownV2,
    /// Apps: a `text_notice` card, rendered from a template that produces its JSON.
    TemplateCard,
}

impl MsgType {
    /// The built-in template of storm digests in this msgtype (`templates/digest/`).
    pub fn builtin_digest_template(self) -> String {
        format!("digest/{}", self.as_str())
    }

    pub const ALL: [MsgType; 5] = [
        MsgType::Text,
        MsgType::Markdown,
        MsgType::Textcard,
        MsgType::MarkdownV2,
        MsgType::TemplateCard,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MsgType::Text => "text",
            MsgType::Markdown => "markdown",
            MsgType::Textcard => "textcard",
            MsgType::MarkdownV2 => "markdown_v2",
            MsgType::TemplateCard => "template_card",
        }
    }

    pub(crate) fn parse(value: &str) -> Option<MsgType> {
        MsgType::ALL.into_iter().find(|t| t.as_str() == value)
    }
}

/// The kinds of place a route can send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// App messages (`message/send`) to users, parties and tags.
    App,
    /// A group robot's chat (`webhook/send`).
    Robot,
    /// An app group chat (`appchat/send`), posted to through an app.
    Chat,
}

impl TargetKind {
    pub const ALL: [TargetKind; 3] = [TargetKind::App, TargetKind::Robot, TargetKind::Chat];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::App => "app",
            TargetKind::Robot => "robot",
            TargetKind::Chat => "chat",
        }
    }

    /// The msgtypes WeCom accepts from this kind of target that we render
    /// (docs/wecom-api.md#message-limits, #group-robots, #app-group-chats).
    pub fn msgtypes(self) -> &'static [MsgType] {
        match self {
            TargetKind::App => &[
                MsgType::Text,
                MsgType::Markdown,
                MsgType::Textcard,
                MsgType::TemplateCard,
            ],
            TargetKind::Robot => &[MsgType::Text, MsgType::Markdown, MsgType::MarkdownV2],
            TargetKind::Chat => &[MsgType::Text, MsgType::Markdown, MsgType::Textcard],
        }
    }

    /// `text, markdown, …`, for messages.
    pub fn msgtype_list(self) -> String {
        let names: Vec<&str> = self.msgtypes().iter().map(|t| t.as_str()).collect();
        names.join(", ")
    }
}

/// Where a route's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A WeCom app, by name, to the route's recipients.
    App { app: String },
    /// A group robot of the `robots:` section, by name.
    Robot { robot: String },
    /// An app group chat, through the app that created it.
    Chat {
        app: String,
        chat_id: String,
        /// `app/chat_id`: names the chat in metrics and logs.
        name: String,
    },
}

impl Target {
    pub fn chat(app: String, chat_id: String) -> Target {
        Target::Chat {
            name: format!("{app}/{chat_id}"),
            app,
            chat_id,
        }
    }

    pub fn kind(&self) -> TargetKind {
        match self {
            Target::App { .. } => TargetKind::App,
            Target::Robot { .. } => TargetKind::Robot,
            Target::Chat { .. } => TargetKind::Chat,
        }
    }

    /// The target's name in metrics and logs.
    pub fn name(&self) -> &str {
        match self {
            Target::App { app } => app,
            Target::Robot { robot } => robot,
            Target::Chat { name, .. } => name,
        }
    }
}

/// A group robot: its webhook key is the credential.
#[derive(Debug, Clone)]
pub struct RobotConfig {
    pub name: String,
    /// `None` when no key is configured: the robot runs in dry-run mode.
    pub key: Option<Secret>,
    /// Base URL of the WeCom API, ending in `/`.
    pub api_url: String,
    pub rate_limit: RateLimit,
}

/// Validates `robots:`: names unique among robots and apps, keys read. Each robot's first
/// mistake goes to `problems`; the valid robots are returned.
pub(crate) fn validate_robots(
    raw: Vec<RobotSection>,
    app_names: &HashSet<String>,
    api_url: &str,
    secrets: &Secrets,
    problems: &mut Problems,
) -> Vec<RobotConfig> {
    let mut names = HashSet::new();
    let mut robots = Vec::with_capacity(raw.len());
    for (i, robot) in raw.into_iter().enumerate() {
        if let Some(robot) = problems.check(validate_robot(robot, i, &mut names, app_names, api_url, secrets))
        {
            robots.push(robot);
        }
    }
    robots
}

fn validate_robot(
    robot: RobotSection,
    i: usize,
    names: &mut HashSet<String>,
    app_names: &HashSet<String>,
    api_url: &str,
    secrets: &Secrets,
) -> Result<RobotConfig, Problem> {
    let prefix = format!("robots[{i}]");
    let key = |field: &str| format!("{prefix}.{field}");
    if robot.name.trim().is_empty() {
        return Err((key("name"), "must not be empty".to_string()).into());
    }
    if app_names.contains(&robot.name) {
        return Err((
            key("name"),
            format!("{:?} is already the name of an app", robot.name),
        )
            .into());
    }
    if !names.insert(robot.name.clone()) {
        return Err((key("name"), format!("duplicate robot name {:?}", robot.name)).into());
    }
    let secret = secrets.read(&prefix, "key", robot.key, robot.key_file, SecretKind::Opaque)?;
    let api_url = match &robot.api_url {
        Some(url) => normalize_api_url(url).map_err(|m| (key("api_url"), m))?,
        None => api_url.to_string(),
    };
    let rate_limit = validate_rate_limit(robot.rate_limit, RateLimit::ROBOT, &key("rate_limit"))?;
    Ok(RobotConfig {
        rate_limit,
        name: robot.name,
        key: secret,
        api_url,
    })
}

/// WeCom's rule for a chat id: 1 to 32 characters of `[0-9a-zA-Z]`
/// (docs/wecom-api.md#app-group-chats).
pub fn check_chat_id(chat_id: &str) -> Result<(), String> {
    if chat_id.is_empty() || chat_id.len() > 32 || !chat_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "{chat_id:?} is not a WeCom chat id (1 to 32 letters and digits)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids_follow_wecoms_format() {
        assert!(check_chat_id("wrkSFfCgAAxxxx1234").is_ok());
        assert!(check_chat_id(&"a".repeat(32)).is_ok());
        for bad in ["", "has-dash", "has space", "中文", &"a".repeat(33)] {
            assert!(check_chat_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_kind_accepts_text_and_lists_its_msgtypes_once() {
        for kind in TargetKind::ALL {
            assert!(kind.msgtypes().contains(&MsgType::Text), "{kind:?}");
            assert_eq!(kind.msgtype_list().split(", ").count(), kind.msgtypes().len());
        }
        assert!(TargetKind::App.msgtype_list().contains("template_card"));
    }
}
