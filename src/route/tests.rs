use std::path::Path;

use super::*;
use crate::config::Config;
use crate::model::WebhookPayload;

fn router(routes: &str) -> Router {
    let yaml = format!("apps: [{{name: ops, corp_id: ww1, agent_id: 1}}, {{name: dev, corp_id: ww1, agent_id: 2}}]\nrobots: [{{name: chat, key: k}}]\nroutes:\n{routes}");
    let config = Config::from_yaml(&yaml, "test.yml", Path::new("")).unwrap();
    Router::new(&config.routes).unwrap()
}

/// Alerts from `status;label=value,label=value` lines.
fn alerts(specs: &[&str]) -> Vec<Alert> {
    let alerts: Vec<String> = specs
        .iter()
        .map(|spec| {
            let (status, labels) = spec.split_once(';').unwrap();
            let labels: Vec<String> = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    format!("{k:?}:{v:?}")
                })
                .collect();
            format!(r#"{{"status":"{status}","labels":{{{}}}}}"#, labels.join(","))
        })
        .collect();
    WebhookPayload::parse(format!(r#"{{"alerts":[{}]}}"#, alerts.join(",")).as_bytes())
        .unwrap()
        .alerts
}

fn summary(plan: &RoutingPlan) -> Vec<(String, usize, Vec<String>)> {
    plan.notifications
        .iter()
        .map(|n| (n.route.name.clone(), n.alerts.len(), n.recipients.users.clone()))
        .collect()
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

#[test]
fn each_alert_goes_to_the_first_route_whose_matchers_all_match() {
    let router = router(
        r#"  - {name: db, matchers: ['team="db"', 'severity=~"critical|warning"'], app: ops, msgtype: text, to: {users: [a]}}
  - {name: pay, matchers: ['{team="pay"}'], app: ops, msgtype: text, to: {users: [b]}}
"#,
    );
    let alerts = alerts(&[
        "firing;team=db,severity=critical",
        "firing;team=pay",
        "firing;team=db,severity=info",
        "firing;team=db,severity=warning",
    ]);
    let plan = router.plan(&alerts);
    assert_eq!(
        summary(&plan),
        vec![("db".into(), 2, s(&["a"])), ("pay".into(), 1, s(&["b"]))]
    );
    assert_eq!(plan.unrouted.len(), 1);
    assert_eq!(plan.unrouted[0].labels.get("severity"), Some("info"));
}

#[test]
fn continue_lets_an_alert_also_reach_the_following_routes() {
    let router = router(
        r#"  - {name: audit, continue: true, app: dev, msgtype: text, to: {users: [auditor]}}
  - {name: db, matchers: ['team="db"'], continue: true, app: ops, msgtype: text, to: {users: [dba]}}
  - {name: db-chat, matchers: ['team="db"'], app: ops, msgtype: text, to: {parties: [7]}}
  - {name: never, matchers: ['team="db"'], app: ops, msgtype: text, to: {users: [x]}}
  - {name: rest, app: ops, msgtype: text, to: {users: [oncall]}}
"#,
    );
    let alerts = alerts(&["firing;team=db", "firing;team=web"]);
    let plan = router.plan(&alerts);
    let names: Vec<(String, usize)> = plan
        .notifications
        .iter()
        .map(|n| (n.route.name.clone(), n.alerts.len()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("audit".into(), 2),
            ("db".into(), 1),
            ("db-chat".into(), 1),
            ("rest".into(), 1)
        ]
    );
    assert!(plan.unrouted.is_empty());
}

#[test]
fn send_resolved_false_drops_resolved_alerts_without_making_them_unrouted() {
    let router =
        router("  - {name: page, send_resolved: false, app: ops, msgtype: text, to: {users: [a]}}\n");
    let alerts = alerts(&["firing;alertname=A", "resolved;alertname=B"]);
    let plan = router.plan(&alerts);
    assert_eq!(summary(&plan), vec![("page".into(), 1, s(&["a"]))]);
    assert_eq!(plan.notifications[0].alerts[0].name(), "A");
    assert!(plan.unrouted.is_empty());
}

#[test]
fn group_by_splits_a_routes_alerts_into_one_message_per_value() {
    let router = router("  - {name: ns, group_by: [namespace], app: ops, msgtype: text, to: {users: [a]}}\n");
    let alerts = alerts(&[
        "firing;namespace=pay",
        "firing;namespace=db",
        "firing;namespace=pay",
        "firing;x=y",
    ]);
    let plan = router.plan(&alerts);
    let groups: Vec<(String, usize)> = plan
        .notifications
        .iter()
        .map(|n| (n.group["namespace"].clone(), n.alerts.len()))
        .collect();
    assert_eq!(groups, vec![("pay".into(), 2), ("db".into(), 1), ("".into(), 1)]);
}

#[test]
fn recipients_come_from_labels_and_a_value_may_name_several() {
    let router = router(
        r#"  - name: owners
    app: ops
    msgtype: text
    to: {users: ["{{labels.owner}}", "{{annotations.cc}}", lead], parties: ["{{labels.dept}}"]}
"#,
    );
    let body = r#"{"alerts":[{"status":"firing","labels":{"owner":"alice|bob","dept":"12"},"annotations":{"cc":"carol, dave"}}]}"#;
    let payload = WebhookPayload::parse(body.as_bytes()).unwrap();
    let plan = router.plan(&payload.alerts);
    let to = &plan.notifications[0].recipients;
    assert_eq!(to.users, s(&["alice", "bob", "carol", "dave", "lead"]));
    assert_eq!(to.parties, s(&["12"]));
}

/// Ids from labels are written as WeCom takes them: `+5` or `-1` name no department
/// (Rust's number parsing took `+5`), `007` is department 7, and a repeat is one.
#[test]
fn party_and_tag_ids_from_labels_are_plain_decimal_numbers() {
    let router = router(
        r#"  - name: depts
    app: ops
    msgtype: text
    to: {parties: ["{{labels.dept}}"], tags: ["{{labels.tag}}"]}
"#,
    );
    let body = r#"{"alerts":[{"status":"firing","labels":{"dept":"+5|007|7|-1|0x5|4294967296|12","tag":"3, 03 ,ops"}}]}"#;
    let payload = WebhookPayload::parse(body.as_bytes()).unwrap();
    let plan = router.plan(&payload.alerts);
    let to = &plan.notifications[0].recipients;
    assert_eq!(to.parties, s(&["7", "12"]));
    assert_eq!(to.tags, s(&["3"]));
}

#[test]
fn alerts_for_different_people_are_split_so_nobody_gets_anothers_alert() {
    let router = router(
        r#"  - {name: owners, app: ops, msgtype: text, to: {users: ["{{labels.owner}}"]}}
"#,
    );
    let alerts = alerts(&[
        "firing;owner=alice,n=1",
        "firing;owner=bob,n=2",
        "firing;owner=alice,n=3",
    ]);
    let plan = router.plan(&alerts);
    assert_eq!(
        summary(&plan),
        vec![
            ("owners".into(), 2, s(&["alice"])),
            ("owners".into(), 1, s(&["bob"]))
        ]
    );
}

#[test]
fn empty_recipients_fall_back_or_are_reported_unresolved() {
    let with_fallback = router(
        r#"  - {name: owners, app: ops, msgtype: text, to: {users: ["{{labels.owner}}"]}, fallback_to: {tags: [1]}}
"#,
    );
    let alerts = alerts(&["firing;owner=alice", "firing;team=x"]);
    let plan = with_fallback.plan(&alerts);
    assert_eq!(plan.notifications.len(), 2);
    assert_eq!(plan.notifications[1].recipients.tags, s(&["1"]));
    assert!(plan.unresolved.is_empty());

    let without = router(
        r#"  - {name: owners, app: ops, msgtype: text, to: {users: ["{{labels.owner}}"]}}
"#,
    );
    let plan = without.plan(&alerts);
    assert_eq!(plan.notifications.len(), 1);
    assert_eq!(plan.unresolved.len(), 1);
    assert_eq!(plan.unresolved[0].alerts[0].labels.get("team"), Some("x"));
}

#[test]
fn a_robot_message_mentions_every_owner_of_its_alerts() {
    let router = router(
        r#"  - {name: chat, robot: chat, msgtype: text, mention: {users: ["{{labels.owner}}"], mobiles: ["13800000000"]}}
"#,
    );
    let alerts = alerts(&["firing;owner=alice", "firing;owner=bob", "firing;x=y"]);
    let plan = router.plan(&alerts);
    assert_eq!(plan.notifications.len(), 1);
    assert_eq!(plan.notifications[0].mentions.users, s(&["alice", "bob"]));
    assert_eq!(plan.notifications[0].mentions.mobiles, s(&["13800000000"]));
}

#[test]
fn matching_routes_answers_which_routes_a_label_set_reaches() {
    let router = router(
        r#"  - {name: db, matchers: ['team="db"'], continue: true, app: ops, msgtype: text, to: {users: [a]}}
  - {name: rest, app: ops, msgtype: text, to: {users: [b]}}
"#,
    );
    let labels: crate::model::LabelSet = [("team", "db")].into_iter().collect();
    let names: Vec<&str> = router
        .matching_routes(&labels)
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, vec!["db", "rest"]);
}
