//! Delivery: turns a rendered message into WeCom `message/send` requests (batched by
//! recipient limits), skips what was already accepted, and sends the rest through the
//! route's app.

pub mod api;
pub mod batch;
pub mod error;
pub mod ledger;
pub mod member_budget;
pub mod sender;
pub mod token;

use std::collections::HashMap;
use std::time::Instant;

use log::{info, warn};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{AppConfig, Config, Recipients, RouteConfig, WeComSettings};
use crate::metrics::Metrics;
use crate::render::RenderedMessage;
use api::{SendReceipt, WeComApi};
use ledger::{delivery_key, DeliveryLedger};
use member_budget::MemberBudget;
use sender::{AppSender, SendFailure, Sent};
use token::AccessTokenCache;

/// How one route's notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// WeCom accepted every message.
    Sent,
    /// Every message had been accepted before (a re-sent group); nothing was sent again.
    Duplicate,
    /// Dry-run: logged, not sent.
    DryRun,
    /// Worth retrying: Alertmanager should try again (503).
    FailedTransient,
    /// WeCom refused the message; retrying will not help (422).
    FailedPermanent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Duplicate => "duplicate",
            Outcome::DryRun => "dry_run",
            Outcome::FailedTransient => "failed_transient",
            Outcome::FailedPermanent => "failed_permanent",
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::FailedTransient | Outcome::FailedPermanent)
    }
}

/// The report of one route's notification, returned to Alertmanager in the response body.
#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    pub route: String,
    pub app: String,
    pub msgtype: &'static str,
    pub alerts: usize,
    /// `message/send` requests this notification needed (recipient batches).
    pub messages: usize,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Delivers rendered messages through the configured apps.
pub struct Notifier {
    senders: HashMap<String, AppSender>,
    /// Per app: what each user was sent recently, against WeCom's silent per-member limit.
    budgets: HashMap<String, MemberBudget>,
    ledger: DeliveryLedger,
    metrics: Metrics,
    settings: WeComSettings,
}

impl Notifier {
    /// One sender per app. Apps without a secret, or every app when `dry_run` is set, log
    /// messages instead of sending them.
    pub fn new(config: &Config, metrics: Metrics, dry_run: bool) -> Notifier {
        let api = WeComApi::new(metrics.clone());
        let senders = config
            .apps
            .iter()
            .map(|app| {
                let tokens = match (&app.secret, dry_run) {
                    (Some(secret), false) => Some(AccessTokenCache::new(
                        &app.name,
                        &app.corp_id,
                        secret.clone(),
                        &config.wecom.api_url,
                        api.clone(),
                        metrics.clone(),
                    )),
                    _ => None,
                };
                let sender = AppSender::new(
                    app.clone(),
                    &config.wecom.api_url,
                    api.clone(),
                    tokens,
                    config.wecom.timeout,
                );
                (app.name.clone(), sender)
            })
            .collect();
        let budgets = config
            .apps
            .iter()
            .map(|app| (app.name.clone(), MemberBudget::default()))
            .collect();
        Notifier {
            senders,
            budgets,
            ledger: DeliveryLedger::new(config.wecom.dedup_window),
            metrics,
            settings: config.wecom.clone(),
        }
    }

    /// Names of the apps that only log their messages.
    pub fn dry_run_apps(&self) -> Vec<&str> {
        let mut apps: Vec<&str> = self
            .senders
            .values()
            .filter(|s| s.is_dry_run())
            .map(|s| s.app().name.as_str())
            .collect();
        apps.sort_unstable();
        apps
    }

