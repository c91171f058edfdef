//! The binary's memory and sockets under the worst fan-out: four webhooks at once, each a
//! group of hundreds of alerts (`$E2E_OWNERS`, default 300) owned by as many users (a
//! message each), WeCom answering each in 100 ms. Sampled from /proc; the bound must stay under the shipped
//! Deployment's 128 Mi memory limit. Figures are printed for docs/deployment.md.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use crate::harness::*;

/// Owners per group: `$E2E_OWNERS`, else 300 (the binary here is a debug build, which
/// renders a few hundred messages a second; the figures in docs/deployment.md use 1,000).
fn owners() -> usize {
    std::env::var("E2E_OWNERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}
const WEBHOOKS: usize = 4;

fn owned_group(name: &str) -> String {
    let alerts: Vec<_> = (0..owners())
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {"alertname": name, "owner": format!("owner-{i:04}"), "instance": format!("host-{i}")},
                "annotations": {"summary": format!("{name} on host-{i}")},
                "startsAt": "2026-11-25T17:46:42Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example.com/graph",
                "fingerprint": format!("{i:016x}")
            })
        })
        .collect();
    json!({
        "version": "4", "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"), "status": "firing",
        "receiver": "wecom", "groupLabels": {"alertname": name}, "commonLabels": {"alertname": name},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.example.com", "truncatedAlerts": 0,
        "alerts": alerts
    })
    .to_string()
}

/// VmRSS in KiB and the number of open sockets of process `pid`.
fn sample(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0);
    (rss, sockets)
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager: apt-get install -y prometheus-alertmanager; run with cargo test --test e2e -- --ignored"]
async fn four_webhooks_of_hundreds_of_owners_stay_bounded_in_sockets_and_memory() {
    let stack = Stack::start(Options {
        routes: "routes:\n  - {name: owners, app: ops, msgtype: text, to: {users: ['{{labels.owner}}']}}\n"
            .into(),
        ..Options::default()
    })
    .await;
    let owner_count = owners();
    let owners: Vec<String> = (0..owner_count).map(|i| format!("owner-{i:04}")).collect();
    stack
        .wecom
        .add_users(&owners.iter().map(String::as_str).collect::<Vec<_>>());
    stack.wecom.set_answer_latency(Duration::from_millis(100));
    let pid = stack.service.pid();
    let (idle_rss, idle_sockets) = sample(pid);

    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = (0, 0);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let (rss, sockets) = sample(pid);
                peak = (peak.0.max(rss), peak.1.max(sockets));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let started = Instant::now();
    let bodies: Vec<String> = (0..WEBHOOKS).map(|i| owned_group(&format!("Owned{i}"))).collect();
    // Like Alertmanager: each webhook retried after a 503 until it is delivered.
    let attempts = join_all(bodies.iter().map(|body| async {
        for attempt in 1..=200 {
            let response = stack.service.post_alerts(body, Some(WEBHOOK_TOKEN)).await;
            if response.status() == 200 {
                return attempt;
            }
            assert_eq!(response.status(), 503);
        }
        panic!("not delivered after 200 attempts")
    }))
    .await;
    let took = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (peak_rss, peak_sockets) = sampler.join().unwrap();
    eprintln!(
        "{WEBHOOKS} webhooks × {owner_count} owners, WeCom 100 ms: all delivered in {took:?} after {attempts:?} attempts; \
         peak RSS {:.1} MiB (idle {:.1}), peak sockets {peak_sockets} (idle {idle_sockets}), at most {} WeCom calls in flight",
        peak_rss as f64 / 1024.0,
        idle_rss as f64 / 1024.0,
        stack.wecom.max_in_flight()
    );
    for owner in owners.iter().step_by(97) {
        assert_eq!(
            stack.wecom.member_messages(owner).len(),
            WEBHOOKS,
            "{owner}: one per group"
        );
    }
    assert_eq!(
        stack.wecom.delivered().len(),
        WEBHOOKS * owner_count,
        "each message once"
    );
    // wecom.max_concurrent_calls (8) to WeCom, the webhooks' own, and a few connections
    // still closing.
    assert!(
        peak_sockets <= idle_sockets + 8 + WEBHOOKS + 8,
        "{peak_sockets} sockets"
    );
    assert!(
        peak_rss < 100 * 1024,
        "{peak_rss} KiB: under the Deployment's 128 Mi with room"
    );
}
