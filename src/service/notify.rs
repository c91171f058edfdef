//! The pipeline for one webhook: plan (route) → render → deliver → report. Split in two
//! so a caller can let go of the payload between them: [`Service::prepare`] needs the
//! payload (a 1,000-alert group is megabytes of label sets), [`Service::deliver`] waits on
//! WeCom and needs only what was prepared.

use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use log::{debug, warn};

use super::Service;
use crate::deliver::digest::StormProfile;
use crate::deliver::identity::AlertsDigest;
use crate::deliver::{CardPlan, Outcome, Outgoing, RouteReport};
use crate::model::{AlertStatus, WebhookPayload};
use crate::render::{RenderError, RenderedMessage};
use crate::route::{Notification, RoutingPlan};

/// A webhook routed and rendered, ready to deliver; it holds no reference to the payload.
pub struct Prepared<'s> {
    group_key: String,
    /// In route order; a message that could not be rendered is already its report.
    outgoing: Vec<Result<Outgoing<'s>, RouteReport>>,
    /// Reports of alerts whose recipients resolved to nobody.
    failed: Vec<RouteReport>,
    unrouted: usize,
    alerts: usize,
    firing: usize,
}

/// What happened to each route's share of a webhook.
#[derive(Debug)]
pub struct Report {
    pub routes: Vec<RouteReport>,
    /// Alerts that matched no route.
    pub unrouted: usize,
}

/// What the report means for Alertmanager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every route's message was accepted (or had been, or was logged in dry-run).
    Delivered,
    /// Retryable trouble somewhere: Alertmanager should retry; routes already accepted
    /// are remembered and not sent again.
    Retry,
    /// A permanent refusal and nothing to retry: Alertmanager should count a failure
    /// without hammering.
    Rejected,
}

impl Verdict {
    /// The `status` of the answer's body.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Delivered => "ok",
            Verdict::Retry => "retry",
            Verdict::Rejected => "rejected",
        }
    }
}

impl Prepared<'_> {
    /// How many route messages are ready to deliver.
    pub fn messages(&self) -> usize {
        self.outgoing.iter().filter(|o| o.is_ok()).count()
    }
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if self
            .routes
            .iter()
            .any(|r| matches!(r.outcome, Outcome::FailedTransient | Outcome::Digested))
        {
            Verdict::Retry
        } else if self.routes.iter().any(|r| r.outcome == Outcome::FailedPermanent) {
            Verdict::Rejected
        } else {
            Verdict::Delivered
        }
    }
}

impl Service {
    /// Routes and renders a webhook end to end and delivers it.
    pub async fn notify(&self, payload: &WebhookPayload) -> Report {
        let prepared = self.prepare(payload).await;
        self.deliver(prepared).await
    }

    /// Routes the alerts and renders each route's message; counts what was received and
    /// reports what cannot be delivered (unrouted alerts, unresolved recipients, failed
    /// templates) in metrics and logs. A notification a storm digest stands for is answered
    /// from the record without rendering (retries come by the thousand in a storm).
    pub async fn prepare(&self, payload: &WebhookPayload) -> Prepared<'_> {
        if payload.version != "4" {
            debug!(
                "webhook payload version {:?}; handling it as version 4",
                payload.version
            );
        }
        let mut firing = 0;
        for alert in &payload.alerts {
            firing += usize::from(alert.status == AlertStatus::Firing);
            self.metrics
                .alerts_received
                .with_label_values(&[alert.status.as_str()])
                .inc();
        }
        let RoutingPlan {
            notifications,
            unresolved,
            unrouted,
        } = self.router.plan(&payload.alerts);
        if !unrouted.is_empty() {
            self.metrics.alerts_unrouted.inc_by(unrouted.len() as u64);
            let names: Vec<&str> = unrouted.iter().map(|a| a.name()).collect();
            warn!(
                "{} alert(s) of group {} matched no route and were not delivered (add a catch-all route): {}",
                names.len(),
                payload.group_key,
                names.join(", ")
            );
        }

