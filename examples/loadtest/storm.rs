//! Alert storms (`--storms`): how long until every alert group of a storm to one recipient
//! is represented in WeCom, and how many messages that took, with the minimal forwarder
//! given the same storm as the baseline. Both send to the fake WeCom in storm mode, which
//! drops silently like WeCom (beyond 30 messages a member in any 60 s, 1,000 in any
//! 3,600 s, counted at receipt) and keeps every message it delivered.
//!
//! A storm of G groups is what Alertmanager sends when G alert groups start firing for one
//! receiver within `--storm-window` seconds: group i (its own group key, alertname
//! `StormNNNN`, one firing `warning` alert) is first posted at i × window / G, and each
//! non-2xx answer is retried on Alertmanager's schedule ([`Backoff`]) until it is answered
//! 2xx or `--storm-limit` has passed since the storm began. Every storm gets a freshly
//! started service, so each begins with a member whose budget is untouched.
//!
//! **Represented**, precisely: a group is represented once a message the member actually
//! received stands for it — a message naming its alertname, or a digest counting it
//! ("in N notification(s)"; the names a digest leaves out are only counted, on its
//! "… and K more alertnames" line, so a digest's groups cannot all be told apart). So
//! the benchmark measures two times from the first group's arrival, and calls a storm
//! represented when both have passed:
//! - *messages*: when the member's received messages first account for every group (the
//!   groups named by individual messages, each once, plus every digest's count);
//! - *answered*: when the last group was answered 2xx. The service answers 2xx only once a
//!   message WeCom accepted represents the group, so this is also when Alertmanager stops
//!   retrying — it includes the wait for Alertmanager's next retry after the digest went out.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use serde_json::json;

use super::fake::{FakeWeCom, MemberLog};
use super::{
    free_port, mib, procstat, spawn_service, start_forwarder, state_config, wait_ready, Args, StateBackend,
};
use alertmanager_wecom::config::Config;

/// The one recipient of every storm.
const MEMBER: &str = "oncall";
/// The service's app's corp id; the fake keys its per-member log by it (the baseline's by
/// `forwarder`, its fixed token: another app, so their budgets are apart as in WeCom).
const CORP: &str = "wwstorm-ops";
const FORWARDER_APP: &str = "forwarder";

/// `--storms`: group counts separated by commas; empty or 0 entries are skipped.
pub fn sizes(spec: &str) -> Result<Vec<usize>, String> {
    let mut sizes = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: usize = part
            .parse()
            .map_err(|_| format!("--storms: {part:?} is not a number"))?;
        if n > 0 {
            sizes.push(n);
        }
    }
    Ok(sizes)
}

/// The service's configuration for storms: one app, one route to one user, markdown;
/// everything else (`storm:`, `wecom.dedup_window`, `rate_limit`) at its default.
fn service_config(listen: &str, api_url: &str, state: &str) -> String {
    format!(
        r#"listen: {listen}
wecom:
  api_url: {api_url}
{state}
apps:
  - {{name: ops, corp_id: {CORP}, agent_id: 1000002, secret: loadtest-secret-storm}}
routes:
  - {{name: storm, app: ops, msgtype: markdown, to: {{users: [{MEMBER}]}}}}
"#
    )
}

/// Group `i` of a storm as Alertmanager's webhook (version 4) posts it, in the shape of
/// `src/render/samples/firing-crashloop.json`: one firing alert, grouped by alertname.
fn group_body(i: usize) -> String {
    let name = format!("Storm{i:04}");
    let node = format!("node-{i:04}");
    let labels = json!({"alertname": name, "instance": format!("{node}:9100"), "job": "node",
                        "severity": "warning", "team": "infra"});
    let annotations = json!({
        "description": format!("{node} is one of many targets failing at once."),
        "runbook_url": "https://runbooks.example.com/Storm",
        "summary": format!("{name} on {node}")
    });
    json!({
        "receiver": "wecom",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": "2026-11-25T17:46:42.129103993Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=up%7Bjob%3D%22node%22%7D+%3D%3D+0",
            "fingerprint": format!("{:016x}", 0x5707_0000_0000_0000_u64 | i as u64)
        }],
        "groupLabels": {"alertname": name},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "http://alertmanager.example.com:9093",
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"),
        "truncatedAlerts": 0
    })
    .to_string()
}

