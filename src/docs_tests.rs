//! The docs' lists of msgtypes (docs/configuration.md) and of metric label values
//! (docs/operations.md) come from the code's own lists; these tests fail when one side
//! changes without the other.

use crate::config::TargetKind;
use crate::deliver::api::RecipientKind;
use crate::deliver::error::Endpoint;
use crate::deliver::Outcome;

const CONFIGURATION: &str = include_str!("../docs/configuration.md");
const OPERATIONS: &str = include_str!("../docs/operations.md");

/// The line of `doc` holding `marker`.
fn line_with(doc: &'static str, marker: &str) -> &'static str {
    doc.lines()
        .find(|line| line.contains(marker))
        .unwrap_or_else(|| panic!("the doc has no line with {marker:?}"))
}

#[test]
fn the_configuration_doc_names_every_msgtype_each_kind_of_target_takes() {
    for (kind, marker) in [
        (TargetKind::App, "# apps: "),
        (TargetKind::Robot, "# robots: "),
        (TargetKind::Chat, "# chats: "),
    ] {
        let line = line_with(CONFIGURATION, marker);
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
fn the_operations_doc_metrics_table_names_every_label_value() {
    let notifications = line_with(OPERATIONS, "`alertmanager_wecom_notifications_total`");
    for outcome in Outcome::ALL {
        assert!(
            notifications.contains(&format!("`{}`", outcome.as_str())),
            "{outcome:?}"
        );
    }
    let invalid = line_with(OPERATIONS, "`alertmanager_wecom_invalid_recipients_total`");
    for kind in RecipientKind::ALL {
        assert!(invalid.contains(&format!("`{}`", kind.as_str())), "{kind:?}");
    }
    let api = line_with(OPERATIONS, "`alertmanager_wecom_wecom_api_requests_total`");
    for endpoint in Endpoint::ALL {
        assert!(api.contains(&format!("`{}`", endpoint.as_str())), "{endpoint:?}");
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The prose of a markdown file: code blocks left out.
fn prose(text: &str) -> Vec<&str> {
    let mut in_code = false;
    text.lines()
        .filter(|line| {
            if line.starts_with("```") {
                in_code = !in_code;
                return false;
            }
            !in_code
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| anchor(heading.trim_start_matches('#')))
        .collect()
}

/// The README is the front door and the references are in docs/: a moved section must not
/// leave a link behind that goes nowhere.
#[test]
fn every_relative_link_in_the_readme_and_docs_leads_somewhere() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for line in prose(&text) {
            // Inline code shows markdown, it does not link.
            let line: String = line.split('`').step_by(2).collect();
            for link in line.split("](").skip(1) {
                let Some(target) = link.split(')').next() else {
                    continue;
                };
                if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                    continue;
                }
                let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
                let file = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(file)
                };
                if !file.exists() {
                    broken.push(format!("{}: {target} (no such file)", page.display()));
                } else if !fragment.is_empty() && file.extension().is_some_and(|e| e == "md") {
                    let target_text = std::fs::read_to_string(&file).unwrap();
                    if !anchors(&target_text).iter().any(|a| a == fragment) {
                        broken.push(format!("{}: {target} (no such heading)", page.display()));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
