//! Validation of the `routes:` section.

use std::collections::HashSet;

use super::file::{RecipientsSection, RouteSection};
use super::interactive::validate_buttons;
use super::target::check_chat_id;
use super::{
    clean_ids, sorted_names, Mentions, MsgType, Problems, Recipients, RouteConfig, Target, TargetKind,
};
use crate::model::matcher::parse_matchers;

/// What route validation needs from the rest of the file.
pub struct Context<'a> {
    pub app_names: &'a HashSet<String>,
    /// Apps with a callback URL: only they may send cards with buttons.
    pub callback_apps: &'a HashSet<String>,
    pub robot_names: &'a HashSet<String>,
    pub max_messages: usize,
}

type Invalid = (String, String);

/// The built-in template of routes with buttons.
pub const BUTTONS_TEMPLATE: &str = "button_interaction";

/// Validates each route; each one's first mistake goes to `problems` and the valid routes
/// are returned.
pub(crate) fn validate_routes(
    raw: Vec<RouteSection>,
    context: &Context,
    problems: &mut Problems,
) -> Vec<RouteConfig> {
    let mut routes = Vec::with_capacity(raw.len());
    let mut route_names = HashSet::new();
    for (i, route) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        // Names are compared as written, so a later route with a mistake of its own is
        // still found to repeat a name, and a repeated name does not hide its other mistakes.
        let repeated = !route.name.trim().is_empty() && !route_names.insert(route.name.clone());
        if repeated {
            problems.add((key("name"), format!("duplicate route name {:?}", route.name)));
        }
        if let Some(route) = problems.check(validate_route(route, &key, context)) {
            if !repeated {
                routes.push(route);
            }
        }
    }
    routes
}

/// The route's target from `app`, `chat` and `robot`.
fn validate_target(
    route: &RouteSection,
    key: &dyn Fn(&str) -> String,
    context: &Context,
) -> Result<Target, Invalid> {
    let known_app = |app: &String| -> Result<(), Invalid> {
        if context.app_names.contains(app) {
            Ok(())
        } else {
            Err((
                key("app"),
                format!("no app named {app:?} (apps: {})", sorted_names(context.app_names)),
            ))
        }
    };
    match (&route.app, &route.chat, &route.robot) {
        (Some(_), _, Some(_)) => Err((key("robot"), "set either app or robot, not both".into())),
        (None, Some(_), _) => Err((
            key("chat"),
            "a chat is posted to through the app that created it: add `app:`".into(),
        )),
        (None, None, None) => Err((key("app"), "needs an app (or a robot) to send through".into())),
        (Some(app), None, None) => known_app(app).map(|()| Target::App { app: app.clone() }),
        (Some(app), Some(chat), None) => {
            known_app(app)?;
            check_chat_id(chat).map_err(|m| (key("chat"), m))?;
            Ok(Target::chat(app.clone(), chat.clone()))
        }
        (None, None, Some(robot)) => {
            if !context.robot_names.contains(robot) {
                let known = if context.robot_names.is_empty() {
                    "none: declare it under the top-level `robots:`".to_string()
                } else {
                    sorted_names(context.robot_names)
                };
                return Err((
                    key("robot"),
                    format!("no robot named {robot:?} (robots: {known})"),
                ));
            }
            Ok(Target::Robot { robot: robot.clone() })
        }
    }
}