/// Alertmanager's retry schedule for a notification that failed (its notify.RetryStage),
/// as assumed here: an exponential backoff with the defaults of the backoff library it
/// uses — the first wait around 500 ms, the interval ×1.5 after each attempt up to 60 s,
/// each wait drawn uniformly within ±50% of the current interval — timed from the start
/// of the previous attempt (its ticker runs while an attempt does). It retries 5xx answers
/// and transport errors, not other 4xx. Alertmanager gives up at the flush's deadline
/// (about `group_interval`, default 5 m) and sends again at the next flush; here a group is
/// simply retried until answered or `--storm-limit` (default 300 s) runs out.
struct Backoff {
    interval: Duration,
}

impl Backoff {
    const INITIAL: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(60);
    const MULTIPLIER: f64 = 1.5;
    const RANDOMIZATION: f64 = 0.5;

    fn new() -> Backoff {
        Backoff {
            interval: Self::INITIAL,
        }
    }

    fn next(&mut self) -> Duration {
        let current = self.interval.as_secs_f64();
        let wait = current * (1.0 - Self::RANDOMIZATION + 2.0 * Self::RANDOMIZATION * fastrand::f64());
        self.interval = if current >= Self::MAX.as_secs_f64() / Self::MULTIPLIER {
            Self::MAX
        } else {
            self.interval.mul_f64(Self::MULTIPLIER)
        };
        Duration::from_secs_f64(wait)
    }
}

/// One group's webhooks.
#[derive(Default)]
struct Group {
    /// When it was answered 2xx, from the storm's start.
    answered: Option<Duration>,
    attempts: u64,
    answered_503: u64,
    /// Other answers by status, "transport" for errors.
    other: BTreeMap<String, u64>,
    latencies_503_us: Vec<u64>,
    /// The longest wait for one of the `--storm-in-flight` request slots.
    slot_wait: Duration,
}

/// One storm against one target.
struct Storm {
    groups: Vec<Group>,
    /// Until the last group was answered or given up.
    elapsed: Duration,
}

impl Storm {
    fn requests(&self) -> u64 {
        self.groups.iter().map(|g| g.attempts).sum()
    }

    fn answered_503(&self) -> u64 {
        self.groups.iter().map(|g| g.answered_503).sum()
    }

    fn answered(&self) -> usize {
        self.groups.iter().filter(|g| g.answered.is_some()).count()
    }

    /// When the last group was answered 2xx; `None` if one never was.
    fn last_answered(&self) -> Option<Duration> {
        self.groups
            .iter()
            .map(|g| g.answered)
            .try_fold(Duration::ZERO, |last, at| Some(last.max(at?)))
    }

    fn other(&self) -> BTreeMap<String, u64> {
        let mut other = BTreeMap::new();
        for (status, n) in self.groups.iter().flat_map(|g| &g.other) {
            *other.entry(status.clone()).or_default() += n;
        }
        other
    }

    /// The q-quantile of the 503 answers' latency, in milliseconds.
    fn quantile_503_ms(&self, q: f64) -> Option<f64> {
        let mut all: Vec<u64> = self
            .groups
            .iter()
            .flat_map(|g| g.latencies_503_us.iter().copied())
            .collect();
        if all.is_empty() {
            return None;
        }
        all.sort_unstable();
        let rank = ((q * all.len() as f64).ceil() as usize).clamp(1, all.len());
        Some(all[rank - 1] as f64 / 1000.0)
    }

    fn slot_wait(&self) -> Duration {
        self.groups.iter().map(|g| g.slot_wait).max().unwrap_or_default()
    }
}

/// Posts one webhook and reads the whole answer: its status, `None` for a transport error.
async fn post(client: &reqwest::Client, url: &str, body: Bytes) -> Option<u16> {
    let reply = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    let status = reply.status().as_u16();
    reply.bytes().await.ok()?;
    Some(status)
}

