//! The storm digest flush: sends the pending digests that are due — whichever replica
//! gets to them first — rendered through each route's digest template. Runs beside the
//! request handlers (see `Runtime::start_background`), once a second.

use log::{info, warn};

use super::Service;
use crate::config::RouteConfig;
use crate::deliver::digest::{summarize, DigestAudience};
use crate::deliver::DigestOutcome;
use crate::render::{DigestSummary, RenderedMessage};
use crate::state::DigestBatch;

/// Digests taken per pass, so one pass stays short however many audiences a storm hits.
const PER_PASS: usize = 64;

impl Service {
    /// Sends the digests due now; returns how many were sent. Also updates the gauge of
    /// the oldest pending notification.
    pub async fn flush_digests(&self) -> usize {
        let digests = &self.notifier.store().digests;
        let mut sent = 0;
        for id in digests.due(PER_PASS).await {
            if let Some(batch) = digests.take(&id).await {
                sent += usize::from(self.flush_one(batch).await);
            }
        }
        let oldest = digests.oldest_pending().await.unwrap_or_default();
        self.metrics.storm_oldest_pending.set(oldest.as_secs_f64());
        sent
    }

    async fn flush_one(&self, batch: DigestBatch) -> bool {
        let decoded = summarize(&batch, &self.config.storm);
        if decoded.unreadable > 0 {
            warn!(
                "storm digest {}: {} entry(ies) unreadable (written by another version?); their notifications wait for Alertmanager's retries",
                batch.id, decoded.unreadable
            );
        }
        let audience = DigestAudience::decode(&batch.header);
        let route = audience
            .as_ref()
            .and_then(|audience| self.config.routes.iter().find(|r| r.name == audience.route));
        let (Some(audience), Some(route)) = (audience, route) else {
            warn!(
                "storm digest {}: its route is no longer configured; its {} notification(s) are delivered anew on Alertmanager's next retries",
                batch.id, decoded.summary.notifications
            );
            self.notifier.drop_digest(&decoded.keys).await;
            return false;
        };
        let summary = &decoded.summary;
        let Some(message) = self.render_digest(route, &audience, summary) else {
            self.notifier.drop_digest(&decoded.keys).await;
            self.metrics
                .storm_digests
                .with_label_values(&[&route.name, "failed"])
                .inc();
            return false;
        };
        let waited = batch.waited;
        let outcome = self
            .notifier
            .send_digest(route, &audience, &message, batch, &decoded.keys)
            .await;
        let label = match &outcome {
            DigestOutcome::Sent => "sent",
            DigestOutcome::PutBack(_) => "retry",
            DigestOutcome::Dropped(_) => "failed",
        };
        self.metrics
            .storm_digests
            .with_label_values(&[&route.name, label])
            .inc();
        let what = format!(
            "route {} → {}: storm digest for {} notification(s) ({} firing, {} resolved alert(s), {} alertname(s)) to {}, oldest waited {}s",
            route.name,
            route.target_name(),
            summary.notifications,
            summary.firing_count,
            summary.resolved_count,
            summary.alertnames.len(),
            audience.describe(),
            waited.as_secs()
        );
        match outcome {
            DigestOutcome::Sent => {
                self.metrics
                    .storm_represented
                    .with_label_values(&[&route.name])
                    .inc_by(summary.notifications as u64);
                info!("{what}: sent");
                true
            }
            DigestOutcome::PutBack(failure) if failure.is_rate_limited() => {
                log::debug!("{what}: waits for budget: {failure}");
                false
            }
            DigestOutcome::PutBack(failure) => {
                warn!("{what}: not sent, tried again shortly: {failure}");
                false
            }
            DigestOutcome::Dropped(failure) => {
                warn!("{what}: WeCom refused it; its notifications are left to Alertmanager's retries: {failure}");
                false
            }
        }
    }

    /// The route's digest template, falling back to the built-in one for its msgtype if a
    /// custom one fails (a digest must go out); `None` if both fail.
    fn render_digest(
        &self,
        route: &RouteConfig,
        audience: &DigestAudience,
        summary: &DigestSummary,
    ) -> Option<RenderedMessage> {
        let limits = self.notifier.limits(route);
        let mentions = &audience.mentions.users;
        let render = |template: &str| {
            self.renderer
                .render_digest(route, template, summary, mentions, &limits)
        };
        render(&route.digest_template)
            .or_else(|error| {
                let builtin = route.msgtype.builtin_digest_template();
                warn!("{error}; using the built-in {builtin}");
                render(&builtin)
            })
            .map_err(|error| warn!("{error}"))
            .ok()
    }
}
