//! Realistic Alertmanager webhook bodies (version 4), shaped like the captured fixtures in
//! `src/render/samples/`, generated for any group size. Shared by the load test and the
//! criterion benchmarks (`#[path]`-included there).

use serde_json::{json, Map, Value};

/// The kinds of alert group the generator knows, after the fixtures: a crash-looping pod
/// (team pay, critical), a Chinese-language database alert with markup in its annotations
/// (team db, warning), a blackbox target down (team infra, info, resolved when alone) and a
/// latency alert (team web, warning).
pub const KINDS: usize = 4;

/// Where the load test puts a request's number (inside the group key), so that every
/// request can be a group of its own; elsewhere it is part of an ordinary group key.
pub const SEQ: &str = "#SEQ#";

/// A webhook body: one group of `size` alerts of kind `kind % KINDS`. In groups of more than
/// one alert, every tenth alert is resolved, as Alertmanager sends them. `variant` changes
/// the pods and fingerprints, so bodies of the same kind and size can differ.
pub fn group(kind: usize, size: usize, variant: usize) -> String {
    let kind = kind % KINDS;
    let alerts: Vec<Value> = (0..size).map(|i| alert(kind, size, variant, i)).collect();
    let first = alerts[0]["labels"].as_object().cloned().unwrap_or_default();
    let common_keys: &[&str] = &["alertname", "team", "severity", "job"];
    let common: Map<String, Value> = first
        .iter()
        .filter(|(key, _)| size == 1 || common_keys.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let group_labels: Map<String, Value> = first
        .iter()
        .filter(|(key, _)| *key == "alertname" || *key == "team")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    // The marker lets the load test make every request a group of its own.
    let group_key = format!(
        "{{}}:{{alertname={}, team={}}}{}",
        group_labels["alertname"], group_labels["team"], SEQ
    );
    let firing = alerts.iter().any(|a| a["status"] == "firing");
    let common_annotations = if size == 1 {
        alerts[0]["annotations"].clone()
    } else {
        json!({})
    };
    json!({
        "receiver": "wecom",
        "status": if firing { "firing" } else { "resolved" },
        "alerts": alerts,
        "groupLabels": group_labels,
        "commonLabels": common,
        "commonAnnotations": common_annotations,
        "externalURL": "http://alertmanager.example.com:9093",
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0
    })
    .to_string()
}

fn alert(kind: usize, size: usize, variant: usize, i: usize) -> Value {
    let resolved = if size == 1 { kind == 2 } else { i % 10 == 9 };
    let status = if resolved { "resolved" } else { "firing" };
    let ends_at = if resolved {
        "2026-11-25T18:02:11.000Z"
    } else {
        "0001-01-01T00:00:00Z"
    };
    let fingerprint = format!("{:016x}", (variant as u64) << 32 | (kind as u64) << 24 | i as u64);
    let (labels, annotations, generator) = match kind {
        0 => {
            let namespace = format!("pay-{}", i % 5);
            let pod = format!("api-{:04x}-{variant}", i);
            (
                json!({"alertname": "KubePodCrashLooping", "container": "api", "namespace": namespace,
                       "owner": "alice", "pod": pod, "severity": "critical", "team": "pay",
                       "job": "kube-state-metrics", "instance": "10.1.2.3:8080"}),
                json!({"description": format!("Pod {namespace}/{pod} (container api) is restarting 3.2 times / 10 minutes."),
                       "runbook_url": "https://runbooks.example.com/KubePodCrashLooping",
                       "summary": format!("Pod {namespace}/{pod} is crash looping")}),
                "http://prometheus.example.com:9090/graph?g0.expr=rate%28kube_pod_container_status_restarts_total%5B10m%5D%29+%3E+0",
            )
        }
        1 => (
            json!({"alertname": "数据库连接数过高", "instance": format!("mysql-{i}"), "owner": "zhangsan",
                   "severity": "warning", "team": "db", "job": "mysqld"}),
            json!({"description": "请检查慢查询 <b>并</b> \"扩容\" & 观察 {{ weird }} `code` **bold** <font color=\"warning\">x</font> [link](http://evil.example)",
                   "summary": format!("mysql-{i} 连接数 980/1000，接近上限")}),
            "",
        ),
        2 => (
            json!({"alertname": "TargetDown", "job": "blackbox", "severity": "info", "team": "infra",
                   "instance": format!("https://probe-{i}.example.com/health")}),
            json!({"summary": format!("probe-{i}: 1 of 3 blackbox targets are down")}),
            "http://prometheus.example.com:9090/graph?g0.expr=up%7Bjob%3D%22blackbox%22%7D+%3D%3D+0",
        ),
        _ => (
            json!({"alertname": "HighRequestLatency", "service": format!("web-{}", i % 7),
                   "instance": format!("web-{i}:8080"), "severity": "warning", "team": "web", "job": "web"}),
            json!({"summary": format!("web-{i}: p99 latency 1.8s over 5m"),
                   "description": "p99 request latency is above 1s for 5 minutes."}),
            "http://prometheus.example.com:9090/graph?g0.expr=histogram_quantile%280.99%2C+rate%28http_request_duration_seconds_bucket%5B5m%5D%29%29+%3E+1",
        ),
    };
    json!({
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": "2026-11-25T17:46:42.129103993Z",
        "endsAt": ends_at,
        "generatorURL": generator,
        "fingerprint": fingerprint
    })
}