/// Alertmanager's side of a storm: every group first posted at its arrival, then retried
/// until answered 2xx or the limit, with at most `in_flight` requests outstanding.
async fn drive_storm(
    client: &reqwest::Client,
    url: &str,
    bodies: &[Bytes],
    args: &Args,
    started: Instant,
) -> Storm {
    let slots = Arc::new(tokio::sync::Semaphore::new(args.storm_in_flight.max(1)));
    let window = Duration::from_secs_f64(args.storm_window.max(0.0));
    let deadline = started + Duration::from_secs_f64(args.storm_limit.max(0.0));
    let count = bodies.len();
    let tasks: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let (client, url, body, slots) = (client.clone(), url.to_string(), body.clone(), slots.clone());
            let arrival = started + window.mul_f64(i as f64 / count as f64);
            tokio::spawn(async move {
                let mut group = Group::default();
                let mut backoff = Backoff::new();
                tokio::time::sleep_until(arrival.into()).await;
                loop {
                    let attempt = Instant::now();
                    let slot = slots.acquire().await.expect("the semaphore stays open");
                    let sent = Instant::now();
                    group.slot_wait = group.slot_wait.max(sent - attempt);
                    group.attempts += 1;
                    let status = post(&client, &url, body.clone()).await;
                    let latency = sent.elapsed();
                    drop(slot);
                    match status {
                        Some(200..=299) => {
                            group.answered = Some(started.elapsed());
                            break;
                        }
                        Some(503) => {
                            group.answered_503 += 1;
                            group.latencies_503_us.push(latency.as_micros() as u64);
                        }
                        Some(status) => *group.other.entry(status.to_string()).or_default() += 1,
                        None => *group.other.entry("transport".into()).or_default() += 1,
                    }
                    if matches!(status, Some(400..=499)) {
                        break;
                    }
                    let next = (attempt + backoff.next()).max(Instant::now());
                    if next >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(next.into()).await;
                }
                group
            })
        })
        .collect();
    let mut groups = Vec::with_capacity(count);
    for task in tasks {
        groups.push(task.await.expect("a storm task panicked"));
    }
    Storm {
        groups,
        elapsed: started.elapsed(),
    }
}

/// What the member received, read as a person would.
#[derive(Default)]
struct Received {
    messages: usize,
    /// Notifications each digest says it stands for ("in N notification(s)"), in order.
    digests: Vec<usize>,
    /// Groups (by number) named by messages that are not digests.
    named: HashSet<usize>,
    /// Alertnames digests list by name, and those their last line only counts.
    digest_listed: usize,
    digest_more: usize,
    /// Groups a digest lists that a message of their own named too (represented twice).
    twice: usize,
    /// When the messages first accounted for every group, from the storm's start.
    complete: Option<Duration>,
}

impl Received {
    fn accounted(&self) -> usize {
        self.named.len() + self.digests.iter().sum::<usize>()
    }
}

const DIGEST_MARK: &str = "[STORM DIGEST]";