fn validate_route(
    route: RouteSection,
    key: &dyn Fn(&str) -> String,
    context: &Context,
) -> Result<RouteConfig, Invalid> {
    if route.name.trim().is_empty() {
        return Err((key("name"), "must not be empty".into()));
    }
    let mut matchers = Vec::new();
    for (j, text) in route.matchers.iter().enumerate() {
        let parsed = parse_matchers(text).map_err(|e| {
            (
                key(&format!("matchers[{j}]")),
                format!("route {:?}, matcher {text:?}: {e}", route.name),
            )
        })?;
        matchers.extend(parsed);
    }
    let group_by = clean_ids(route.group_by.clone());
    let target = validate_target(&route, key, context)?;
    let kind = target.kind();
    let msgtype = MsgType::parse(&route.msgtype)
        .filter(|t| kind.msgtypes().contains(t))
        .ok_or_else(|| {
            (
                key("msgtype"),
                format!(
                    "{:?} is not one of {} (what a route to {} {} can send)",
                    route.msgtype,
                    kind.msgtype_list(),
                    if kind == TargetKind::App { "an" } else { "a" },
                    kind.as_str()
                ),
            )
        })?;

    let recipients = |section: RecipientsSection, field: &str| -> Result<Recipients, Invalid> {
        let mut to = Recipients {
            users: clean_ids(section.users),
            parties: clean_ids(section.parties),
            tags: clean_ids(section.tags),
        };
        for (kind, entries) in [
            ("users", &mut to.users),
            ("parties", &mut to.parties),
            ("tags", &mut to.tags),
        ] {
            for (j, entry) in entries.iter_mut().enumerate() {
                check_template(entry).map_err(|m| (key(&format!("{field}.{kind}[{j}]")), m))?;
                if kind != "users" && !entry.contains("{{") {
                    *entry = Recipients::wecom_id(entry).ok_or_else(|| {
                        (
                            key(&format!("{field}.{kind}[{j}]")),
                            format!("party and tag ids are numbers, got {entry:?}"),
                        )
                    })?;
                }
            }
        }
        Ok(to)
    };
    let to = route
        .to
        .map(|to| recipients(to, "to"))
        .transpose()?
        .unwrap_or_default();
    let fallback_to = route
        .fallback_to
        .map(|f| recipients(f, "fallback_to"))
        .transpose()?;
    let mention = route.mention.unwrap_or_default();
    let mention = Mentions {
        users: clean_ids(mention.users),
        mobiles: clean_ids(mention.mobiles),
    };
    for (j, entry) in mention.users.iter().enumerate() {
        check_template(entry).map_err(|m| (key(&format!("mention.users[{j}]")), m))?;
    }

    if kind == TargetKind::App {
        if to.is_empty() {
            return Err((key("to"), "needs at least one of users, parties, tags".into()));
        }
        if !mention.users.is_empty() || !mention.mobiles.is_empty() {
            return Err((
                key("mention"),
                "only group robot routes mention people; app routes use `to`".into(),
            ));
        }
        if fallback_to.as_ref().is_some_and(Recipients::is_empty) {
            return Err((
                key("fallback_to"),
                "needs at least one of users, parties, tags".into(),
            ));
        }
    } else if kind == TargetKind::Robot {
        if !to.is_empty() || fallback_to.is_some() {
            return Err((
                key("to"),
                "a group robot posts to its chat; use `mention` to notify people".into(),
            ));
        }
    } else if !to.is_empty()
        || fallback_to.is_some()
        || !mention.users.is_empty()
        || !mention.mobiles.is_empty()
    {
        return Err((
            key("to"),
            "an app group chat's messages reach every member of the chat; `to`, `fallback_to` \
             and `mention` do not apply"
                .into(),
        ));
    }

    let buttons = match route.buttons {
        None => None,
        Some(raw) => {
            let app = match &target {
                Target::App { app } if msgtype == MsgType::TemplateCard => app,
                _ => {
                    return Err((
                        key("buttons"),
                        "buttons are for `msgtype: template_card` routes to an app's recipients (WeCom calls the app back on a click; chats and robots cannot)".into(),
                    ))
                }
            };
            if !context.callback_apps.contains(app) {
                return Err((
                    key("buttons"),
                    format!(
                        "app {app:?} has no `callback:`; WeCom refuses cards with buttons from an app without a callback URL (docs/interactive-cards.md)"
                    ),
                ));
            }
            Some(validate_buttons(raw, &|field| key(&format!("buttons.{field}")))?)
        }
    };
    let default_template = if buttons.is_some() {
        BUTTONS_TEMPLATE.to_string()
    } else {
        msgtype.as_str().to_string()
    };

    let max_messages = route.max_messages.unwrap_or(context.max_messages);
    if max_messages == 0 {
        return Err((key("max_messages"), "must be at least 1".into()));
    }
    Ok(RouteConfig {
        template: route.template.unwrap_or(default_template),
        buttons,
        digest_template: route
            .digest_template
            .unwrap_or_else(|| msgtype.builtin_digest_template()),
        max_messages,
        name: route.name,
        matchers,
        continue_matching: route.continue_matching,
        send_resolved: route.send_resolved,
        group_by,
        target,
        msgtype,
        to,
        fallback_to,
        mention,
    })
}

/// Recipient entries may be handlebars templates; catch syntax errors at load time.
fn check_template(entry: &str) -> Result<(), String> {
    if !entry.contains("{{") {
        return Ok(());
    }
    handlebars::Template::compile(entry)
        .map(|_| ())
        .map_err(|e| format!("invalid template {entry:?}: {}", e.reason()))
}
