//! Delivery: turns a rendered message into a target's WeCom requests, skips what WeCom
//! already accepted, books each request against the target's rate budget, and sends the
//! rest through the one retry loop. Targets (`app`, `robot`, `appchat`) implement
//! [`target::Target`]; this file knows none of them by name.

pub mod api;
pub mod app;
pub mod appchat;
mod batch;
mod booking;
pub mod cards;
pub mod clients;
mod credentials;
pub mod digest;
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

use log::{debug, info, warn};

use crate::config::{Config, Mentions, Recipients, RouteConfig, StormSettings, WeComSettings};
use crate::metrics::Metrics;
use crate::render::{ContentLimits, RenderedMessage};
use crate::state::{key_hex, Charge, Claim, ClaimId, DeliveryKey, DeliveryStore, DigestBatch, Recorded};
use api::SendReceipt;
use booking::Bookings;
pub use cards::{CardPlan, CardRecord, Cards};
pub use clients::Clients;
use digest::{DigestAudience, HeldNotification, StormLog, StormProfile};
use identity::{delivery_key, notification_key, AlertsDigest};
pub use outcome::{Outcome, RouteReport, SendFailure};
use registry::build_targets;
pub use target::Request;
use target::{Audience, Method, Parts, Target};

/// How long past its delivery deadline a claim outlives a holder that died.
const CLAIM_MARGIN: Duration = Duration::from_secs(2);
/// How often a request waiting for another's claim looks again.
const CLAIM_POLL: Duration = Duration::from_millis(50);

/// With a shared store, notifications of at least this many alerts are looked up in the
/// record before they are rendered (rendering them costs more than the round trip).
const PEEK_SHARED_FROM_ALERTS: usize = 100;
/// Why notifications are collected, for the storm log.
const AT_RESERVE: &str = "recipients at the reserve of their budget";
/// How long a digest waits for budget before looking again.
const DIGEST_BUDGET_POLL: Duration = Duration::from_secs(2);
/// How long a digest WeCom could not take waits before the next attempt.
const DIGEST_RETRY: Duration = Duration::from_secs(5);

/// Why a request was not sent.
enum Unsent {
    /// Its recipients are out of budget (or down to the slots it had to leave).
    OverBudget(SendFailure),
    Failed(SendFailure),
}

/// How sending a digest ended.
#[derive(Debug)]
pub enum DigestOutcome {
    Sent,
    /// Not now (budget, WeCom busy): back in the pending digests for a later attempt.
    PutBack(SendFailure),
    /// WeCom refused it: its notifications are left to Alertmanager's retries.
    Dropped(SendFailure),
}

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
    /// How a digest would count it; `None` when digests are off, or the record of accepted
    /// messages (`alerts`) is, without which nothing could answer a digested notification.
    pub storm: Option<StormProfile>,
    /// For routes with buttons: what the card's record keeps (deliver::cards).
    pub card: Option<CardPlan>,
    pub message: RenderedMessage,
}

/// Delivers rendered messages through the configured targets.
pub struct Notifier {
    targets: HashMap<String, Arc<dyn Target>>,
    /// Each target's call slots (`wecom.max_concurrent_calls`).
    slots: HashMap<String, Arc<tokio::sync::Semaphore>>,
    store: DeliveryStore,
    metrics: Metrics,
    settings: WeComSettings,
    storm: StormSettings,
    storm_log: StormLog,
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
        // By each target's own name, which is what a send looks its slots up by.
        let slots = targets
            .values()
            .map(|target| {
                let slots = tokio::sync::Semaphore::new(config.wecom.max_concurrent_calls);
                (target.name().to_string(), Arc::new(slots))
            })
            .collect();
        Notifier {
            targets,
            slots,
            store,
            metrics,
            settings: config.wecom.clone(),
            storm: config.storm.clone(),
            storm_log: StormLog::default(),
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
        let parts = message.parts.len();
        let mut requests = Vec::new();
        let nobody = Mentions::default();
        for (index, part) in message.parts.iter().enumerate() {
            // A series mentions once, in its first message (as its rendered text does): a
            // mention is a ping, and the rest of the series follows within seconds.
            let mentions = if index == 0 { mentions } else { &nobody };
            let audience = Audience { recipients, mentions };
            for mut request in target.requests(part, audience) {
                request.identity = format!("{index}/{parts}|{}", request.identity);
                requests.push(request);
            }
        }
        requests
    }

