//! Ingest: the HTTP side facing Alertmanager — the webhook payload and the `/alerts`
//! handler that routes, renders and delivers it, then answers with a status that makes
//! Alertmanager's retry logic do the right thing.

pub mod auth;
pub mod handler;
pub mod labels;
pub mod payload;
