//! Delivery: turns a rendered message into a target's WeCom requests, skips what WeCom
//! already accepted, books each request against the target's rate budget, and sends the
//! rest through the one retry loop. Targets (`app`, `robot`, `appchat`) implement
//! [`target::Target`]; this file knows none of them by name.

pub mod api;
pub mod app;
pub mod appchat;
mod batch;
pub mod clients;
mod credentials;
pub mod directory;
pub mod error;
pub mod identity;
pub mod outcome;
mod registry;
pub mod retry;
pub mod robot;
pub mod target;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::{Config, Mentions, Recipients, RouteConfig, WeComSettings};
use crate::metrics::Metrics;
use crate::render::{ContentLimits, RenderedMessage};
use crate::state::{Claim, DeliveryKey, DeliveryStore};
use api::SendReceipt;
pub use clients::Clients;
use identity::{delivery_key, AlertsDigest};
pub use outcome::{Outcome, RouteReport, SendFailure};
use registry::build_targets;
pub use target::Request;
use target::{Audience, Parts, Target};

/// How long past its delivery deadline a claim outlives a holder that died.
const CLAIM_MARGIN: Duration = Duration::from_secs(2);
/// How often a request waiting for another's claim looks again.
const CLAIM_POLL: Duration = Duration::from_millis(50);

/// One route's notification, rendered and addressed: all a delivery needs (it no longer
/// borrows the webhook's payload).
#[derive(Debug)]
pub struct Outgoing<'r> {
    pub route: &'r RouteConfig,
    pub recipients: Recipients,
    pub mentions: Mentions,
    /// The alerts' digest; `None` when the record of accepted messages is off
    /// (`wecom.dedup_window: 0s`), and then nothing is looked up or recorded.
    pub alerts: Option<AlertsDigest>,
    pub message: RenderedMessage,
}

/// Delivers rendered messages through the configured targets.
pub struct Notifier {
    targets: HashMap<String, Arc<dyn Target>>,
    store: DeliveryStore,
    metrics: Metrics,
    settings: WeComSettings,
}

impl Notifier {
    /// One target per app, robot and chat. Targets without credentials, or all of them
    /// when `dry_run` is set, log messages instead of sending them.
    pub fn new(
        config: &Config,
        clients: &Clients,
        store: DeliveryStore,
        metrics: Metrics,
        dry_run: bool,
    ) -> Notifier {
        let parts = Parts {
            clients,
            settings: &config.wecom,
            dry_run,
        };
        let targets = build_targets(config, &parts);
        for target in targets.values() {
            target.prepare_metrics(&metrics);
        }
        for route in &config.routes {
            for outcome in Outcome::ALL {
                metrics.notifications.with_label_values(&[
                    &route.name,
                    route.target_name(),
                    outcome.as_str(),
                ]);
            }
        }
        Notifier {
            targets,
            store,
            metrics,
            settings: config.wecom.clone(),
        }
    }

    /// The target of a route. Validation guarantees every route's target exists.
    fn target(&self, route: &RouteConfig) -> &dyn Target {
        self.targets[route.target_name()].as_ref()
    }

    /// What the route's text and markdown are fitted to.
    pub fn limits(&self, route: &RouteConfig) -> ContentLimits {
        *self.target(route).limits()
    }

