//! alertmanager-wecom: receives Prometheus Alertmanager webhooks and delivers them as
//! WeCom (企业微信) app messages.
//!
//! The modules follow the path of an alert: [`ingest`] (HTTP, payload) → [`route`]
//! (matchers, recipients) → [`render`] (handlebars, fitting to WeCom limits) → [`deliver`]
//! (WeCom client, tokens, retries, idempotency), with [`config`] and [`metrics`] beside them.
//! [`startup`] wires them into a running server; [`cli`] is the command line.

pub mod cli;
pub mod config;
pub mod deliver;
pub mod ingest;
pub mod metrics;
pub mod render;
pub mod route;
pub mod runtime;
pub mod secret;
pub mod service;
pub mod startup;
