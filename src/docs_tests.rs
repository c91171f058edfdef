//! The README's lists of msgtypes, outcomes, recipient kinds and endpoints come from the
//! code's own lists; these tests fail when one side changes without the other.

use crate::config::TargetKind;
use crate::deliver::api::RecipientKind;
use crate::deliver::error::Endpoint;
use crate::deliver::Outcome;

const README: &str = include_str!("../README.md");

/// The README line holding `marker`.
fn line_with(marker: &str) -> &'static str {
    README
        .lines()
        .find(|line| line.contains(marker))
        .unwrap_or_else(|| panic!("the README has no line with {marker:?}"))
}

#[test]
fn the_readme_names_every_msgtype_each_kind_of_target_takes() {
    for (kind, marker) in [
        (TargetKind::App, "# apps: "),
        (TargetKind::Robot, "# robots: "),
        (TargetKind::Chat, "# chats: "),
    ] {
        let line = line_with(marker);
        let listed: Vec<&str> = line
            .split(marker)
            .nth(1)
            .unwrap()
            .split('|')
            .map(str::trim)
            .collect();
        let mut listed = listed;
        listed.sort_unstable();
        let mut known: Vec<&str> = kind.msgtypes().iter().map(|t| t.as_str()).collect();
        known.sort_unstable();
        assert_eq!(listed, known, "{kind:?}: {line}");
    }
}

#[test]
fn the_readme_metrics_table_names_every_label_value() {
    let notifications = line_with("`alertmanager_wecom_notifications_total`");
    for outcome in Outcome::ALL {
        assert!(
            notifications.contains(&format!("`{}`", outcome.as_str())),
            "{outcome:?}"
        );
    }
    let invalid = line_with("`alertmanager_wecom_invalid_recipients_total`");
    for kind in RecipientKind::ALL {
        assert!(invalid.contains(&format!("`{}`", kind.as_str())), "{kind:?}");
    }
    let api = line_with("`alertmanager_wecom_wecom_api_requests_total`");
    for endpoint in Endpoint::ALL {
        assert!(api.contains(&format!("`{}`", endpoint.as_str())), "{endpoint:?}");
    }
}
