//! Acting on alerts from WeCom: the callback protocol WeCom uses to tell us about button
//! clicks (`crypto`, `event`) and the Alertmanager API a click silences through
//! (`silence`). Imports only configuration-level types; the service layer wires them to
//! the delivery state and the cards.

pub mod crypto;
mod error;
pub mod event;
pub mod silence;
