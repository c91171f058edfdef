//! Routing: which routes (and so which app or robot, recipients and template) each alert
//! goes to, decided by Alertmanager-style label matchers, and how a route's alerts are
//! split into messages (by `group_by` labels and by their recipients).

pub mod explain;
pub mod recipients;

use std::collections::BTreeMap;

use crate::config::{Mentions, Recipients, RouteConfig};
use crate::model::{Alert, AlertStatus, LabelSet};
use recipients::{RecipientResolver, RecipientTemplateError};

/// Alerts of one notification that go out as one message. The route is borrowed from
/// the router (`'r`), the alerts from the payload (`'a`), so a caller can let go of the
/// payload and keep the route.
#[derive(Debug)]
pub struct Notification<'r, 'a> {
    pub route: &'r RouteConfig,
    pub alerts: Vec<&'a Alert>,
    /// App routes: who receives it (empty for robots and chats).
    pub recipients: Recipients,
    /// Robot routes: who is @-mentioned.
    pub mentions: Mentions,
    /// The `group_by` label values shared by these alerts.
    pub group: BTreeMap<String, String>,
}

/// Alerts a route matched but whose recipients resolved to nobody, with no fallback.
#[derive(Debug)]
pub struct Unresolved<'r, 'a> {
    pub route: &'r RouteConfig,
    pub alerts: Vec<&'a Alert>,
}

/// The result of routing one notification.
#[derive(Debug, Default)]
pub struct RoutingPlan<'r, 'a> {
    /// In route order; within a route, in order of first appearance.
    pub notifications: Vec<Notification<'r, 'a>>,
    pub unresolved: Vec<Unresolved<'r, 'a>>,
    /// Alerts that matched no route.
    pub unrouted: Vec<&'a Alert>,
}

/// The configured routes, ready to route alerts.
pub struct Router {
    routes: Vec<RouteConfig>,
    resolver: RecipientResolver,
}

impl Router {
    pub fn new(routes: &[RouteConfig]) -> Result<Router, RecipientTemplateError> {
        Ok(Router {
            routes: routes.to_vec(),
            resolver: RecipientResolver::new(routes)?,
        })
    }

    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// The routes an alert with these labels goes to: the first match, and after it every
    /// further match while the matched routes say `continue`.
    pub fn matching_routes(&self, labels: &LabelSet) -> Vec<&RouteConfig> {
        self.matching(labels).map(|(_, route)| route).collect()
    }

    /// [`Router::matching_routes`] with each route's index, without allocating.
    fn matching<'s, 'l>(
        &'s self,
        labels: &'l LabelSet,
    ) -> impl Iterator<Item = (usize, &'s RouteConfig)> + use<'s, 'l> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, route)| route.matchers.iter().all(|m| m.matches(labels)))
            .scan(true, |keep_going, (index, route)| {
                if !*keep_going {
                    return None;
                }
                *keep_going = route.continue_matching;
                Some((index, route))
            })
    }

    /// Routes each alert on its own labels and splits each route's alerts into messages.
    pub fn plan<'r, 'a>(&'r self, alerts: &'a [Alert]) -> RoutingPlan<'r, 'a> {
        let mut per_route: Vec<Vec<&Alert>> = vec![Vec::new(); self.routes.len()];
        let mut plan = RoutingPlan::default();
        for alert in alerts {
            let mut matched = false;
            for (index, route) in self.matching(&alert.labels) {
                matched = true;
                if alert.status == AlertStatus::Firing || route.send_resolved {
                    per_route[index].push(alert);
                }
            }
            if !matched {
                plan.unrouted.push(alert);
            }
        }
        for (route, alerts) in self.routes.iter().zip(per_route) {
            if !alerts.is_empty() {
                self.split(route, alerts, &mut plan);
            }
        }
        plan
    }

    /// Splits one route's alerts into messages: alerts share a message only if they share
    /// the `group_by` values and the same resolved recipients, so nobody receives an alert
    /// meant for someone else.
    fn split<'r, 'a>(
        &'r self,
        route: &'r RouteConfig,
        alerts: Vec<&'a Alert>,
        plan: &mut RoutingPlan<'r, 'a>,
    ) {
        let first = plan.notifications.len();
        let mut unresolved = Vec::new();
        // Recipient templates need the alert as JSON; plain ids do not.
        let templated = recipients::has_templates(route);
        // Routes to a robot or a chat reach everyone in it: their alerts are not split by
        // recipient, and whoever they mention is mentioned in one message.
        let to_chat = route.to.is_empty();
        for alert in alerts {
            let data = if templated {
                RecipientResolver::data(alert)
            } else {
                serde_json::Value::Null
            };
            let group: BTreeMap<String, String> = route
                .group_by
                .iter()
                .map(|label| {
                    (
                        label.clone(),
                        alert.labels.get(label).map(str::to_string).unwrap_or_default(),
                    )
                })
                .collect();
            let (recipients, mentions) = if to_chat {
                let mentions = Mentions {
                    users: self.resolver.expand(&route.mention.users, &data),
                    mobiles: route.mention.mobiles.clone(),
                };
                (Recipients::default(), mentions)
            } else {
                let mut recipients = self.resolver.resolve(&route.to, &data);
                if recipients.is_empty() {
                    if let Some(fallback) = &route.fallback_to {
                        recipients = self.resolver.resolve(fallback, &data);
                    }
                }
                if recipients.is_empty() {
                    unresolved.push(alert);
                    continue;
                }
                (recipients, Mentions::default())
            };
            let existing = plan.notifications[first..]
                .iter_mut()
                .find(|n| n.group == group && (to_chat || n.recipients == recipients));
            match existing {
                Some(notification) => {
                    notification.alerts.push(alert);
                    // A robot message mentions everyone any of its alerts names.
                    for user in mentions.users {
                        if !notification.mentions.users.contains(&user) {
                            notification.mentions.users.push(user);
                        }
                    }
                }
                None => plan.notifications.push(Notification {
                    route,
                    alerts: vec![alert],
                    recipients,
                    mentions,
                    group,
                }),
            }
        }
        if !unresolved.is_empty() {
            plan.unresolved.push(Unresolved {
                route,
                alerts: unresolved,
            });
        }
    }
}

#[cfg(test)]
mod tests;
