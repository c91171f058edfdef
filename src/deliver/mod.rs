//! Delivery: turns a rendered message into WeCom `message/send` requests (batched by
//! recipient limits), skips what was already accepted, and sends the rest through the
//! route's app.

pub mod api;
pub mod batch;
pub mod error;
pub mod ledger;
pub mod rate_budget;
pub mod retry;
pub mod robot;
pub mod sender;
pub mod state;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{AppConfig, Config, Mentions, MsgType, Recipients, RouteConfig, Target, WeComSettings};
use crate::metrics::Metrics;
use crate::render::{MessageContent, RenderedMessage};
use crate::route::Notification;
use api::SendReceipt;
use ledger::delivery_key;
use rate_budget::RateBudget;
use robot::RobotSender;
use sender::{AppSender, SendFailure, Sent};
use state::DeliveryState;

/// One WeCom request, and what it counts against the rate budget (users, or the robot).
#[derive(Debug, Clone)]
pub struct Request {
    pub body: Value,
    pub budget_keys: Vec<String>,
    /// Which part of a series and which recipients: with the alerts, what makes a request
    /// the same request again even if its text changed (a template showing "firing for
    /// 12m" renders differently on every retry).
    pub identity: String,
}

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
    /// The app or robot.
    pub target: String,
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

/// Where one target's messages go, and what they may cost.
enum TargetSender {
    App {
        sender: AppSender,
        /// Per user, against WeCom's silent 30-a-minute drop.
        budget: Arc<RateBudget>,
    },
    Robot {
        sender: RobotSender,
        /// The robot's 20 messages a minute.
        budget: Arc<RateBudget>,
    },
}

impl TargetSender {
    fn is_dry_run(&self) -> bool {
        match self {
            TargetSender::App { sender, .. } => sender.is_dry_run(),
            TargetSender::Robot { sender, .. } => sender.is_dry_run(),
        }
    }
}

/// Delivers rendered messages through the configured apps and robots.
pub struct Notifier {
    targets: HashMap<String, TargetSender>,
    state: Arc<DeliveryState>,
    metrics: Metrics,
    settings: WeComSettings,
}

impl Notifier {
    /// One sender per app and robot. Apps without a secret, robots without a key, or
    /// everything when `dry_run` is set, log messages instead of sending them.
    pub fn new(config: &Config, state: Arc<DeliveryState>, dry_run: bool) -> Notifier {
        let api = &state.api;
        let mut targets = HashMap::new();
        for app in &config.apps {
            let tokens = match (&app.secret, dry_run) {
                (Some(secret), false) => Some(state.token_cache(app, secret)),
                _ => None,
            };
            let sender = AppSender::new(app.clone(), api.clone(), tokens, config.wecom.timeout);
            let budget = state.budget(&format!("app:{}", app.name), RateBudget::members);
            targets.insert(app.name.clone(), TargetSender::App { sender, budget });
        }
        for route in &config.routes {
            if let Target::Robot(robot) = &route.target {
                let mut robot = robot.clone();
                if dry_run {
                    robot.key = None;
                }
                let budget = state.budget(&format!("robot:{}", robot.name), RateBudget::robot);
                let sender = RobotSender::new(robot.clone(), api.clone(), config.wecom.timeout);
                targets
                    .entry(robot.name.clone())
                    .or_insert(TargetSender::Robot { sender, budget });
            }
        }
        state.ledger.set_window(config.wecom.dedup_window);
        Notifier {
            targets,
            metrics: state.metrics.clone(),
            state,
            settings: config.wecom.clone(),
        }
    }

    /// What identifies a notification's alerts in the record of accepted messages; `None`
    /// when de-duplication is off (`wecom.dedup_window: 0s`), and then nothing is hashed,
    /// looked up or recorded per message.
    pub fn alerts_identity(&self, alerts: &[&crate::ingest::payload::Alert]) -> Option<String> {
        (!self.settings.dedup_window.is_zero()).then(|| alerts_identity(alerts))
    }

    /// Names of the apps and robots that only log their messages.
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

