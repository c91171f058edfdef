//! The service's own Prometheus metrics, on a registry per instance (tests run several).
//! Label values come from small fixed sets and are pre-initialised to 0, so `rate()` and
//! absence alerts work from the first scrape: each layer pre-initialises the series whose
//! label values it owns (deliver its endpoints, errcodes and outcomes, the service its
//! routes, HTTP its status codes), so no list of them is kept here by hand.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::model::AlertStatus;

const NAMESPACE: &str = "alertmanager_wecom";

/// Typed handles to every metric the service exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub alerts_received: IntCounterVec,
    pub alerts_unrouted: IntCounter,
    pub webhooks: IntCounterVec,
    pub notifications: IntCounterVec,
    pub messages_cut: IntCounterVec,
    pub api_requests: IntCounterVec,
    pub api_duration: HistogramVec,
    pub token_refreshes: IntCounterVec,
    pub token_failures: IntCounterVec,
    pub invalid_recipients: IntCounterVec,
    pub member_rate_limited: IntCounterVec,
    pub recipients_unresolved: IntCounterVec,
    /// Notifications answered 503 during a storm (collected for a digest, or its retry).
    pub storm_held: IntCounterVec,
    /// Notifications newly collected into a pending digest.
    pub storm_digested: IntCounterVec,
    /// Digest messages, by route and outcome.
    pub storm_digests: IntCounterVec,
    /// Notifications represented by digests WeCom accepted.
    pub storm_represented: IntCounterVec,
    /// Seconds the oldest notification pending in a digest has waited.
    pub storm_oldest_pending: Gauge,
    /// WeCom callbacks (clicks on cards), by app, event and outcome.
    pub callbacks: IntCounterVec,
    /// Silences created from WeCom cards, by route.
    pub silences_created: IntCounterVec,
    /// Cards updated in place, by route and reason.
    pub cards_updated: IntCounterVec,
    /// 1 while the configured shared state store is unreachable and local state is used.
    pub state_degraded: IntGauge,
    pub state_backend: IntGaugeVec,
    config_reload_successful: IntGauge,
    config_reload_timestamp: Gauge,
}

