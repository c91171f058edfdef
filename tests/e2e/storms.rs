//! Alert storms through a real Alertmanager (`group_by: [alertname]`): hundreds of groups
//! to one recipient within a minute reach them within two minutes — on their own while
//! budget lasts, then as digests — and WeCom (the fake drops like WeCom, by its own clock)
//! never silently drops one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// The promise: every group in a delivered message within this, from the first.
const REPRESENTED_WITHIN: Duration = Duration::from_secs(120);

fn name(i: usize) -> String {
    format!("Storm{i:04}")
}

/// What one member received, read back: alertnames named in messages sent on their own,
/// and per digest the names it lists and how many notifications it says it stands for.
#[derive(Default, Debug)]
struct Received {
    individual: BTreeMap<String, usize>,
    digests: Vec<(BTreeSet<String>, usize)>,
}

impl Received {
    fn of(messages: &[Value]) -> Received {
        let mut received = Received::default();
        for body in messages {
            let text = body["markdown"]["content"].as_str().unwrap_or_default();
            let names: BTreeSet<String> = text
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|word| word.starts_with("Storm") && word.len() == 9)
                .map(str::to_string)
                .collect();
            if text.contains("[STORM DIGEST]") {
                let count = text
                    .split(" notification(s)")
                    .next()
                    .and_then(|head| head.rsplit(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                received.digests.push((names, count));
            } else {
                for name in names {
                    *received.individual.entry(name).or_default() += 1;
                }
            }
        }
        received
    }

    /// Groups accounted for: each sent on its own, plus each digest's count.
    fn accounted(&self) -> usize {
        self.individual.len() + self.digests.iter().map(|(_, n)| n).sum::<usize>()
    }
}

/// Posts the groups `names` over `window`, in batches every 3 s, with `severity(i)` and
/// `labels` on every alert.
async fn storm(
    alertmanager: &Alertmanager,
    names: std::ops::Range<usize>,
    window: Duration,
    labels: &[(&str, &str)],
    severity: impl Fn(usize) -> &'static str,
) {
    let batches = (window.as_secs() / 3).max(1) as usize;
    let per_batch = names.len().div_ceil(batches);
    let started = Instant::now();
    for batch in 0..batches {
        let due = Duration::from_secs(3 * batch as u64);
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        let from = names.start + batch * per_batch;
        let alerts: Vec<Value> = (from..(from + per_batch).min(names.end))
            .map(|i| {
                let name = name(i);
                let mut all: Vec<(&str, &str)> = vec![("alertname", &name), ("severity", severity(i))];
                all.extend_from_slice(labels);
                alert(&all, &format!("storm alert {i}"))
            })
            .collect();
        if !alerts.is_empty() {
            alertmanager.post_alerts(&alerts).await;
        }
    }
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager: apt-get install -y prometheus-alertmanager; run with cargo test --test e2e -- --ignored"]
async fn five_hundred_groups_to_one_user_in_a_minute_reach_them_within_two_minutes_and_none_is_dropped() {
    let stack = Stack::start(Options {
        routes: "routes:\n  - {name: oncall, app: ops, msgtype: markdown, to: {users: [alice]}}\n".into(),
        group_by: "[alertname]",
        group_interval: "10s",
        ..Options::default()
    })
    .await;
    let critical = [60, 110];
    let started = Instant::now();
    storm(&stack.alertmanager, 0..500, Duration::from_secs(60), &[], |i| {
        if critical.contains(&i) {
            "critical"
        } else {
            "warning"
        }
    })
    .await;

    let received = eventually(
        "every group accounted for in a message alice received",
        REPRESENTED_WITHIN.saturating_sub(started.elapsed()),
        || async {
            let received = Received::of(&stack.wecom.member_messages("alice"));
            (received.accounted() >= 500).then_some(received)
        },
    )
    .await;
    let took = started.elapsed();
    eprintln!(
        "500 groups represented after {:.1}s in {} messages ({} digests)",
        took.as_secs_f64(),
        received.individual.len() + received.digests.len(),
        received.digests.len()
    );
    assert_eq!(stack.wecom.silently_dropped(), 0);
    assert_eq!(received.accounted(), 500, "nothing counted twice: {received:?}");
    // Nothing fires twice: a group sent on its own is in no digest, and vice versa.
    for (name, times) in &received.individual {
        assert_eq!(*times, 1, "{name} sent on its own once");
        assert!(
            received.digests.iter().all(|(names, _)| !names.contains(name)),
            "{name} both on its own and in a digest"
        );
    }
    for i in critical {
        assert!(
            received.individual.contains_key(&name(i)),
            "critical {} on its own",
            name(i)
        );
    }
    // Alertmanager sees every group delivered: the digests answered their retries.
    eventually(
        "Alertmanager counting 500 delivered notifications",
        Duration::from_secs(60),
        || async {
            let theirs = stack.alertmanager.metrics().await;
            let delivered = theirs.sum("alertmanager_notifications_total", &WEBHOOK)
                - theirs.sum("alertmanager_notifications_failed_total", &WEBHOOK);
            (delivered >= 500.0).then_some(())
        },
    )
    .await;
    // One log line per route and interval, not one per webhook.
    let log = stack.service.log();
    let storm_lines = log
        .lines()
        .filter(|l| l.contains("answered 503 in the last"))
        .count();
    let held = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("digested"))
        .count();
    assert!(
        storm_lines <= 2 + took.as_secs() as usize / 20,
        "{storm_lines} storm lines"
    );
    assert_eq!(held, 0, "no warn line per held webhook");
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager: apt-get install -y prometheus-alertmanager; run with cargo test --test e2e -- --ignored"]
async fn storms_to_a_party_a_tag_and_everyone_at_once_are_digested_and_none_is_dropped() {
    let stack = Stack::start(Options {
        routes: "routes:\n  - {name: party, matchers: ['to=\"party\"'], app: ops, msgtype: markdown, to: {parties: [3]}}\n  - {name: tag, matchers: ['to=\"tag\"'], app: ops, msgtype: markdown, to: {tags: [4]}}\n  - {name: everyone, app: ops, msgtype: markdown, to: {users: ['@all']}}\n".into(),
        group_by: "[alertname]",
        group_interval: "10s",
        ..Options::default()
    })
    .await;
    stack.wecom.add_users(&["carol", "dave", "erin", "frank"]);
    stack.wecom.add_party("3", &["carol", "dave"]);
    stack.wecom.add_party("5", &["frank"]);
    stack.wecom.add_tag("4", &["erin"], &["5"]);
    let started = Instant::now();
    let window = Duration::from_secs(30);
    let warning = |_| "warning";
    let party = storm(&stack.alertmanager, 0..150, window, &[("to", "party")], warning);
    let tag = storm(&stack.alertmanager, 1000..1150, window, &[("to", "tag")], warning);
    let everyone = storm(&stack.alertmanager, 2000..2150, window, &[("to", "all")], warning);
    tokio::join!(party, tag, everyone);
    for (member, expected) in [("carol", 300), ("erin", 300), ("frank", 300), ("alice", 150)] {
        let received = eventually(
            &format!("{member}'s groups accounted for"),
            REPRESENTED_WITHIN.saturating_sub(started.elapsed()),
            || async {
                let received = Received::of(&stack.wecom.member_messages(member));
                (received.accounted() >= expected).then_some(received)
            },
        )
        .await;
        assert_eq!(received.accounted(), expected, "{member}: {received:?}");
    }
    assert_eq!(stack.wecom.silently_dropped(), 0);
}
