//! Admission control: how many webhooks are in flight, waiting, and holding a body.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Webhooks read, parsed and rendered at the same time: the work is CPU-bound, so more
/// than the two workers' worth only holds more bodies and payloads in memory.
const PROCESSING_PERMITS: usize = 2;

/// Bounds work: at most `concurrent` webhooks are in flight and at most `queued` wait for a
/// turn; beyond that requests are refused (503) instead of growing memory. Of those in
/// flight, only [`PROCESSING_PERMITS`] hold a body and its parsed payload at once.
pub struct Admission {
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    processing: Semaphore,
}

impl Admission {
    pub fn new(concurrent: usize, queued: usize) -> Admission {
        Admission {
            slots: Semaphore::new(concurrent.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting: queued,
            processing: Semaphore::new(PROCESSING_PERMITS),
        }
    }

    /// A turn to read, parse and render a body; the others wait in their sockets.
    pub async fn process(&self) -> Option<SemaphorePermit<'_>> {
        self.processing.acquire().await.ok()
    }

    /// A processing slot, waiting for one if the queue has room; `None` when full.
    pub async fn enter(&self) -> Option<SemaphorePermit<'_>> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let permit = self.slots.acquire().await.ok();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit
    }
}
