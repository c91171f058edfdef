//! Delivery state: what every sender of the same notifications must agree on — the record
//! of messages WeCom accepted, and the rate budgets counted against WeCom's limits.
//!
//! Behind async traits, so that a store shared by several replicas can stand in for the
//! in-memory one without its callers knowing which they talk to. Keys and members are
//! opaque strings and bytes here: what they mean is the deliver layer's business. This
//! layer imports nothing of the pipeline.

pub mod ledger;
pub mod rate_budget;

use std::sync::Arc;

pub use ledger::{DeliveryKey, Ledger, MemoryLedger};
pub use rate_budget::{MemoryRateBudgets, RateBudgets, RateLimits, Reservation};

/// The delivery state one process uses, chosen when it starts and kept across reloads.
#[derive(Clone)]
pub struct DeliveryStore {
    pub ledger: Arc<dyn Ledger>,
    pub budgets: Arc<dyn RateBudgets>,
}

impl DeliveryStore {
    /// State in this process only: right for a single replica.
    pub fn in_memory() -> DeliveryStore {
        DeliveryStore {
            ledger: Arc::new(MemoryLedger::new()),
            budgets: Arc::new(MemoryRateBudgets::new()),
        }
    }
}
