//! `alertmanager-wecom route`: which routes an alert with given labels reaches and who
//! receives it, without sending anything (like `amtool config routes test`).

use std::fmt::Write;

use super::Router;
use crate::config::{Recipients, Target};
use crate::model::matcher::{parse_matchers, MatchOp};
use crate::model::{Alert, AlertStatus, LabelSet};

/// Parses `team="db",severity="critical"` (or `{…}`) into a label set.
pub fn parse_labels(text: &str) -> Result<LabelSet, String> {
    let matchers = parse_matchers(text).map_err(|e| format!("--labels {text:?}: {e}"))?;
    let mut labels = LabelSet::new();
    for matcher in matchers {
        if matcher.op() != MatchOp::Equal {
            return Err(format!(
                "--labels {text:?}: use name=\"value\" pairs, not {matcher}"
            ));
        }
        labels.insert(matcher.name(), matcher.value());
    }
    Ok(labels)
}

/// A report of where a firing alert with these labels and annotations would go.
pub fn explain(router: &Router, labels: LabelSet, annotations: LabelSet) -> String {
    let alert = Alert {
        status: AlertStatus::Firing,
        labels,
        annotations,
        starts_at: None,
        ends_at: None,
        generator_url: String::new(),
        fingerprint: String::new(),
    };
    let alerts = [alert];
    let plan = router.plan(&alerts);
    let mut out = String::new();
    if !plan.unrouted.is_empty() {
        out.push_str("no route matches: the alert would not be delivered (counted as unrouted)\n");
    }
    for notification in &plan.notifications {
        let route = notification.route;
        let _ = writeln!(
            out,
            "{}: {} {}, {} (template {})",
            route.name,
            route.target.kind().as_str(),
            route.target_name(),
            route.msgtype.as_str(),
            route.template,
        );
        let mentions = &notification.mentions;
        let _ = match &route.target {
            Target::App { .. } => writeln!(out, "  to: {}", describe(&notification.recipients)),
            Target::Robot { .. } => writeln!(
                out,
                "  mentions: {}",
                list(mentions.users.iter().chain(&mentions.mobiles))
            ),
            Target::Chat { chat_id, .. } => writeln!(out, "  to: every member of chat {chat_id}"),
        };
    }
    for unresolved in &plan.unresolved {
        let _ = writeln!(
            out,
            "{}: recipients resolve to nobody and there is no fallback_to: delivery would fail (422)",
            unresolved.route.name
        );
    }
    out
}

fn describe(to: &Recipients) -> String {
    format!(
        "users {}; parties {}; tags {}",
        list(&to.users),
        list(&to.parties),
        list(&to.tags)
    )
}

fn list<'a>(ids: impl IntoIterator<Item = &'a String>) -> String {
    let ids: Vec<&str> = ids.into_iter().map(String::as_str).collect();
    if ids.is_empty() {
        "-".to_string()
    } else {
        ids.join(", ")
    }
}
