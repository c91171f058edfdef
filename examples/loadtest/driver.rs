//! Drives `POST /alerts` at a fixed concurrency for a bounded time and count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;

pub struct PhaseResult {
    /// Answered 200.
    pub ok: u64,
    /// Anything else, by status (or "transport").
    pub errors: BTreeMap<String, u64>,
    /// Latency of every answered request, microseconds, sorted.
    pub latencies_us: Vec<u64>,
    pub elapsed: Duration,
}

impl PhaseResult {
    fn new() -> PhaseResult {
        PhaseResult {
            ok: 0,
            errors: BTreeMap::new(),
            latencies_us: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// One answered (or failed) request: its status from [`post`] and its latency.
    fn record(&mut self, status: String, latency_us: u64) {
        self.latencies_us.push(latency_us);
        if status == "200" {
            self.ok += 1;
        } else {
            *self.errors.entry(status).or_default() += 1;
        }
    }

    /// Ends the phase: its duration, latencies sorted for the quantiles.
    fn finish(mut self, started: Instant) -> PhaseResult {
        self.elapsed = started.elapsed();
        self.latencies_us.sort_unstable();
        self
    }

    pub fn requests(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub fn per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64()
    }

    /// The q-quantile (0..=1) in milliseconds, nearest rank.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.latencies_us.len() as f64).ceil() as usize).clamp(1, self.latencies_us.len());
        self.latencies_us[rank - 1] as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies_us
            .last()
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    }
}

/// Posts one webhook and reads the whole answer; the status code, or "transport".
async fn post(client: &reqwest::Client, url: &str, body: Bytes) -> String {
    let reply = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await;
    match reply {
        Ok(reply) => {
            let status = reply.status();
            match reply.bytes().await {
                Ok(_) => status.as_u16().to_string(),
                Err(_) => "transport".to_string(),
            }
        }
        Err(_) => "transport".to_string(),
    }
}

/// `concurrency` clients, each sending the next body as soon as its last answer arrived,
/// until `duration` has passed or `max_requests` were started.
pub async fn drive(
    client: &reqwest::Client,
    url: &str,
    bodies: &[Bytes],
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
) -> PhaseResult {
    let started = Instant::now();
    let deadline = started + duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url, bodies, next) = (client.clone(), url.to_string(), bodies.to_vec(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut result = PhaseResult::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_requests || Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let status = post(&client, &url, bodies[i as usize % bodies.len()].clone()).await;
                result.record(status, sent.elapsed().as_micros() as u64);
            }
            result
        }));
    }
    let mut result = PhaseResult::new();
    for task in tasks {
        let part = task.await.expect("a load task panicked");
        result.ok += part.ok;
        for (status, n) in part.errors {
            *result.errors.entry(status).or_default() += n;
        }
        result.latencies_us.extend(part.latencies_us);
    }
    result.finish(started)
}

/// Open loop: requests start at a fixed `rate` (per second) whatever the answers, for
/// `duration`, with at most `max_in_flight` outstanding (beyond that a request is counted as
/// "skipped" instead of being sent). Latency is measured from each request's scheduled start,
/// so a stalled server is charged for the requests that queued behind the stall.
pub async fn drive_rate(
    client: &reqwest::Client,
    url: &str,
    bodies: &[Bytes],
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
) -> PhaseResult {
    let started = Instant::now();
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let limit = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let mut tasks = Vec::with_capacity(total as usize);
    let mut skipped = 0;
    for i in 0..total {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (client, url, body) = (
            client.clone(),
            url.to_string(),
            bodies[i as usize % bodies.len()].clone(),
        );
        tasks.push(tokio::spawn(async move {
            let status = post(&client, &url, body).await;
            drop(permit);
            (status, scheduled.elapsed().as_micros() as u64)
        }));
    }
    let mut result = PhaseResult::new();
    if skipped > 0 {
        result.errors.insert("skipped".into(), skipped);
    }
    for task in tasks {
        let (status, latency) = task.await.expect("a load task panicked");
        result.record(status, latency);
    }
    result.finish(started)
}