    /// Names of the targets that only log their messages.
    pub fn dry_run_targets(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .targets
            .iter()
            .filter(|(_, target)| target.is_dry_run())
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// The exact requests a message goes out as: one per part of a series and, for apps,
    /// recipient batch.
    pub fn requests(
        &self,
        route: &RouteConfig,
        recipients: &Recipients,
        mentions: &Mentions,
        message: &RenderedMessage,
    ) -> Vec<Request> {
        let target = self.target(route);
        let audience = Audience { recipients, mentions };
        let parts = message.parts.len();
        let mut requests = Vec::new();
        for (index, part) in message.parts.iter().enumerate() {
            for mut request in target.requests(part, audience) {
                request.identity = format!("{index}/{parts}|{}", request.identity);
                requests.push(request);
            }
        }
        requests
    }

    /// Sends one notification's message, request by request, skipping requests WeCom
    /// already accepted for this group.
    pub async fn deliver(&self, outgoing: &Outgoing<'_>, group_key: &str) -> RouteReport {
        let Outgoing {
            route,
            recipients,
            mentions,
            alerts,
            message,
        } = outgoing;
        let started = Instant::now();
        let deadline = started + self.settings.delivery_deadline;
        let target = self.target(route);
        let requests = self.requests(route, recipients, mentions, message);
        let mut report = RouteReport {
            route: route.name.clone(),
            target: route.target_name().to_string(),
            msgtype: route.msgtype.as_str(),
            alerts: message.total_alerts,
            messages: requests.len(),
            outcome: Outcome::Duplicate,
            cut: message.cut,
            errcode: None,
            error: None,
        };
        let mut failures = Vec::new();
        for request in &requests {
            let key = alerts.map(|alerts| delivery_key(group_key, &route.name, &alerts, &request.identity));
            let claim = match &key {
                None => None,
                Some(key) => match self.claim(key, deadline).await {
                    Claim::Mine(claim) => Some((key, claim)),
                    Claim::Accepted => {
                        info!(
                            "route {}: message already accepted for this group; not sending it again",
                            route.name
                        );
                        continue;
                    }
                    Claim::Pending => continue,
                    Claim::Held => {
                        failures.push(SendFailure::Transient {
                            reason: "in_flight",
                            errcode: None,
                            error: format!(
                                "route {}: another request (an Alertmanager retry or HA peer, on this replica or another) is delivering this message and has not finished within wecom.delivery_deadline; retry",
                                route.name
                            ),
                        });
                        continue;
                    }
                },
            };
            let sent = self.send(target, request, deadline).await;
            match (&sent, claim) {
                (Ok(Some(_)), Some((key, _))) => {
                    self.store.ledger.accepted(key, self.settings.dedup_window).await
                }
                (_, Some((key, claim))) => self.store.ledger.release(key, claim).await,
                _ => {}
            }
            match sent {
                Ok(Some(receipt)) => {
                    self.note_undelivered(route, &receipt);
                    report.outcome = Outcome::Sent;
                }
                Ok(None) => report.outcome = Outcome::DryRun,
                Err(failure) => failures.push(failure),
            }
        }
        // A transient failure wins over a permanent one: Alertmanager's retry can still
        // deliver the transient part, and the record keeps the rest from going out twice.
        if let Some(failure) = failures
            .iter()
            .find(|f| f.is_transient())
            .or_else(|| failures.first())
        {
            (report.outcome, report.errcode) = failure.outcome();
            report.error = Some(failure.to_string());
        }
        self.count(route, report.outcome);
        if message.cut {
            self.metrics.messages_cut.with_label_values(&[&route.name]).inc();
        }
        let summary = format!(
            "route {} → {}: {} for {} alert(s) to {} user(s), {} party(ies), {} tag(s), {} mention(s) in {} message(s): {} in {}ms",
            route.name,
            route.target_name(),
            route.msgtype.as_str(),
            message.total_alerts,
            recipients.users.len(),
            recipients.parties.len(),
            recipients.tags.len(),
            mentions.users.len() + mentions.mobiles.len(),
            requests.len(),
            report.outcome.as_str(),
            started.elapsed().as_millis()
        );
        match &report.error {
            Some(error) => warn!("{summary}: {error}"),
            None => info!("{summary}"),
        }
        report
    }

    /// Claims a message before sending it. While another sender holds it, waits for its
    /// outcome — bounded by `deadline`, after which the caller answers 503 and Alertmanager
    /// retries.
    async fn claim(&self, key: &DeliveryKey, deadline: Instant) -> Claim {
        // A holder sends until its own deadline; the margin covers its last answer.
        let hold = self.settings.delivery_deadline + CLAIM_MARGIN;
        loop {
            match self.store.ledger.claim(key, hold).await {
                Claim::Held if Instant::now() + CLAIM_POLL < deadline => tokio::time::sleep(CLAIM_POLL).await,
                other => return other,
            }
        }
    }

    /// Books the request against the target's budget and sends it; `Ok(None)` in dry-run.
    async fn send(
        &self,
        target: &dyn Target,
        request: &Request,
        deadline: Instant,
    ) -> Result<Option<SendReceipt>, SendFailure> {
        if target.is_dry_run() {
            info!(
                "dry-run: {} {} would send: {}",
                target.kind().as_str(),
                target.name(),
                request.body
            );
            return Ok(None);
        }
        let budget = target.budget();
        let charge = crate::state::Charge {
            book: request.budget_keys.clone(),
            checks: request.budget_keys.iter().map(|key| vec![key.clone()]).collect(),
            keep: 0,
            in_flight: self.settings.delivery_deadline,
        };
        let reservation = self
            .store
            .budgets
            .try_reserve(&budget.scope, &charge, budget.limits)
            .await
            .map_err(|over| {
                self.metrics
                    .member_rate_limited
                    .with_label_values(&[target.name()])
                    .inc();
                SendFailure::rate_limited(target.over_budget(&over))
            })?;
        match retry::send(target, &request.body, deadline, self.settings.timeout).await {
            Ok(receipt) => {
                self.store.budgets.settle(&reservation).await;
                Ok(Some(receipt))
            }
            Err(failure) => {
                self.store.budgets.release(reservation).await;
                Err(failure)
            }
        }
    }

    /// The report (and metric, and log line) of a route's message that could not even be
    /// built: its template failed, or its recipients resolved to nobody.
    pub fn not_sent(&self, route: &RouteConfig, alerts: usize, error: String) -> RouteReport {
        warn!("{error}");
        self.count(route, Outcome::FailedPermanent);
        RouteReport {
            route: route.name.clone(),
            target: route.target_name().to_string(),
            msgtype: route.msgtype.as_str(),
            alerts,
            messages: 0,
            outcome: Outcome::FailedPermanent,
            cut: false,
            errcode: None,
            error: Some(error),
        }
    }

    fn count(&self, route: &RouteConfig, outcome: Outcome) {
        self.metrics
            .notifications
            .with_label_values(&[&route.name, route.target_name(), outcome.as_str()])
            .inc();
    }

    fn note_undelivered(&self, route: &RouteConfig, receipt: &SendReceipt) {
        for (kind, ids) in receipt.undelivered() {
            if ids.is_empty() {
                continue;
            }
            self.metrics
                .invalid_recipients
                .with_label_values(&[route.target_name(), kind.as_str()])
                .inc_by(ids.len() as u64);
            warn!(
                "route {} → app {}: WeCom did not deliver to {} {}(s) that are invalid or outside the app's visible range: {}",
                route.name,
                route.target_name(),
                ids.len(),
                kind.as_str(),
                ids.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn notifier(store: DeliveryStore) -> Notifier {
        let yaml = "apps: [{name: ops, corp_id: ww1, agent_id: 1}]\nroutes: [{name: all, app: ops, msgtype: text, to: {users: [a]}}]\nwecom: {delivery_deadline: 1s}\n";
        let config = Config::from_yaml(yaml, "test.yml", Path::new("")).unwrap();
        let metrics = Metrics::new();
        Notifier::new(&config, &Clients::new(metrics.clone()), store, metrics, true)
    }

    #[tokio::test]
    async fn a_message_held_elsewhere_is_waited_for_until_the_deadline_then_left_alone() {
        let store = DeliveryStore::in_memory();
        let notifier = notifier(store.clone());
        let key = [7; 16];
        let Claim::Mine(_) = store.ledger.claim(&key, Duration::from_secs(60)).await else {
            panic!("the other holder's")
        };
        let started = Instant::now();
        let claim = notifier.claim(&key, started + Duration::from_millis(300)).await;
        assert_eq!(claim, Claim::Held);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200),
            "waited for the outcome: {waited:?}"
        );
    }

    #[tokio::test]
    async fn a_waiter_sees_the_holders_outcome() {
        let store = DeliveryStore::in_memory();
        let notifier = notifier(store.clone());
        let key = [8; 16];
        let Claim::Mine(_) = store.ledger.claim(&key, Duration::from_secs(60)).await else {
            panic!("the other holder's")
        };
        let ledger = store.ledger.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ledger.accepted(&key, Duration::from_secs(60)).await;
        });
        let claim = notifier
            .claim(&key, Instant::now() + Duration::from_secs(2))
            .await;
        assert_eq!(claim, Claim::Accepted);
    }
}