/// The group numbers of every `StormNNNN` in `text`.
fn storm_names(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.match_indices("Storm").filter_map(|(at, _)| {
        let digits: String = text[at + 5..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The number just before `marker` in `text` (e.g. `12` in "in 12 notification(s)").
fn number_before(text: &str, marker: &str) -> Option<usize> {
    let head = &text[..text.find(marker)?];
    let digits: String = head
        .trim_end()
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

fn account(log: &MemberLog, groups: usize, started: Instant) -> Received {
    let mut received = Received::default();
    let mut digest_named = HashSet::new();
    for (at, text) in &log.messages {
        received.messages += 1;
        if text.contains(DIGEST_MARK) {
            received
                .digests
                .push(number_before(text, " notification(s)").unwrap_or(0));
            for line in text.lines().filter(|line| line.starts_with("- ")) {
                for group in storm_names(line) {
                    received.digest_listed += 1;
                    digest_named.insert(group);
                }
            }
            received.digest_more += number_before(text, " more alertname").unwrap_or(0);
        } else {
            received.named.extend(storm_names(text));
        }
        if received.complete.is_none() && received.accounted() >= groups {
            received.complete = Some(at.saturating_duration_since(started));
        }
    }
    received.twice = digest_named.intersection(&received.named).count();
    received
}

/// A storm's figures for one target.
struct Figures {
    groups: usize,
    storm: Storm,
    received: Received,
    dropped: u64,
    peak_rss_kib: u64,
    cpu_seconds: f64,
    /// The service's own storm metrics, summarised.
    metrics: String,
}

impl Figures {
    /// Represented: every group answered 2xx and accounted for by received messages.
    fn represented(&self) -> Option<Duration> {
        let answered = self.storm.last_answered()?;
        let complete = self.received.complete?;
        (self.received.accounted() >= self.groups).then_some(answered.max(complete))
    }
}

fn seconds(at: Option<Duration>) -> String {
    at.map_or_else(|| "never".into(), |at| format!("{:.1}", at.as_secs_f64()))
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{v:.2}"))
}

/// Everything a storm run needs from the load test.
pub struct StormContext<'a> {
    pub args: &'a Args,
    pub service_bin: &'a Path,
    pub fake: &'a FakeWeCom,
    pub dir: &'a Path,
    pub backend: StateBackend,
    pub redis_port: u16,
    pub ticks_per_second: u64,
}

/// Runs every storm of `--storms`, the baseline then the service for each size, and prints
/// the figures; false when the service silently lost or failed to represent a group, or
/// missed the 500-group target.
pub fn run(ctx: &StormContext) -> Result<bool, String> {
    let args = ctx.args;
    let sizes = sizes(&args.storms)?;
    if sizes.is_empty() {
        return Ok(true);
    }
    let (runtime, client) = crate::driver_runtime(args.storm_in_flight, Duration::from_secs(10))?;
    let (forwarder, forwarder_port) = start_forwarder(&ctx.fake.base_url, MEMBER)?;
    let forwarder_pid = forwarder.0.id();
    let forwarder_url = format!("http://127.0.0.1:{forwarder_port}/alerts");

    // The settings the service runs with, read back through its own config loader.
    let sample = service_config(
        "127.0.0.1:1",
        &ctx.fake.base_url,
        &state_config(ctx.backend, ctx.redis_port),
    );
    let config = Config::from_yaml(&sample, "storm.yml", ctx.dir).map_err(|e| e.to_string())?;
    let storm = &config.storm;
    let mut never: Vec<&String> = storm.never_digest.iter().collect();
    never.sort();
    let limit = config.apps[0].rate_limit;
    println!(
        "\nalert storms — one recipient ({MEMBER}), state {}; each group posted first at its arrival (spread evenly over {} s),\n\
         then retried like Alertmanager (500 ms ×1.5 ±50%, at most 60 s) until answered 2xx or {} s; ≤ {} requests in flight",
        config.state.backend(),
        args.storm_window,
        args.storm_limit,
        args.storm_in_flight
    );
    println!(
        "service: one app, route `to: {{users: [{MEMBER}]}}`, markdown; storm: digest {}, reserve {}, interval {}, never_digest {never:?}, hold {};\n\
         \x20        app rate_limit {}/min, {}/h; wecom.rate_margin {}, dedup_window {}; a fresh service per storm",
        storm.digest,
        storm.reserve,
        humantime::format_duration(storm.interval),
        humantime::format_duration(storm.hold),
        limit.per_minute,
        limit.per_hour.map_or_else(|| "—".into(), |h| h.to_string()),
        humantime::format_duration(config.wecom.rate_margin),
        humantime::format_duration(config.wecom.dedup_window),
    );
    println!(
        "fake WeCom: per (app, member), a message beyond 30 in any 60 s or 1,000 in any 3,600 s is silently dropped (errcode 0), counted at receipt;\n\
         \x20           baseline: the minimal forwarder, the same storm, to the same member as another app"
    );

    let mut rows = Vec::new();
    let mut all_ok = true;
    for &groups in &sizes {
        let bodies: Vec<Bytes> = (0..groups).map(|i| Bytes::from(group_body(i))).collect();
        ctx.fake.storm_begin();
        println!("\nstorm of {groups} groups:");

        // The baseline first: a long-lived process, measured over its storm.
        let cpu_before = procstat::cpu_ticks(forwarder_pid).unwrap_or(0);
        let sampler = procstat::RssSampler::start(forwarder_pid);
        let started = Instant::now();
        let storm = runtime.block_on(drive_storm(&client, &forwarder_url, &bodies, args, started));
        let log = ctx.fake.storm_member(FORWARDER_APP, MEMBER);
        let base = Figures {
            groups,
            received: account(&log, groups, started),
            dropped: log.dropped,
            peak_rss_kib: sampler.finish(),
            cpu_seconds: cpu_seconds(forwarder_pid, cpu_before, ctx.ticks_per_second),
            metrics: String::new(),
            storm,
        };
        print_baseline(&base);

        let ours = service_storm(ctx, &runtime, &client, &bodies)?;
        print_service(&ours);
        all_ok &= check(&ours);
        ctx.fake.storm_end();
        rows.push((base, ours));
    }

    println!(
        "\nstorm summary (state {}; times in s from the first group's arrival; represented = answered and accounted for, see storm.rs):",
        config.state.backend()
    );
    println!(
        "{:>6} {:<9} {:>9} {:>11} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "groups",
        "target",
        "reached",
        "represented",
        "answered",
        "messages",
        "delivered",
        "digests",
        "dropped",
        "webhooks",
        "503s",
        "503 p50",
        "503 p99",
        "peakRSS",
        "CPU s"
    );
    for (base, ours) in &rows {
        for (name, f) in [("forwarder", base), ("service", ours)] {
            let reached = if name == "forwarder" {
                f.received.named.len()
            } else {
                f.received.accounted().min(f.groups)
            };
            println!(
                "{:>6} {:<9} {:>9} {:>11} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8.1} {:>6.2}",
                f.groups,
                name,
                format!("{reached}/{}", f.groups),
                seconds(f.represented()),
                seconds(f.storm.last_answered()),
                seconds(f.received.complete),
                f.received.messages,
                f.received.digests.len(),
                f.dropped,
                f.storm.requests(),
                f.storm.answered_503(),
                ms(f.storm.quantile_503_ms(0.5)),
                ms(f.storm.quantile_503_ms(0.99)),
                mib(f.peak_rss_kib),
                f.cpu_seconds,
            );
        }
    }
    println!(
        "(reached: groups named or counted in the member's messages; answered: the last group answered 2xx; messages: when the\n\
         \x20member's messages first accounted for every group; 503 p50/p99 in ms; peakRSS in MiB, the service's a fresh process per storm)"
    );
    if let Some((_, ours)) = rows.iter().find(|(_, ours)| ours.groups == 500) {
        let within = ours
            .represented()
            .is_some_and(|at| at <= Duration::from_secs(120));
        println!(
            "500 groups: represented within 120 s: {} ({} s)",
            if within { "yes" } else { "no" },
            seconds(ours.represented())
        );
        all_ok &= within;
    }
    drop(forwarder);
    Ok(all_ok)
}

fn cpu_seconds(pid: u32, before: u64, ticks_per_second: u64) -> f64 {
    let after = procstat::cpu_ticks(pid).unwrap_or(before);
    after.saturating_sub(before) as f64 / ticks_per_second as f64
}

/// One storm against a freshly started service.
fn service_storm(
    ctx: &StormContext,
    runtime: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    bodies: &[Bytes],
) -> Result<Figures, String> {
    let groups = bodies.len();
    let listen = format!("127.0.0.1:{}", free_port()?);
    let config = service_config(
        &listen,
        &ctx.fake.base_url,
        &state_config(ctx.backend, ctx.redis_port),
    );
    let config_path = ctx.dir.join(format!("storm-{groups}.yml"));
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let log_path = ctx.dir.join(format!("storm-{groups}.log"));
    let service = spawn_service(ctx.args, ctx.service_bin, &config_path, &log_path)?;
    let pid = service.0.id();
    runtime.block_on(wait_ready(client, &format!("http://{listen}/-/ready")))?;
    std::thread::sleep(Duration::from_millis(300));

    let cpu_before = procstat::cpu_ticks(pid).unwrap_or(0);
    let sampler = procstat::RssSampler::start(pid);
    let started = Instant::now();
    let storm = runtime.block_on(drive_storm(
        client,
        &format!("http://{listen}/alerts"),
        bodies,
        ctx.args,
        started,
    ));
    let peak_rss_kib = sampler
        .finish()
        .max(procstat::status_kib(pid, "VmHWM").unwrap_or(0));
    let cpu_seconds = cpu_seconds(pid, cpu_before, ctx.ticks_per_second);
    let metrics = runtime
        .block_on(scrape(client, &format!("http://{listen}/metrics")))
        .unwrap_or_else(|error| format!("metrics unavailable: {error}"));
    drop(service);
    let log = ctx.fake.storm_member(CORP, MEMBER);
    println!("  service log: {}", log_path.display());
    Ok(Figures {
        groups,
        received: account(&log, groups, started),
        dropped: log.dropped,
        peak_rss_kib,
        cpu_seconds,
        metrics,
        storm,
    })
}

/// The service's storm counters: digest messages by outcome, notifications held by reason.
async fn scrape(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let text = client
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let pick = |metric: &str, label: &str| -> String {
        text.lines()
            .filter(|line| line.starts_with(&format!("{metric}{{")))
            .filter_map(|line| {
                let at = line.find(&format!("{label}=\""))? + label.len() + 2;
                let value = &line[at..at + line[at..].find('"')?];
                let count = line.rsplit(' ').next()?;
                Some(format!("{value} {count}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(format!(
        "digest messages: {}; held (503): {}",
        pick("alertmanager_wecom_storm_digest_messages_total", "outcome"),
        pick("alertmanager_wecom_storm_held_total", "reason")
    ))
}

fn other_answers(storm: &Storm) -> String {
    let other = storm.other();
    if other.is_empty() {
        "none".into()
    } else {
        format!("{other:?}")
    }
}

fn print_baseline(f: &Figures) {
    let s = &f.storm;
    println!(
        "  forwarder: answered 2xx {} of {} groups (last after {} s), {} webhooks, other answers {}; the member got {} message(s)\n\
         \x20            naming {} of the {} groups; {} silently dropped",
        s.answered(),
        f.groups,
        seconds(s.last_answered()),
        s.requests(),
        other_answers(s),
        f.received.messages,
        f.received.named.len(),
        f.groups,
        f.dropped
    );
}

fn print_service(f: &Figures) {
    let s = &f.storm;
    let r = &f.received;
    let digests = r
        .digests
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" + ");
    println!(
        "  service:   represented after {} s: every group answered 2xx after {} s ({} of {}), the member's messages accounted\n\
         \x20            for all after {} s; storm over after {:.1} s",
        seconds(f.represented()),
        seconds(s.last_answered()),
        s.answered(),
        f.groups,
        seconds(r.complete),
        s.elapsed.as_secs_f64()
    );
    println!(
        "             the member got {} message(s): {} individual naming {} group(s), {} digest(s) standing for {} notification(s){}\n\
         \x20            (digests list {} alertname(s) by name, count {} on their \"more alertnames\" lines); accounted {} of {}, {} represented twice;\n\
         \x20            silently dropped {}",
        r.messages,
        r.messages - r.digests.len(),
        r.named.len(),
        r.digests.len(),
        r.digests.iter().sum::<usize>(),
        if digests.is_empty() { String::new() } else { format!(" ({digests})") },
        r.digest_listed,
        r.digest_more,
        r.accounted(),
        f.groups,
        r.twice,
        f.dropped
    );
    println!(
        "             {} webhooks, {} answered 503 (p50 {} ms, p99 {} ms), other answers {}; longest wait for an in-flight slot {:.0} ms",
        s.requests(),
        s.answered_503(),
        ms(s.quantile_503_ms(0.5)),
        ms(s.quantile_503_ms(0.99)),
        other_answers(s),
        s.slot_wait().as_secs_f64() * 1000.0
    );
    println!(
        "             peak RSS {:.1} MiB, CPU {:.2} s; {}",
        mib(f.peak_rss_kib),
        f.cpu_seconds,
        f.metrics
    );
}

/// The service lost nothing silently, represented every group exactly once, and answered
/// every group 2xx.
fn check(f: &Figures) -> bool {
    let ok = f.dropped == 0
        && f.received.accounted() == f.groups
        && f.received.twice == 0
        && f.storm.answered() == f.groups;
    if !ok {
        println!(
            "  MISSED: the service must drop nothing, represent every group once and answer every group 2xx"
        );
    }
    ok
}
