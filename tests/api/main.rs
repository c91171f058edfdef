//! Integration tests: the real application, over HTTP, against a fake WeCom server.

mod appchat;
mod auth;
mod bounded;
mod cli;
mod delivery;
mod directory;
mod fake_wecom;
mod fake_wecom_selftest;
mod fitting;
mod helpers;
mod hostile;
mod idempotency;
mod interactive;
mod observability;
mod operations;
mod playground;
mod properties;
mod routing;
mod shared_state;
mod state_store;
mod storms;
mod templates;
mod tokens;
mod webhook;
mod wecom_failures;

#[path = "../support/redis.rs"]
mod redis_server;
