//! alertmanager-wecom: receives Prometheus Alertmanager webhooks and delivers them as
//! WeCom (企业微信) messages.
//!
//! Layers, bottom-up; each imports only the ones below it:
//! [`model`] (what Alertmanager sends) → [`config`] (what the operator wrote) →
//! [`metrics`] and [`state`] (delivery state shared by replicas) → [`route`] and
//! [`render`] → [`deliver`] (WeCom targets, tokens, retries) → [`service`] (the pipeline,
//! reloads) → [`http`] and [`cli`] (the edges). [`secret`] is used by every layer.

pub mod cli;
pub mod config;
pub mod deliver;
pub mod http;
pub mod interact;
pub mod metrics;
pub mod model;
pub mod render;
pub mod route;
pub mod secret;
pub mod service;
pub mod state;

#[cfg(test)]
mod docs_tests;
