//! Validation of the `routes:` section.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::file::{RecipientsSection, RouteSection};
use super::{
    clean_ids, normalize_api_url, resolve_secret, sorted_names, Mentions, MsgType, Recipients, RobotConfig,
    RouteConfig, Target,
};
use crate::route::matcher::parse_matchers;

/// What route validation needs from the rest of the file.
pub struct Context<'a> {
    pub app_names: &'a HashSet<String>,
    pub api_url: &'a str,
    pub base_dir: &'a Path,
    pub max_messages: usize,
}

type Invalid = (String, String);

pub fn validate_routes(raw: Vec<RouteSection>, context: &Context) -> Result<Vec<RouteConfig>, Invalid> {
    let mut routes = Vec::with_capacity(raw.len());
    let mut route_names = HashSet::new();
    // Robot name → its key, so that two routes naming one robot agree on it.
    let mut robots: HashMap<String, Option<String>> = HashMap::new();
    for (i, route) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        let route = validate_route(route, &key, context)?;
        if !route_names.insert(route.name.clone()) {
            return Err((key("name"), format!("duplicate route name {:?}", route.name)));
        }
        if let Target::Robot(robot) = &route.target {
            if context.app_names.contains(&robot.name) {
                return Err((
                    key("robot.name"),
                    format!("{:?} is already the name of an app", robot.name),
                ));
            }
            let fingerprint = robot.key.as_ref().map(|k| k.expose().to_string());
            if let Some(previous) = robots.insert(robot.name.clone(), fingerprint.clone()) {
                if previous != fingerprint {
                    return Err((
                        key("robot.name"),
                        format!(
                            "robot {:?} is configured with a different key in another route",
                            robot.name
                        ),
                    ));
                }
            }
        }
        routes.push(route);
    }
    Ok(routes)
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
    let group_by = clean_ids(route.group_by);
    let msgtype = MsgType::parse(&route.msgtype);

    let (target, msgtype) = match (route.app, route.robot) {
        (Some(_), Some(_)) => return Err((key("robot"), "set either app or robot, not both".into())),
        (None, None) => return Err((key("app"), "needs an app (or a robot) to send through".into())),
        (Some(app), None) => {
            if !context.app_names.contains(&app) {
                return Err((
                    key("app"),
                    format!("no app named {app:?} (apps: {})", sorted_names(context.app_names)),
                ));
            }
            let msgtype = msgtype.filter(|t| MsgType::APP.contains(t)).ok_or_else(|| {
                (
                    key("msgtype"),
                    format!("{:?} is not one of text, markdown, textcard", route.msgtype),
                )
            })?;
            (Target::App(app), msgtype)
        }
        (None, Some(robot)) => {
            let secret =
                resolve_secret(robot.key, robot.key_file, context.base_dir).map_err(|(field, message)| {
                    (key(&format!("robot.{}", field.replace("secret", "key"))), message)
                })?;
            let api_url = match &robot.api_url {
                Some(url) => normalize_api_url(url).map_err(|m| (key("robot.api_url"), m))?,
                None => context.api_url.to_string(),
            };
            let msgtype = msgtype.filter(|t| MsgType::ROBOT.contains(t)).ok_or_else(|| {
                (
                    key("msgtype"),
                    format!(
                        "{:?} is not one of text, markdown, markdown_v2 (group robots)",
                        route.msgtype
                    ),
                )
            })?;
            let robot = RobotConfig {
                name: robot.name.unwrap_or_else(|| route.name.clone()),
                key: secret,
                api_url,
            };
            (Target::Robot(robot), msgtype)
        }
    };

    let recipients = |section: RecipientsSection, field: &str| -> Result<Recipients, Invalid> {
        let to = Recipients {
            users: clean_ids(section.users),
            parties: clean_ids(section.parties),
            tags: clean_ids(section.tags),
        };
        for (kind, entries) in [("users", &to.users), ("parties", &to.parties), ("tags", &to.tags)] {
            for (j, entry) in entries.iter().enumerate() {
                check_template(entry).map_err(|m| (key(&format!("{field}.{kind}[{j}]")), m))?;
                if kind != "users" && !entry.contains("{{") && entry.parse::<u64>().is_err() {
                    return Err((
                        key(&format!("{field}.{kind}[{j}]")),
                        format!("party and tag ids are numbers, got {entry:?}"),
                    ));
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

    if matches!(target, Target::App(_)) {
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
    } else if !to.is_empty() || fallback_to.is_some() {
        return Err((
            key("to"),
            "a group robot posts to its chat; use `mention` to notify people".into(),
        ));
    }

    let max_messages = route.max_messages.unwrap_or(context.max_messages);
    if max_messages == 0 {
        return Err((key("max_messages"), "must be at least 1".into()));
    }
    Ok(RouteConfig {
        template: route.template.unwrap_or_else(|| msgtype.as_str().to_string()),
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