    /// Sends one notification's message, batch by batch, skipping requests WeCom already
    /// accepted for this group. `alerts` is [`Notifier::alerts_identity`] of the
    /// notification's alerts (computed by the caller, which can then let go of the alerts
    /// themselves).
    pub async fn deliver(
        &self,
        notification: &Notification<'_, '_>,
        alerts: Option<&str>,
        group_key: &str,
        message: &RenderedMessage,
    ) -> RouteReport {
        let route = notification.route;
        let started = Instant::now();
        let deadline = started + self.settings.delivery_deadline;
        let target = &self.targets[route.target_name()];
        let requests = self.requests(notification, message);
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
        for Request {
            body,
            budget_keys,
            identity,
        } in &requests
        {
            let key =
                alerts.map(|alerts| delivery_key(group_key, &route.name, &format!("{alerts}|{identity}")));
            if key.as_ref().is_some_and(|key| self.state.ledger.contains(key)) {
                info!(
                    "route {}: message already accepted for this group; not sending it again",
                    route.name
                );
                continue;
            }
            let budget = match target {
                TargetSender::App { budget, .. } | TargetSender::Robot { budget, .. } => budget,
            };
            let reservation = if target.is_dry_run() {
                None
            } else {
                match budget.try_reserve(budget_keys) {
                    Ok(reservation) => Some(reservation),
                    Err(over) => {
                        self.metrics
                            .member_rate_limited
                            .with_label_values(&[route.target_name()])
                            .inc();
                        failures.push(rate_limited(route, target, &over, budget.per_minute()));
                        continue;
                    }
                }
            };
            let sent = match target {
                TargetSender::App { sender, .. } => sender.send(body, deadline).await,
                TargetSender::Robot { sender, .. } => sender.send(body, deadline).await,
            };
            match sent {
                Ok(Sent::Accepted(receipt)) => {
                    if let Some(key) = key {
                        self.state.ledger.record(key);
                    }
                    self.note_invalid_recipients(route, &receipt);
                    report.outcome = Outcome::Sent;
                }
                Ok(Sent::DryRun) => report.outcome = Outcome::DryRun,
                Err(failure) => {
                    if let Some(reservation) = reservation {
                        budget.release(reservation);
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
            .with_label_values(&[&route.name, route.target_name(), report.outcome.as_str()])
            .inc();
        if message.cut {
            self.metrics.messages_cut.with_label_values(&[&route.name]).inc();
        }
        let to = &notification.recipients;
        let summary = format!(
            "route {} → {}: {} for {} alert(s) to {} user(s), {} party(ies), {} tag(s), {} mention(s) in {} message(s): {} in {}ms",
            route.name,
            route.target_name(),
            route.msgtype.as_str(),
            message.total_alerts,
            to.users.len(),
            to.parties.len(),
            to.tags.len(),
            notification.mentions.users.len() + notification.mentions.mobiles.len(),
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

    /// The exact requests a notification's message goes out as: for an app, one per part
    /// of a series and recipient batch; for a robot, one per part.
    pub fn requests(&self, notification: &Notification<'_, '_>, message: &RenderedMessage) -> Vec<Request> {
        let target = &self.targets[notification.route.target_name()];
        let parts = message.parts.len();
        let batches = batch::batches(&notification.recipients);
        let mut requests = Vec::new();
        for (index, part) in message.parts.iter().enumerate() {
            match target {
                TargetSender::App { sender, .. } => {
                    for to in &batches {
                        let identity = format!(
                            "{index}/{parts}|{}|{}|{}",
                            to.users.join(","),
                            to.parties.join(","),
                            to.tags.join(",")
                        );
                        requests.push(Request {
                            body: self.app_request(sender.app(), to, part),
                            budget_keys: to.users.clone(),
                            identity,
                        });
                    }
                }
                TargetSender::Robot { sender, .. } => requests.push(Request {
                    body: robot_request(part, &notification.mentions),
                    budget_keys: vec![sender.name().to_string()],
                    identity: format!("{index}/{parts}|{}", notification.mentions.users.join(",")),
                }),
            }
        }
        requests
    }

    /// A complete `message/send` body. Serialised deterministically (sorted keys), so the
    /// same message always has the same delivery key.
    fn app_request(&self, app: &AppConfig, to: &Recipients, content: &MessageContent) -> Value {
        let msgtype = content.msgtype().as_str();
        let mut body = json!({
            "msgtype": msgtype,
            "agentid": app.agent_id,
            msgtype: content.body(),
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
                .with_label_values(&[route.target_name(), kind])
                .inc_by(ids.len() as u64);
            warn!(
                "route {} → app {}: WeCom did not deliver to {} {kind}(s) that are invalid or outside the app's visible range: {}",
                route.name,
                route.target_name(),
                ids.len(),
                ids.join(", ")
            );
        }
    }
}

/// A robot `webhook/send` body. Text messages carry mentions as lists; markdown mentions
/// are `<@userid>` in the content (the template puts them there); markdown_v2 has none.
fn robot_request(part: &MessageContent, mentions: &Mentions) -> Value {
    let msgtype = part.msgtype().as_str();
    let mut content = part.body();
    if part.msgtype() == MsgType::Text {
        if !mentions.users.is_empty() {
            content["mentioned_list"] = json!(mentions.users);
        }
        if !mentions.mobiles.is_empty() {
            content["mentioned_mobile_list"] = json!(mentions.mobiles);
        }
    }
    json!({ "msgtype": msgtype, msgtype: content })
}

/// The alerts a notification carries, by what makes them different notifications:
/// labels, status and times (Alertmanager's fingerprint is derived from the labels).
fn alerts_identity(alerts: &[&crate::ingest::payload::Alert]) -> String {
    let mut parts: Vec<String> = alerts
        .iter()
        .map(|alert| {
            format!(
                "{}|{}|{:?}|{:?}",
                serde_json::to_string(&alert.labels).unwrap_or_default(),
                alert.status.as_str(),
                alert.starts_at,
                alert.ends_at
            )
        })
        .collect();
    parts.sort_unstable();
    parts.join("\n")
}

fn rate_limited(
    route: &RouteConfig,
    target: &TargetSender,
    over: &[String],
    per_minute: usize,
) -> SendFailure {
    let error = match target {
        TargetSender::App { .. } => format!(
            "app {} already sent {} their limit of {per_minute} messages a minute ({} an hour); WeCom would silently drop this one, so it is held back for Alertmanager to retry",
            route.target_name(),
            over.join(", "),
            rate_budget::MEMBER_PER_HOUR
        ),
        TargetSender::Robot { .. } => format!(
            "robot {} already sent its limit of {per_minute} messages a minute; held back for Alertmanager to retry",
            route.target_name()
        ),
    };
    SendFailure::Transient {
        reason: "rate_limited",
        errcode: None,
        error,
    }
}
