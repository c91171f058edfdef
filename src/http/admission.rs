//! Admission control: how many webhooks are in flight, which of them take a turn to be
//! processed and delivered, and how many bytes their bodies hold while read and waiting.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout_at, Instant};

/// Webhooks parsed and rendered at the same time: the work is CPU-bound, so more than the
/// two workers' worth only holds more parsed payloads in memory.
const PROCESSING_PERMITS: usize = 2;

/// Bounds work and memory. At most `concurrent + queued` webhooks are in flight (their body
/// being read, waiting for a turn, or processed); beyond that requests are refused (503)
/// instead of growing memory. Of those, `concurrent` have a turn (processed or delivering)
/// and only [`PROCESSING_PERMITS`] parse and render at once. Bodies are read before a turn
/// is taken, so a slow sender holds no turn, only the budget its bytes take.
pub struct Admission {
    places: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    processing: Arc<Semaphore>,
    bodies: Arc<Semaphore>,
}

/// A webhook's place among those in flight, from its headers to its answer.
pub struct Place {
    _permit: OwnedSemaphorePermit,
}

/// A turn to be processed and delivered. Owned, so that a delivery keeps its turn in the
/// task it runs in even when the request that started it is gone.
pub struct Turn {
    _slot: OwnedSemaphorePermit,
    processing: Option<OwnedSemaphorePermit>,
}

impl Turn {
    /// Parsing and rendering are over: let the next webhook in while this one waits on
    /// WeCom.
    pub fn end_processing(&mut self) {
        self.processing = None;
    }
}

impl Admission {
    pub fn new(concurrent: usize, queued: usize, buffered_body_bytes: usize) -> Admission {
        let concurrent = concurrent.max(1);
        Admission {
            places: Arc::new(Semaphore::new(
                concurrent.saturating_add(queued).min(Semaphore::MAX_PERMITS),
            )),
            slots: Arc::new(Semaphore::new(concurrent.min(Semaphore::MAX_PERMITS))),
            processing: Arc::new(Semaphore::new(PROCESSING_PERMITS)),
            bodies: Arc::new(Semaphore::new(buffered_body_bytes.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// A place in flight if there is one; `None` when `concurrent + queued` are taken.
    pub fn enter(&self) -> Option<Place> {
        self.places
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| Place { _permit: permit })
    }

    /// The share of the buffered-body budget a new body starts with: none.
    pub fn budget(&self) -> BodyBudget {
        BodyBudget::new(self.bodies.clone())
    }

    /// A turn, waiting up to `wait` for one; `None` when the wait ran out. Dropping the
    /// future (the caller went away) gives up the place in line and takes nothing.
    pub async fn turn(&self, wait: Duration) -> Option<Turn> {
        let deadline = Instant::now() + wait;
        let slot = timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        let processing = timeout_at(deadline, self.processing.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(Turn {
            _slot: slot,
            processing: Some(processing),
        })
    }
}

/// The bytes one body holds of the budget shared by every body being read or waiting for
/// its turn; given back when dropped.
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    held: usize,
}

impl BodyBudget {
    pub fn new(bytes: Arc<Semaphore>) -> BodyBudget {
        BodyBudget { bytes, held: 0 }
    }

    /// Takes `more` bytes of the budget, waiting for them until `deadline`; `false` when
    /// they could not be had by then (what was taken before is kept).
    pub async fn take(&mut self, more: usize, deadline: Instant) -> bool {
        let mut left = more;
        while left > 0 {
            let piece = u32::try_from(left).unwrap_or(u32::MAX);
            match timeout_at(deadline, self.bytes.acquire_many(piece)).await {
                Ok(Ok(permit)) => permit.forget(),
                _ => return false,
            }
            self.held += piece as usize;
            left -= piece as usize;
        }
        true
    }
}

impl Drop for BodyBudget {
    fn drop(&mut self) {
        if self.held > 0 {
            self.bytes.add_permits(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_turns_and_budget_are_given_back_however_their_holder_ends() {
        let admission = Admission::new(1, 1, 100);
        let first = admission.enter().unwrap();
        let second = admission.enter().unwrap();
        assert!(admission.enter().is_none(), "concurrent + queued");
        let turn = admission.turn(Duration::from_secs(1)).await.unwrap();
        // The second waits for the only turn and gives up when its caller leaves.
        let waiting = admission.turn(Duration::from_secs(10));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting)
                .await
                .is_err(),
            "no second turn while the first is held"
        );
        assert!(admission.turn(Duration::from_millis(50)).await.is_none());
        drop((turn, first, second));
        assert!(admission.enter().is_some());
        assert!(admission.turn(Duration::from_millis(50)).await.is_some());

        let deadline = Instant::now() + Duration::from_millis(50);
        let mut budget = admission.budget();
        assert!(budget.take(60, deadline).await);
        let mut other = admission.budget();
        assert!(other.take(40, deadline).await);
        assert!(!other.take(1, deadline).await, "the budget is spent");
        drop(budget);
        let deadline = Instant::now() + Duration::from_millis(50);
        assert!(other.take(60, deadline).await, "given back when dropped");
    }
}