    /// Sends one notification's message, request by request, skipping requests WeCom
    /// already accepted for this group, within `deadline` (the webhook's: every route and
    /// recipient set of one webhook shares it, so the answer comes in time). During a storm
    /// (its recipients' budget down to the reserve) the notification is collected into a
    /// digest instead (docs/storms.md).
    pub async fn deliver(&self, outgoing: &Outgoing<'_>, group_key: &str, deadline: Instant) -> RouteReport {
        let Outgoing {
            route,
            recipients,
            mentions,
            alerts,
            storm,
            card,
            message,
        } = outgoing;
        let started = Instant::now();
        let target = self.target(route);
        let requests = self.requests(route, recipients, mentions, message);
        let mut report = RouteReport {
            cut: message.cut,
            ..RouteReport::new(route, message.total_alerts, requests.len(), Outcome::Duplicate)
        };
        // `storm` is there only when digests are on and the record (which answers the
        // retries) is kept: see `Outgoing::storm`.
        let digestible = storm.as_ref();
        let keep = match digestible {
            None => 0,
            Some(profile) if self.storm.is_never_digested(&profile.severity) => 1,
            Some(_) => self.storm.reserve,
        };
        let mut failures = Vec::new();
        let mut collect: Vec<(DeliveryKey, ClaimId)> = Vec::new();
        let mut pending = 0;
        for request in &requests {
            let key = alerts.map(|alerts| delivery_key(group_key, &route.name, &alerts, &request.identity));
            let claim = match &key {
                None => None,
                Some(key) => match self.claim(key, deadline).await {
                    Claim::Mine(claim) => Some((*key, claim)),
                    Claim::Accepted => {
                        info!(
                            "route {}: message already accepted for this group; not sending it again",
                            route.name
                        );
                        continue;
                    }
                    Claim::Pending => {
                        pending += 1;
                        continue;
                    }
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
            // Once part of a notification waits for a digest, the rest waits with it: the
            // digest stands for the whole notification.
            if let (Some(claim), false) = (claim, collect.is_empty()) {
                collect.push(claim);
                continue;
            }
            let sent = match card {
                Some(plan) => {
                    let key = claim.map(|(key, _)| key);
                    self.send_card(
                        target,
                        (route, plan, group_key),
                        (request, key.as_ref()),
                        (deadline, keep),
                    )
                    .await
                }
                None => self.send(target, request, deadline, keep).await,
            };
            match (&sent, claim) {
                (Err(Unsent::OverBudget(_)), Some(claim)) if digestible.is_some() => {
                    collect.push(claim);
                    continue;
                }
                (Ok(Some(_)), Some((key, _))) => {
                    self.store.ledger.accepted(&key, self.settings.dedup_window).await
                }
                // WeCom may still receive a message whose call got no answer: its claim is
                // left to expire (delivery_deadline + a margin after it was taken), so a
                // retry meanwhile waits instead of sending a second copy while the first
                // may be in flight. Retries are byte-identical, for WeCom's duplicate check.
                (Err(Unsent::Failed(failure)), Some(_)) if failure.may_have_reached_wecom() => {}
                (_, Some((key, claim))) => self.store.ledger.release(&key, claim).await,
                _ => {}
            }
            match sent {
                Ok(Some(receipt)) => {
                    self.note_undelivered(route, &receipt);
                    report.outcome = Outcome::Sent;
                }
                Ok(None) => report.outcome = Outcome::DryRun,
                Err(Unsent::OverBudget(failure) | Unsent::Failed(failure)) => failures.push(failure),
            }
        }
        let collected = !collect.is_empty();
        if let (true, Some(profile)) = (collected, digestible) {
            self.collect(outgoing, group_key, profile, collect).await;
        }
        // A transient failure wins: Alertmanager's retry can still deliver that part, and
        // the record keeps the rest from going out twice. Then a digest still to come.
        if let Some(failure) = failures.iter().find(|f| f.is_transient()) {
            (report.outcome, report.errcode) = failure.outcome();
            report.error = Some(failure.to_string());
        } else if collected || pending > 0 {
            report.outcome = Outcome::Digested;
            report.error = Some(format!(
                "route {}: collected for the next storm digest (WeCom would silently drop more messages to these recipients now); a retry after the digest was accepted is answered 200",
                route.name
            ));
        } else if let Some(failure) = failures.first() {
            (report.outcome, report.errcode) = failure.outcome();
            report.error = Some(failure.to_string());
        }
        self.count(route, report.outcome);
        if message.cut {
            self.metrics.messages_cut.with_label_values(&[&route.name]).inc();
        }
        let held = match report.outcome {
            Outcome::Digested if collected => Some("digest"),
            Outcome::Digested => Some("pending"),
            Outcome::FailedTransient if failures.iter().any(SendFailure::is_rate_limited) => Some("budget"),
            _ => None,
        };
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
        match (&report.error, held) {
            // A storm is thousands of these a minute: one line per route and interval.
            (Some(error), Some(reason)) => {
                self.metrics
                    .storm_held
                    .with_label_values(&[&route.name, reason])
                    .inc();
                debug!("{summary}: {error}");
                let why = if reason == "budget" {
                    error.as_str()
                } else {
                    AT_RESERVE
                };
                if let Some(line) = self
                    .storm_log
                    .held(&route.name, collected, why, self.storm.interval)
                {
                    warn!("{line}");
                }
            }
            (Some(error), None) => warn!("{summary}: {error}"),
            (None, _) => info!("{summary}"),
        }
        report
    }

    /// Collects a notification into its route and audience's pending digest: its claimed
    /// requests wait for the digest (retries are answered at once) and an entry counts it.
    async fn collect(
        &self,
        outgoing: &Outgoing<'_>,
        group_key: &str,
        profile: &StormProfile,
        claims: Vec<(DeliveryKey, ClaimId)>,
    ) {
        let hold = self.storm.hold;
        let mut claims = claims;
        // The whole notification too, so its retries are answered before rendering.
        if let Some(alerts) = &outgoing.alerts {
            let key = notification_key(group_key, &outgoing.route.name, alerts);
            if let Claim::Mine(claim) = self.store.ledger.claim(&key, hold).await {
                claims.push((key, claim));
            }
        }
        let mut keys = Vec::with_capacity(claims.len());
        for (key, claim) in &claims {
            if self.store.ledger.pend(key, *claim, hold).await {
                keys.push(key_hex(key));
            }
        }
        let audience = DigestAudience::of(outgoing.route, &outgoing.recipients, &outgoing.mentions);
        let held = HeldNotification {
            group: group_key.to_string(),
            at: unix_millis(),
            keys,
            profile: profile.clone(),
        };
        // One entry per version of the group: its retries replace it, a newer version is
        // another entry (the digest counts only the latest).
        let (first, _) = &claims[0];
        let entry = serde_json::to_vec(&held).expect("an entry serialises");
        self.store
            .digests
            .add(
                &audience.id(),
                &audience.encode(),
                first,
                &entry,
                self.storm.interval,
                hold,
            )
            .await;
        self.metrics
            .storm_digested
            .with_label_values(&[&outgoing.route.name])
            .inc();
    }

    /// Answers a notification from the record alone, when a storm digest stands for it:
    /// still pending (503) or accepted (200), without rendering or sending anything. `None`:
    /// it needs delivering. For notifications with digests on (the caller knows).
    pub async fn answer_from_record(
        &self,
        route: &RouteConfig,
        group_key: &str,
        alerts: &AlertsDigest,
        count: usize,
    ) -> Option<RouteReport> {
        // Reading the record costs a round trip with a shared store: worth it only where
        // rendering costs more (a big group); small ones render and find their requests
        // pending when they claim them.
        if self.store.is_shared() && count < PEEK_SHARED_FROM_ALERTS {
            return None;
        }
        let key = notification_key(group_key, &route.name, alerts);
        let (outcome, error) = match self.store.ledger.peek(&key).await {
            Recorded::Pending => (
                Outcome::Digested,
                Some(format!(
                    "route {}: waits for the next storm digest; a retry after the digest was accepted is answered 200",
                    route.name
                )),
            ),
            Recorded::Accepted => (Outcome::Duplicate, None),
            Recorded::Nothing | Recorded::Claimed => return None,
        };
        self.count(route, outcome);
        if outcome == Outcome::Digested {
            self.metrics
                .storm_held
                .with_label_values(&[&route.name, "pending"])
                .inc();
            debug!(
                "route {}: notification pending in a storm digest; answered without rendering",
                route.name
            );
            if let Some(line) = self
                .storm_log
                .held(&route.name, false, AT_RESERVE, self.storm.interval)
            {
                warn!("{line}");
            }
        } else {
            info!(
                "route {}: notification represented by a storm digest WeCom accepted; not sending it again",
                route.name
            );
        }
        Some(RouteReport {
            error,
            ..RouteReport::new(route, count, 0, outcome)
        })
    }

    /// Sends a digest for the notifications of `batch` to `audience` through `route`, and
    /// answers for them: once WeCom accepted it, their retries are answered 200. A digest
    /// that cannot go out now is put back; one WeCom refuses is dropped and its
    /// notifications left to Alertmanager's retries.
    pub async fn send_digest(
        &self,
        route: &RouteConfig,
        audience: &DigestAudience,
        message: &RenderedMessage,
        batch: DigestBatch,
        keys: &[DeliveryKey],
    ) -> DigestOutcome {
        let target = self.target(route);
        let requests = self.requests(route, &audience.recipients, &audience.mentions, message);
        let deadline = Instant::now() + self.settings.delivery_deadline;
        let mut failure = None;
        for request in &requests {
            match self.send(target, request, deadline, 0).await {
                Ok(_) => {}
                Err(Unsent::OverBudget(why) | Unsent::Failed(why)) => {
                    failure = Some(why);
                    break;
                }
            }
        }
        match failure {
            None => {
                for key in keys {
                    self.store.ledger.accepted(key, self.settings.dedup_window).await;
                }
                self.store.digests.sent(&batch.id, self.storm.interval).await;
                DigestOutcome::Sent
            }
            Some(failure) if failure.is_transient() => {
                let retry_in = if failure.is_rate_limited() {
                    DIGEST_BUDGET_POLL
                } else {
                    DIGEST_RETRY
                };
                self.store
                    .digests
                    .put_back(batch, retry_in, self.storm.hold)
                    .await;
                DigestOutcome::PutBack(failure)
            }
            Some(failure) => {
                self.drop_digest(keys).await;
                DigestOutcome::Dropped(failure)
            }
        }
    }

    /// Forgets a digest that cannot be sent any more (its route is gone): its
    /// notifications are left to Alertmanager's retries, which route them anew.
    pub async fn drop_digest(&self, keys: &[DeliveryKey]) {
        for key in keys {
            self.store.ledger.unpend(key).await;
        }
    }

    /// The delivery state, for the digest flush.
    pub fn store(&self) -> &DeliveryStore {
        &self.store
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

    /// Books the request against the target's budget, leaving `keep` slots, and sends it;
    /// `Ok(None)` in dry-run.
    async fn send(
        &self,
        target: &dyn Target,
        request: &Request,
        deadline: Instant,
        keep: usize,
    ) -> Result<Option<SendReceipt>, Unsent> {
        self.send_as(target, Method::Send, &request.body, request, deadline, keep)
            .await
    }

    /// Books what `request` charges, leaving `keep` slots, and calls `method` with `body`;
    /// `Ok(None)` in dry-run.
    async fn send_as(
        &self,
        target: &dyn Target,
        method: Method,
        body: &serde_json::Value,
        request: &Request,
        deadline: Instant,
        keep: usize,
    ) -> Result<Option<SendReceipt>, Unsent> {
        if target.is_dry_run() {
            let verb = match method {
                Method::Send => "send",
                Method::UpdateCard => "update a card with",
            };
            info!(
                "dry-run: {} {} would {verb}: {body}",
                target.kind().as_str(),
                target.name(),
            );
            return Ok(None);
        }
        let charge = Charge {
            keep,
            ..request.charge.clone()
        };
        let bookings = Bookings::first(&self.store.budgets, target, charge, deadline)
            .await
            .map_err(|over| {
                self.metrics
                    .member_rate_limited
                    .with_label_values(&[target.name()])
                    .inc();
                Unsent::OverBudget(SendFailure::rate_limited(over))
            })?;
        let sending = retry::Sending {
            deadline,
            call_timeout: self.settings.timeout,
            slots: &self.slots[target.name()],
        };
        match retry::send(target, method, body, &sending, &bookings).await {
            Ok(receipt) => {
                bookings.accepted().await;
                Ok(Some(receipt))
            }
            Err(failure) => {
                bookings.failed(&failure).await;
                Err(Unsent::Failed(failure))
            }
        }
    }

    /// The report of a message whose turn came after the webhook's deadline: nothing was
    /// sent; Alertmanager's retry delivers it (what was accepted meanwhile is not sent
    /// again).
    pub fn not_attempted(&self, outgoing: &Outgoing<'_>) -> RouteReport {
        let route = outgoing.route;
        let error = format!(
            "route {}: not sent within wecom.delivery_deadline ({}s): this webhook's other messages went first, at most wecom.max_parallel_sends ({}) at a time; Alertmanager's retry delivers it",
            route.name,
            self.settings.delivery_deadline.as_secs(),
            self.settings.max_parallel_sends
        );
        debug!("{error}");
        self.count(route, Outcome::FailedTransient);
        RouteReport {
            error: Some(error),
            ..RouteReport::new(route, outgoing.message.total_alerts, 0, Outcome::FailedTransient)
        }
    }

    /// The report (and metric, and log line) of a route's message that could not even be
    /// built: its template failed, or its recipients resolved to nobody.
    pub fn not_sent(&self, route: &RouteConfig, alerts: usize, error: String) -> RouteReport {
        warn!("{error}");
        self.count(route, Outcome::FailedPermanent);
        RouteReport {
            error: Some(error),
            ..RouteReport::new(route, alerts, 0, Outcome::FailedPermanent)
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

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