    /// Sends `message` to the route's recipients, batch by batch, skipping batches WeCom
    /// already accepted for this group.
    pub async fn deliver(
        &self,
        route: &RouteConfig,
        group_key: &str,
        message: &RenderedMessage,
    ) -> RouteReport {
        let started = Instant::now();
        let deadline = started + self.settings.delivery_deadline;
        let sender = &self.senders[&route.app];
        let batches = batch::batches(&route.to);
        let mut report = RouteReport {
            route: route.name.clone(),
            app: route.app.clone(),
            msgtype: route.msgtype.as_str(),
            alerts: message.total_alerts,
            messages: batches.len(),
            outcome: Outcome::Duplicate,
            cut: message.cut,
            errcode: None,
            error: None,
        };
        let mut failures = Vec::new();
        for to in &batches {
            let body = self.request_body(sender.app(), to, message);
            let key = delivery_key(group_key, &route.name, &body.to_string());
            if self.ledger.contains(&key) {
                info!(
                    "route {}: message already accepted for this group; not sending it again",
                    route.name
                );
                continue;
            }
            let reservation = if sender.is_dry_run() {
                None
            } else {
                match self.budgets[&route.app].try_reserve(&to.users) {
                    Ok(reservation) => Some(reservation),
                    Err(over) => {
                        self.metrics
                            .member_rate_limited
                            .with_label_values(&[&route.app])
                            .inc();
                        failures.push(SendFailure::Transient {
                            reason: "member_rate_limit",
                            errcode: None,
                            error: format!(
                                "app {} already sent {} their limit of {} messages a minute ({} an hour); WeCom would silently drop this one, so it is held back for Alertmanager to retry",
                                route.app,
                                over.join(", "),
                                member_budget::PER_MINUTE,
                                member_budget::PER_HOUR
                            ),
                        });
                        continue;
                    }
                }
            };
            match sender.send(&body, deadline).await {
                Ok(Sent::Accepted(receipt)) => {
                    self.ledger.record(key);
                    self.note_invalid_recipients(route, &receipt);
                    report.outcome = Outcome::Sent;
                }
                Ok(Sent::DryRun) => report.outcome = Outcome::DryRun,
                Err(failure) => {
                    if let Some(reservation) = reservation {
                        self.budgets[&route.app].release(reservation);
                    }
                    failures.push(failure);
                }
            }
        }
        // A transient failure wins over a permanent one: Alertmanager's retry can still
        // deliver the transient part, and the ledger keeps the rest from going out twice.
        if let Some(failure) = failures
            .iter()
            .find(|f| matches!(f, SendFailure::Transient { .. }))
            .or_else(|| failures.first())
        {
            let (outcome, errcode) = match failure {
                SendFailure::Transient { errcode, .. } => (Outcome::FailedTransient, *errcode),
                SendFailure::Permanent { errcode, .. } => (Outcome::FailedPermanent, *errcode),
            };
            report.outcome = outcome;
            report.errcode = errcode;
            report.error = Some(failure.to_string());
        }
        self.metrics
            .notifications
            .with_label_values(&[&route.name, report.outcome.as_str()])
            .inc();
        if message.cut {
            self.metrics.messages_cut.with_label_values(&[&route.name]).inc();
        }
        let summary = format!(
            "route {} → app {}: {} for {} alert(s) to {} user(s), {} party(ies), {} tag(s) in {} message(s): {} in {}ms",
            route.name,
            route.app,
            route.msgtype.as_str(),
            message.total_alerts,
            route.to.users.len(),
            route.to.parties.len(),
            route.to.tags.len(),
            batches.len(),
            report.outcome.as_str(),
            started.elapsed().as_millis()
        );
        match &report.error {
            Some(error) => warn!("{summary}: {error}"),
            None => info!("{summary}"),
        }
        report
    }

    /// A complete `message/send` body. Serialised deterministically (sorted keys), so the
    /// same message always has the same delivery key.
    fn request_body(&self, app: &AppConfig, to: &Recipients, message: &RenderedMessage) -> Value {
        let msgtype = message.content.msgtype().as_str();
        let mut body = json!({
            "msgtype": msgtype,
            "agentid": app.agent_id,
            msgtype: message.content.body(),
            "safe": u8::from(app.safe),
        });
        let fields = [
            ("touser", &to.users),
            ("toparty", &to.parties),
            ("totag", &to.tags),
        ];
        for (field, ids) in fields {
            if !ids.is_empty() {
                body[field] = json!(ids.join("|"));
            }
        }
        let window = self.settings.dedup_window.as_secs();
        if self.settings.duplicate_check && window > 0 {
            body["enable_duplicate_check"] = json!(1);
            body["duplicate_check_interval"] = json!(window);
        }
        body
    }

    fn note_invalid_recipients(&self, route: &RouteConfig, receipt: &SendReceipt) {
        let kinds = [
            ("user", &receipt.invalid_users),
            ("party", &receipt.invalid_parties),
            ("tag", &receipt.invalid_tags),
            ("unlicensed_user", &receipt.unlicensed_users),
        ];
        for (kind, ids) in kinds {
            if ids.is_empty() {
                continue;
            }
            self.metrics
                .invalid_recipients
                .with_label_values(&[&route.app, kind])
                .inc_by(ids.len() as u64);
            warn!(
                "route {} → app {}: WeCom did not deliver to {} {kind}(s) that are invalid or outside the app's visible range: {}",
                route.name,
                route.app,
                ids.len(),
                ids.join(", ")
            );
        }
    }
}
