//! Routing: which configured route (and so which app, recipients and template) each alert
//! goes to, decided by Alertmanager-style label matchers.

pub mod matcher;

use crate::config::RouteConfig;
use crate::ingest::payload::Alert;

/// The alerts of one notification that landed on one route, in payload order.
#[derive(Debug)]
pub struct RoutedGroup<'a> {
    pub route: &'a RouteConfig,
    pub alerts: Vec<&'a Alert>,
}

/// The result of routing one notification.
#[derive(Debug, Default)]
pub struct RoutingPlan<'a> {
    /// One entry per route that received at least one alert, in route order.
    pub groups: Vec<RoutedGroup<'a>>,
    /// Alerts that matched no route (there is no catch-all).
    pub unrouted: Vec<&'a Alert>,
}

/// Routes each alert on its own labels: the first route whose matchers all match wins.
pub fn route_alerts<'a>(routes: &'a [RouteConfig], alerts: &'a [Alert]) -> RoutingPlan<'a> {
    let mut per_route: Vec<Vec<&Alert>> = vec![Vec::new(); routes.len()];
    let mut unrouted = Vec::new();
    for alert in alerts {
        match routes
            .iter()
            .position(|route| route.matchers.iter().all(|m| m.matches(&alert.labels)))
        {
            Some(index) => per_route[index].push(alert),
            None => unrouted.push(alert),
        }
    }
    let groups = routes
        .iter()
        .zip(per_route)
        .filter(|(_, alerts)| !alerts.is_empty())
        .map(|(route, alerts)| RoutedGroup { route, alerts })
        .collect();
    RoutingPlan { groups, unrouted }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ingest::payload::WebhookPayload;

    fn config() -> Config {
        let yaml = r#"
apps: [{name: ops, corp_id: ww1, agent_id: 1}]
routes:
  - {name: db, matchers: ['team="db"', 'severity=~"critical|warning"'], app: ops, msgtype: text, to: {users: [a]}}
  - {name: pay, matchers: ['team="pay"'], app: ops, msgtype: text, to: {users: [b]}}
"#;
        Config::from_yaml(yaml, "test.yml", std::path::Path::new("")).unwrap()
    }

    fn alerts(labels: &[&str]) -> Vec<Alert> {
        let alerts: Vec<String> = labels
            .iter()
            .map(|l| format!(r#"{{"status":"firing","labels":{{{l}}}}}"#))
            .collect();
        let body = format!(r#"{{"alerts":[{}]}}"#, alerts.join(","));
        WebhookPayload::parse(body.as_bytes()).unwrap().alerts
    }

    #[test]
    fn each_alert_goes_to_the_first_route_whose_matchers_all_match() {
        let config = config();
        let alerts = alerts(&[
            r#""team":"db","severity":"critical""#,
            r#""team":"pay""#,
            r#""team":"db","severity":"info""#,
            r#""team":"db","severity":"warning""#,
        ]);
        let plan = route_alerts(&config.routes, &alerts);
        let summary: Vec<(&str, usize)> = plan
            .groups
            .iter()
            .map(|g| (g.route.name.as_str(), g.alerts.len()))
            .collect();
        assert_eq!(summary, vec![("db", 2), ("pay", 1)]);
        assert_eq!(plan.unrouted.len(), 1);
        assert_eq!(plan.unrouted[0].labels["severity"], "info");
    }
}
