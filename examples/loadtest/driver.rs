//! Drives `POST /alerts` at a fixed concurrency for a bounded time and count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;

/// The bodies a phase sends, request `i` the `i % len`-th. With `distinct`, each request's
/// group key also carries `i`, so every request is a new group (as production traffic
/// is) and the record of accepted messages answers none of them as a duplicate.
#[derive(Clone)]
pub struct Bodies {
    /// Each body whole, and split around the `SEQ` marker in its group key.
    parts: Vec<(Bytes, Bytes, Bytes)>,
    distinct: bool,
}

use super::payloads::SEQ;

impl Bodies {
    pub fn new(bodies: Vec<String>, distinct: bool) -> Bodies {
        let parts = bodies
            .into_iter()
            .map(|body| {
                let (before, after) = body.split_once(SEQ).unwrap_or((&body, ""));
                let (before, after) = (Bytes::from(before.to_string()), Bytes::from(after.to_string()));
                (Bytes::from(body), before, after)
            })
            .collect();
        Bodies { parts, distinct }
    }

    pub fn get(&self, i: u64) -> Bytes {
        let (whole, before, after) = &self.parts[i as usize % self.parts.len()];
        if !self.distinct || after.is_empty() {
            return whole.clone();
        }
        // Numbered across the whole run, not per phase: a phase's requests must not repeat
        // its warm-up's (or an earlier phase's) groups.
        static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);
        let seq = NEXT_GROUP.fetch_add(1, Ordering::Relaxed).to_string();
        let mut body = Vec::with_capacity(before.len() + seq.len() + after.len());
        body.extend_from_slice(before);
        body.extend_from_slice(seq.as_bytes());
        body.extend_from_slice(after);
        Bytes::from(body)
    }
}

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
    bodies: &Bodies,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
) -> PhaseResult {
    let started = Instant::now();
    let deadline = started + duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url, bodies, next) = (client.clone(), url.to_string(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut result = PhaseResult::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_requests || Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let status = post(&client, &url, bodies.get(i)).await;
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
    bodies: &Bodies,
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
        let (client, url, body) = (client.clone(), url.to_string(), bodies.get(i));
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
