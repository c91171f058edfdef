//! The one retry loop every target's messages go through: at most 3 retries (WeCom's
//! advice for "busy"), with jittered exponential backoff, never past the delivery
//! deadline; a rejected access token is replaced and the call made again at once. Each
//! call waits for one of the target's call slots (`wecom.max_concurrent_calls`), so a
//! thousand messages never become a thousand sockets.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::api::SendReceipt;
use super::outcome::SendFailure;
use super::target::{CallFailure, CallLimit, Method, Target};

/// Asked before every attempt after the first. WeCom may have received, and counted
/// against its rate limits, an attempt that failed without an answer (a timeout, a lost
/// connection, a proxy's 5xx): then another attempt is another message to budget for.
#[async_trait]
pub trait AttemptBudget: Send + Sync {
    /// `Err` ends the retries with that failure.
    async fn another(&self, after: &SendFailure) -> Result<(), SendFailure>;
}

/// How one message is sent: its deadline, the time one call may take, and the target's
/// call slots.
pub struct Sending<'a> {
    pub deadline: Instant,
    pub call_timeout: Duration,
    pub slots: &'a Semaphore,
}

/// Sends `body` to `method` of `target` as `sending` says, asking `budget` before each
/// retry.
pub async fn send(
    target: &dyn Target,
    method: Method,
    body: &Value,
    sending: &Sending<'_>,
    budget: &dyn AttemptBudget,
) -> Result<SendReceipt, SendFailure> {
    let Sending {
        deadline,
        call_timeout,
        slots,
    } = *sending;
    let limit = CallLimit {
        deadline,
        cap: call_timeout,
    };
    // A call starts only with time to finish: one cut short by the deadline may still
    // reach WeCom (an unknown outcome, a retry WeCom has to drop as a duplicate).
    let latest_start = deadline
        .checked_sub(shortest_call(call_timeout))
        .unwrap_or(deadline);
    let mut retry = Retry::new(latest_start);
    let mut credential_replaced = false;
    let mut last_failure: Option<SendFailure> = None;
    // A retry is booked once it is sure to be made: it has its slot, in time.
    let mut book_retry = false;
    loop {
        let attempt = retry.attempt();
        // No call made: the earlier failure, if any, says more.
        let slot = match tokio::time::timeout_at(latest_start.into(), slots.acquire()).await {
            Ok(Ok(slot)) if Instant::now() < latest_start => slot,
            _ => return Err(last_failure.unwrap_or_else(|| busy(target))),
        };
        if let (true, Some(failure)) = (book_retry, &last_failure) {
            budget.another(failure).await?;
            book_retry = false;
        }
        let answer = match method {
            Method::Send => target.call(body, limit).await,
            Method::UpdateCard => target.update_card(body, limit).await,
        };
        drop(slot);
        let failure = match answer {
            Ok(receipt) => return Ok(receipt),
            Err(CallFailure::GiveUp(failure)) => return Err(failure),
            Err(CallFailure::CredentialRejected { stale, .. }) if !credential_replaced => {
                target.drop_credential(&stale).await;
                credential_replaced = true;
                retry.forgive(); // a token refresh is not a retry of the message
                continue;
            }
            Err(other) => other.into_failure(),
        };
        let who = format!("{} {}", target.kind().as_str(), target.name());
        if !retry.back_off(&who, attempt, &failure).await {
            return Err(failure);
        }
        last_failure = Some(failure);
        book_retry = true;
    }
}

/// The least time a call is started with: half of what one may take, at most half a
/// second (WeCom usually answers in tens of milliseconds).
fn shortest_call(call_timeout: Duration) -> Duration {
    call_timeout.min(Duration::from_secs(1)) / 2
}

/// No call slot of the target came free in time for a call to finish by the deadline.
fn busy(target: &dyn Target) -> SendFailure {
    SendFailure::Transient {
        reason: "busy",
        errcode: None,
        error: format!(
            "{} {}: no WeCom call could start in time to finish by the delivery deadline (all wecom.max_concurrent_calls in flight, or too little time left); nothing was sent, retry",
            target.kind().as_str(),
            target.name()
        ),
    }
}

const MAX_ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Tracks the attempts at one message.
struct Retry {
    deadline: Instant,
    attempts: u32,
    backoff: Duration,
}

impl Retry {
    fn new(deadline: Instant) -> Retry {
        Retry {
            deadline,
            attempts: 0,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Counts an attempt about to be made.
    fn attempt(&mut self) -> u32 {
        self.attempts += 1;
        self.attempts
    }

    /// Takes back the last attempt (it did not count, e.g. a token refresh).
    fn forgive(&mut self) {
        self.attempts = self.attempts.saturating_sub(1);
    }

    /// The pause before the next attempt, or `None` when there is no attempt left or the
    /// pause would outlive the deadline.
    fn next_pause(&mut self) -> Option<Duration> {
        let pause = jittered(self.backoff);
        if self.attempts >= MAX_ATTEMPTS || Instant::now() + pause >= self.deadline {
            return None;
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Some(pause)
    }
}

impl Retry {
    /// Waits before the next attempt, logging the failure; `false` when there is none left.
    async fn back_off(
        &mut self,
        sender: &str,
        attempt: u32,
        failure: &(dyn std::fmt::Display + Sync),
    ) -> bool {
        let Some(pause) = self.next_pause() else {
            return false;
        };
        log::warn!(
            "{sender}: attempt {attempt} failed ({failure}); retrying in {}ms",
            pause.as_millis()
        );
        tokio::time::sleep(pause).await;
        true
    }
}

/// ±20 % jitter so that replicas retrying the same failure do not march in step.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.8 + fastrand::f64() * 0.4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_three_retries_with_growing_pauses() {
        let mut retry = Retry::new(Instant::now() + Duration::from_secs(60));
        let mut pauses = Vec::new();
        loop {
            retry.attempt();
            match retry.next_pause() {
                Some(pause) => pauses.push(pause),
                None => break,
            }
        }
        assert_eq!(pauses.len(), 3);
        assert!(pauses[0] < pauses[2]);
        assert!(pauses.iter().all(|p| *p <= MAX_BACKOFF.mul_f64(1.2)));
    }

    #[test]
    fn no_retry_would_outlive_the_deadline() {
        let mut retry = Retry::new(Instant::now() + Duration::from_millis(100));
        retry.attempt();
        assert_eq!(retry.next_pause(), None);
    }
}