impl Metrics {
    /// Registers every metric (the series of label values a layer owns are pre-initialised by it).
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some(NAMESPACE.to_string()), None).expect("valid namespace");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric");
            counter
        };
        let alerts_received = counter(
            "alerts_received_total",
            "Alerts received from Alertmanager, by alert status.",
            &["status"],
        );
        let webhooks = counter(
            "webhooks_received_total",
            "Webhook requests received, by the HTTP status answered.",
            &["code"],
        );
        let notifications = counter(
            "notifications_total",
            "Messages by route, target (app, robot or chat) and outcome.",
            &["route", "target", "outcome"],
        );
        let messages_cut = counter(
            "messages_cut_total",
            "Messages that had to be shortened to fit WeCom's limits, by route.",
            &["route"],
        );
        let api_requests = counter(
            "wecom_api_requests_total",
            "Calls to the WeCom API by endpoint and errcode (0 is success).",
            &["endpoint", "errcode"],
        );
        let token_refreshes = counter(
            "token_refreshes_total",
            "Access tokens fetched, by app and reason.",
            &["app", "reason"],
        );
        let token_failures = counter(
            "token_failures_total",
            "Failed access token fetches, by app and reason.",
            &["app", "reason"],
        );
        let invalid_recipients = counter(
            "invalid_recipients_total",
            "Recipients WeCom reported as invalid or unlicensed in accepted messages, by app and kind.",
            &["app", "kind"],
        );
        let member_rate_limited = counter(
            "member_rate_limited_total",
            "Messages held back (answered 503) because WeCom would drop or refuse them: a user already got 30 messages from the app this minute, a chat 200, or a robot sent 20.",
            &["target"],
        );
        let storm_held = counter(
            "storm_held_total",
            "Notifications answered 503 because WeCom would drop them, by route and reason: collected into a digest (digest), a retry of one pending in a digest (pending), or held for budget with digests off (budget).",
            &["route", "reason"],
        );
        let storm_digested = counter(
            "storm_digested_total",
            "Notifications collected into a pending storm digest instead of being sent on their own, by route.",
            &["route"],
        );
        let storm_digests = counter(
            "storm_digest_messages_total",
            "Storm digests, by route and outcome (sent, retry: put back for later, failed: dropped and left to Alertmanager's retries).",
            &["route", "outcome"],
        );
        let storm_represented = counter(
            "storm_represented_total",
            "Notifications represented by storm digests WeCom accepted, by route.",
            &["route"],
        );
        let callbacks = counter(
            "callbacks_total",
            "Callbacks WeCom posted to /wecom/callback/APP, by app, event (verify: the URL check; template_card_event: a click; other) and outcome (acted, duplicate, refused_signature, refused_stale, refused_malformed, not_allowed, unknown_task, failed, ignored).",
            &["app", "event", "outcome"],
        );
        let silences_created = counter(
            "silences_created_total",
            "Silences created in Alertmanager from a card's silence button, by route.",
            &["route"],
        );
        let cards_updated = counter(
            "cards_updated_total",
            "Cards updated in place through message/update_template_card, by route and reason (acknowledged, silenced, silence_failed, resolved), or whose update WeCom refused (refused: a new message went out instead).",
            &["route", "reason"],
        );
        let storm_oldest_pending = Gauge::with_opts(Opts::new(
            "storm_oldest_pending_seconds",
            "How long the oldest notification pending in a storm digest has waited (0: none).",
        ))
        .expect("valid metric");
        registry
            .register(Box::new(storm_oldest_pending.clone()))
            .expect("unique metric");
        let alerts_unrouted = IntCounter::with_opts(Opts::new(
            "alerts_unrouted_total",
            "Alerts that matched no route and were not delivered.",
        ))
        .expect("valid metric");
        registry
            .register(Box::new(alerts_unrouted.clone()))
            .expect("unique metric");
        let api_duration = HistogramVec::new(
            HistogramOpts::new(
                "wecom_api_request_duration_seconds",
                "Duration of WeCom API calls.",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["endpoint"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(api_duration.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Build information; the value is always 1."),
            &["version"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");

        for status in AlertStatus::ALL {
            alerts_received.with_label_values(&[status.as_str()]);
        }
        let recipients_unresolved = counter(
            "recipients_unresolved_total",
            "Alerts not delivered because the route's recipients resolved to nobody and it has no fallback_to.",
            &["route"],
        );
        let state_degraded = IntGauge::with_opts(Opts::new(
            "state_degraded",
            "1 while the configured shared state store (Redis) is unreachable and this replica delivers on local state; 0 otherwise.",
        ))
        .expect("valid metric");
        registry
            .register(Box::new(state_degraded.clone()))
            .expect("unique metric");
        let state_backend = IntGaugeVec::new(
            Opts::new(
                "state_backend_info",
                "The configured delivery state backend; the value is always 1.",
            ),
            &["backend"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(state_backend.clone()))
            .expect("unique metric");
        let config_reload_successful = IntGauge::with_opts(Opts::new(
            "config_last_reload_successful",
            "Whether the last configuration reload attempt was successful (1) or not (0).",
        ))
        .expect("valid metric");
        registry
            .register(Box::new(config_reload_successful.clone()))
            .expect("unique metric");
        let config_reload_timestamp = Gauge::with_opts(Opts::new(
            "config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration load.",
        ))
        .expect("valid metric");
        registry
            .register(Box::new(config_reload_timestamp.clone()))
            .expect("unique metric");

        Metrics {
            registry,
            config_reload_successful,
            config_reload_timestamp,
            alerts_received,
            alerts_unrouted,
            webhooks,
            notifications,
            messages_cut,
            api_requests,
            api_duration,
            token_refreshes,
            token_failures,
            invalid_recipients,
            member_rate_limited,
            recipients_unresolved,
            storm_held,
            storm_digested,
            storm_digests,
            storm_represented,
            storm_oldest_pending,
            callbacks,
            silences_created,
            cards_updated,
            state_degraded,
            state_backend,
        }
    }

    /// Records the outcome of loading a configuration.
    pub fn record_reload(&self, success: bool) {
        self.config_reload_successful.set(i64::from(success));
        if success {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.config_reload_timestamp.set(now);
        }
    }

    /// The text exposition format for `GET /metrics`.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