        let remember = !self.config.wecom.dedup_window.is_zero();
        let digests = remember && self.config.storm.digest;
        let mut outgoing = Vec::with_capacity(notifications.len());
        let mut failed = Vec::new();
        for notification in notifications {
            let route = notification.route;
            let alerts = remember.then(|| AlertsDigest::of(&notification.alerts));
            if let (true, Some(digest)) = (digests, &alerts) {
                let count = notification.alerts.len();
                let answer = self
                    .notifier
                    .answer_from_record(route, &payload.group_key, digest, count)
                    .await;
                if let Some(report) = answer {
                    outgoing.push(Err(report));
                    continue;
                }
            }
            let rendered = self.render(payload, &notification);
            outgoing.push(match rendered {
                Ok(message) => Ok(Outgoing {
                    route,
                    alerts,
                    storm: digests.then(|| {
                        StormProfile::of(&notification.alerts, &payload.external_url, &self.config.storm)
                    }),
                    card: route
                        .buttons
                        .as_ref()
                        .map(|_| CardPlan::of(&notification.alerts, &payload.external_url)),
                    recipients: notification.recipients,
                    mentions: notification.mentions,
                    message,
                }),
                Err(error) => {
                    Err(self
                        .notifier
                        .not_sent(route, notification.alerts.len(), error.to_string()))
                }
            });
        }
        // Recipients that resolved to nobody: fail loudly rather than drop the alerts.
        for unresolved in &unresolved {
            let route = unresolved.route;
            self.metrics
                .recipients_unresolved
                .with_label_values(&[&route.name])
                .inc_by(unresolved.alerts.len() as u64);
            let names: Vec<&str> = unresolved.alerts.iter().map(|a| a.name()).collect();
            let error = format!(
                "route {:?}: the recipients in `to` resolved to nobody for {} alert(s) ({}) and the route has no fallback_to",
                route.name,
                names.len(),
                names.join(", ")
            );
            failed.push(self.notifier.not_sent(route, unresolved.alerts.len(), error));
        }
        Prepared {
            group_key: payload.group_key.clone(),
            outgoing,
            failed,
            unrouted: unrouted.len(),
            alerts: payload.alerts.len(),
            firing,
        }
    }

    /// Renders one notification's message for its route's target.
    pub(super) fn render(
        &self,
        payload: &WebhookPayload,
        notification: &Notification<'_, '_>,
    ) -> Result<RenderedMessage, RenderError> {
        let route = notification.route;
        self.renderer.render(
            route,
            payload,
            &notification.alerts,
            &notification.mentions.users,
            &self.notifier.limits(route),
        )
    }

    /// Delivers every route's message at once and reports how each ended.
    pub async fn deliver(&self, prepared: Prepared<'_>) -> Report {
        let Prepared {
            group_key,
            outgoing,
            failed,
            unrouted,
            alerts,
            firing,
        } = prepared;
        let group_key = &group_key;
        // One deadline for the whole webhook, and a bounded number of its messages in
        // flight: a 1,000-owner group is answered in time and never opens 1,000 sockets.
        let deadline = Instant::now() + self.config.wecom.delivery_deadline;
        let deliveries = outgoing.into_iter().map(|outgoing| async move {
            match outgoing {
                Ok(outgoing) if Instant::now() >= deadline => self.notifier.not_attempted(&outgoing),
                Ok(outgoing) => self.notifier.deliver(&outgoing, group_key, deadline).await,
                Err(report) => report,
            }
        });
        let mut routes: Vec<RouteReport> = stream::iter(deliveries)
            .buffered(self.config.wecom.max_parallel_sends)
            .collect()
            .await;
        routes.extend(failed);
        let report = Report { routes, unrouted };
        debug!(
            "group {group_key}: {alerts} alert(s) ({firing} firing): {}",
            report.verdict().as_str()
        );
        report
    }
}
