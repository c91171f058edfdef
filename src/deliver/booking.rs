//! One message's bookings against its target's rate budget, across its attempts: the
//! first before it is sent, one more before each retry after a failure WeCom may have
//! counted (see `retry::AttemptBudget`). Bookings of attempts WeCom may have received are
//! kept even when the message failed: WeCom's count does not forget them either.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use super::outcome::SendFailure;
use super::retry::AttemptBudget;
use super::target::Target;
use crate::state::{Charge, RateBudgets, Reservation};

pub struct Bookings<'a> {
    budgets: &'a Arc<dyn RateBudgets>,
    target: &'a dyn Target,
    charge: Charge,
    deadline: Instant,
    held: Mutex<Vec<Reservation>>,
    maybe_received: AtomicBool,
}

impl<'a> Bookings<'a> {
    /// Books the first attempt, leaving `charge.keep` slots; `Err` names who is out of
    /// budget.
    pub async fn first(
        budgets: &'a Arc<dyn RateBudgets>,
        target: &'a dyn Target,
        mut charge: Charge,
        deadline: Instant,
    ) -> Result<Bookings<'a>, String> {
        // Until WeCom answers, it may receive the message as late as the deadline.
        charge.in_flight = deadline.saturating_duration_since(Instant::now());
        let budget = target.budget();
        let first = budgets
            .try_reserve(&budget.scope, &charge, budget.limits)
            .await
            .map_err(|over| target.over_budget(&over))?;
        // Retries of a message already under way may use the reserve.
        charge.keep = 0;
        Ok(Bookings {
            budgets,
            target,
            charge,
            deadline,
            held: Mutex::new(vec![first]),
            maybe_received: AtomicBool::new(false),
        })
    }

    /// WeCom accepted the message: every booking was received by now. Settling only
    /// narrows a booking to WeCom's answer, so it need not hold up the answer to
    /// Alertmanager (with Redis it is a round trip): it runs beside it, and a settle that
    /// never happens (the process ended) leaves the booking counted longer, which is safe.
    pub async fn accepted(self) {
        let reservations = self.take();
        let budgets = self.budgets.clone();
        let settle = async move {
            for reservation in reservations {
                budgets.settle(&reservation).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(settle)),
            Err(_) => settle.await,
        }
    }

    /// The message failed with `last`: bookings WeCom cannot have counted are given back.
    /// An attempt that may have reached WeCom keeps every booking, the last attempt's
    /// too: a lone call that timed out was counted by WeCom all the same.
    pub async fn failed(self, last: &SendFailure) {
        let keep = self.maybe_received.load(Ordering::Relaxed) || last.may_have_reached_wecom();
        for reservation in self.take() {
            if keep {
                self.budgets.settle(&reservation).await;
            } else {
                self.budgets.release(reservation).await;
            }
        }
    }

    fn take(&self) -> Vec<Reservation> {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl AttemptBudget for Bookings<'_> {
    async fn another(&self, after: &SendFailure) -> Result<(), SendFailure> {
        if !after.may_have_reached_wecom() {
            return Ok(());
        }
        self.maybe_received.store(true, Ordering::Relaxed);
        let mut charge = self.charge.clone();
        charge.in_flight = self.deadline.saturating_duration_since(Instant::now());
        let budget = self.target.budget();
        match self.budgets.try_reserve(&budget.scope, &charge, budget.limits).await {
            Ok(reservation) => {
                self.held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(reservation);
                Ok(())
            }
            Err(over) => Err(SendFailure::rate_limited(format!(
                "{after}; not tried again: WeCom may have counted that attempt, and another would exceed the budget ({})",
                self.target.over_budget(&over)
            ))),
        }
    }
}
