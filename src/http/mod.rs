//! The HTTP edge: the webhook endpoint Alertmanager posts to, the admin endpoints, the
//! template playground, inbound authentication and admission control, and the server that
//! wires them together. It authenticates, reads and parses; the pipeline itself is the
//! service's.

mod admin;
pub mod admission;
mod alerts;
pub mod auth;
mod callback;
mod playground;
pub mod server;

pub use server::{Application, Shutdown};
