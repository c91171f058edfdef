//! The Alertmanager data model: what a webhook carries (payload, alerts, label sets) and
//! Alertmanager's label matchers. The ground floor: it imports nothing of the pipeline,
//! and every other layer may import it.

pub mod labels;
pub mod matcher;
pub mod payload;

pub use labels::LabelSet;
pub use payload::{Alert, AlertStatus, WebhookPayload};
