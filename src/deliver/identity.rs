//! What makes a message the same message again, for the record of accepted messages: the
//! group, the route, the alerts (labels, status, times) and which part of a series goes to
//! which recipients — not the rendered text, which may differ on every retry (a template
//! showing "firing for 12m").

use sha2::{Digest, Sha256};

use crate::model::Alert;
use crate::state::DeliveryKey;

/// A fixed-size digest of a notification's alerts, computed once per notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertsDigest([u8; 32]);

impl AlertsDigest {
    /// Order-independent: each alert is hashed on its own and the sorted hashes together.
    pub fn of(alerts: &[&Alert]) -> AlertsDigest {
        let mut each: Vec<[u8; 32]> = alerts.iter().map(|alert| alert_digest(alert)).collect();
        each.sort_unstable();
        let mut hasher = Sha256::new();
        for digest in &each {
            hasher.update(digest);
        }
        AlertsDigest(hasher.finalize().into())
    }
}

/// Labels (from which Alertmanager derives the fingerprint), status and times.
fn alert_digest(alert: &Alert) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (name, value) in alert.labels.iter() {
        update_field(&mut hasher, name.as_bytes());
        update_field(&mut hasher, value.as_bytes());
    }
    update_field(&mut hasher, alert.status.as_str().as_bytes());
    for time in [alert.starts_at, alert.ends_at] {
        let millis = time.map_or(i64::MIN, |t| t.timestamp_millis());
        hasher.update(millis.to_le_bytes());
    }
    hasher.finalize().into()
}

/// The key of one request of a notification: `request` says which part of a series and
/// which recipients (see `deliver::target::Request::identity`).
pub fn delivery_key(group_key: &str, route: &str, alerts: &AlertsDigest, request: &str) -> DeliveryKey {
    let mut hasher = Sha256::new();
    update_field(&mut hasher, group_key.as_bytes());
    update_field(&mut hasher, route.as_bytes());
    hasher.update(alerts.0);
    update_field(&mut hasher, request.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    // 128 bits keep collisions out of reach for any record size we hold.
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// The key of a whole notification (group, route, alerts), recorded only while a storm
/// digest stands for it: its retries are then answered from the record, before rendering.
pub fn notification_key(group_key: &str, route: &str, alerts: &AlertsDigest) -> DeliveryKey {
    // Request identities start with a part number ("0/1|…"): this one cannot be one.
    delivery_key(group_key, route, alerts, "notification")
}

/// A field prefixed by its length, so that fields cannot run into each other.
fn update_field(hasher: &mut Sha256, field: &[u8]) {
    hasher.update((field.len() as u64).to_le_bytes());
    hasher.update(field);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WebhookPayload;
    use crate::render::samples::{CRASHLOOP, RESOLVED};

    fn alerts(payload: &WebhookPayload) -> Vec<&Alert> {
        payload.alerts.iter().collect()
    }

    #[test]
    fn key_parts_cannot_run_into_each_other() {
        let digest = AlertsDigest::of(&[]);
        assert_ne!(
            delivery_key("ab", "c", &digest, ""),
            delivery_key("a", "bc", &digest, "")
        );
    }

    #[test]
    fn the_digest_depends_on_the_alerts_not_their_order() {
        let crashloop = WebhookPayload::parse(CRASHLOOP.as_bytes()).unwrap();
        let resolved = WebhookPayload::parse(RESOLVED.as_bytes()).unwrap();
        let mut reversed = alerts(&crashloop);
        reversed.reverse();
        assert_eq!(AlertsDigest::of(&alerts(&crashloop)), AlertsDigest::of(&reversed));
        assert_ne!(
            AlertsDigest::of(&alerts(&crashloop)),
            AlertsDigest::of(&alerts(&resolved))
        );
        let mut changed = crashloop.clone();
        changed.alerts[0].status = match changed.alerts[0].status {
            crate::model::AlertStatus::Firing => crate::model::AlertStatus::Resolved,
            crate::model::AlertStatus::Resolved => crate::model::AlertStatus::Firing,
        };
        assert_ne!(
            AlertsDigest::of(&alerts(&crashloop)),
            AlertsDigest::of(&alerts(&changed))
        );
    }
}
