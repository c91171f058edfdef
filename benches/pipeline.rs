//! Micro-benchmarks of the hot path: `cargo bench --bench pipeline` (or `cargo bench`).
//!
//! Each group is measured at several sizes with criterion's throughput set to the number
//! of alerts (or routes), so a linear cost shows as a flat elements/s across sizes:
//! - `parse/{1,100,1000}`: `WebhookPayload::parse` of a webhook body of that many alerts,
//! - `route/routes/{1,100,1000}`: one alert tried against that many routes (it only matches
//!   the catch-all at the end, so every route's matchers are evaluated),
//! - `route/alerts/{1,100,1000}`: that many alerts through a realistic 8-route config,
//! - `render/{markdown,textcard}/{1,100,1000}`: render and fit one message of that many
//!   alerts (from 2 alerts on, the message is over WeCom's limit and must be fitted),
//! - `fit/{1,100,1000}`: `fit_alerts` with a trivial renderer (the search alone), and
//!   `fit/cut_to_fit`,
//! - `pipeline/{1,100,1000}`: parse, route and render together (what one webhook costs
//!   before it is sent).

use std::convert::Infallible;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use alertmanager_wecom::config::Config;
use alertmanager_wecom::deliver::app::LIMITS;
use alertmanager_wecom::model::{Alert, WebhookPayload};
use alertmanager_wecom::render::fit::{cut_to_fit, fit_alerts};
use alertmanager_wecom::render::Renderer;
use alertmanager_wecom::route::Router;
use alertmanager_wecom::service::Service;

#[allow(dead_code)]
#[path = "../examples/loadtest/payloads.rs"]
mod payloads;

const SIZES: [usize; 3] = [1, 100, 1000];

/// The load test's routes (see examples/loadtest.rs), every one to a party or a tag.
const ROUTES: &str = r#"
  - {name: watchdog, matchers: ['alertname="Watchdog"'], app: ops, msgtype: text, to: {tags: [9]}}
  - {name: db-critical, matchers: ['team="db"', 'severity="critical"'], app: ops, msgtype: textcard, to: {parties: [12]}}
  - {name: db, matchers: ['team="db"'], app: ops, msgtype: markdown, to: {parties: [12]}}
  - {name: pay, matchers: ['team=~"pay|payments"', 'severity=~"critical|warning"'], app: ops, msgtype: textcard, to: {parties: [13]}}
  - {name: web, matchers: ['{team="web", severity!="info"}'], app: ops, msgtype: markdown, to: {parties: [14]}}
  - {name: infra-probes, matchers: ['team="infra"', 'job=~"blackbox|probe.*"'], app: ops, msgtype: markdown, to: {parties: [15]}}
  - {name: staging, matchers: ['env="staging"'], app: ops, msgtype: text, to: {tags: [3]}}
  - {name: default, app: ops, msgtype: markdown, to: {tags: [1]}}
"#;

fn config(routes: &str) -> Config {
    let text = format!(
        "apps:\n  - {{name: ops, corp_id: wwbench, agent_id: 1000002, secret: bench}}\nroutes:{routes}templates:\n  timezone: Asia/Shanghai\n"
    );
    Config::from_yaml(&text, "bench.yml", Path::new("")).expect("the bench config is valid")
}

/// `n` routes: `n - 1` that a `team="pay"` alert does not match (a mix of equality and
/// regex matchers, like per-team routes), then a catch-all.
fn many_routes(n: usize) -> Config {
    let mut routes = String::from("\n");
    for i in 0..n.saturating_sub(1) {
        let matchers = if i % 2 == 0 {
            format!("['team=\"team-{i}\"', 'severity=~\"critical|warning\"']")
        } else {
            format!("['team=~\"team-{i}|squad-{i}\"', 'env!=\"staging\"']")
        };
        routes.push_str(&format!(
            "  - {{name: r{i}, matchers: {matchers}, app: ops, msgtype: markdown, to: {{parties: [{}]}}}}\n",
            i + 2
        ));
    }
    routes.push_str("  - {name: default, app: ops, msgtype: markdown, to: {tags: [1]}}\n");
    config(&routes)
}

fn body(kind: usize, size: usize) -> String {
    payloads::group(kind, size, 0)
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for size in SIZES {
        let body = body(0, size);
        eprintln!("parse/{size}: {size} alerts, {} bytes", body.len());
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), body.as_bytes(), |b, body| {
            b.iter(|| WebhookPayload::parse(black_box(body)).unwrap())
        });
    }
    group.finish();
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let one = WebhookPayload::parse(body(0, 1).as_bytes()).unwrap();
    for routes in SIZES {
        let config = many_routes(routes);
        let router = Router::new(&config.routes).unwrap();
        eprintln!("route/routes/{routes}: 1 alert, {routes} routes");
        group.throughput(Throughput::Elements(routes as u64));
        group.bench_with_input(BenchmarkId::new("routes", routes), &one.alerts, |b, alerts| {
            b.iter(|| {
                let plan = router.plan(black_box(alerts));
                assert_eq!(plan.notifications.len(), 1);
                plan.notifications.len()
            })
        });
    }
    let config = config(ROUTES);
    let router = Router::new(&config.routes).unwrap();
    for size in SIZES {
        let payload = WebhookPayload::parse(body(0, size).as_bytes()).unwrap();
        eprintln!(
            "route/alerts/{size}: {size} alerts, {} routes",
            config.routes.len()
        );
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("alerts", size), &payload.alerts, |b, alerts| {
            b.iter(|| router.plan(black_box(alerts)).notifications.len())
        });
    }
    group.finish();
}

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    let config = config(ROUTES);
    let renderer = Renderer::new(&config.templates).unwrap();
    let markdown = config.routes.iter().find(|r| r.name == "web").unwrap();
    let textcard = config.routes.iter().find(|r| r.name == "pay").unwrap();
    for (name, route, kind) in [("markdown", markdown, 3), ("textcard", textcard, 0)] {
        for size in SIZES {
            let payload = WebhookPayload::parse(body(kind, size).as_bytes()).unwrap();
            let alerts: Vec<&Alert> = payload.alerts.iter().collect();
            let message = renderer.render(route, &payload, &alerts, &[], &LIMITS).unwrap();
            eprintln!(
                "render/{name}/{size}: {size} alerts, {} shown, cut {}",
                message.shown_alerts, message.cut
            );
            group.throughput(Throughput::Elements(size as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &alerts, |b, alerts| {
                b.iter(|| {
                    renderer
                        .render(route, &payload, black_box(alerts), &[], &LIMITS)
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

fn fit(c: &mut Criterion) {
    let mut group = c.benchmark_group("fit");
    for size in SIZES {
        let lines: Vec<String> = (0..size)
            .map(|i| {
                format!("**KubePodCrashLooping** · critical\n> Pod pay/api-{i:04x} is crash looping\n\n")
            })
            .collect();
        let render = |k: usize| -> Result<String, Infallible> { Ok(lines[..k].concat()) };
        let more = |n: usize| format!("\n… and {n} more alerts");
        eprintln!(
            "fit/{size}: {size} alerts of {} bytes into 2048 bytes",
            lines[0].len()
        );
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| fit_alerts(black_box(size), 2048, render, more).unwrap())
        });
    }
    let long = "数据库连接数过高，请检查慢查询。".repeat(200);
    eprintln!(
        "fit/cut_to_fit: {} bytes of Chinese text cut to 512 bytes",
        long.len()
    );
    group.throughput(Throughput::Elements(1));
    group.bench_function("cut_to_fit", |b| b.iter(|| cut_to_fit(black_box(&long), 512)));
    group.finish();
}

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    // The service's own pipeline up to the WeCom call: parse, route, render and fit,
    // and the alerts' digest for the record of accepted messages (on by default).
    let service = Service::standalone(config(ROUTES), true).unwrap();
    // Preparing reads the record (in memory here), which is async.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for size in SIZES {
        let body = body(0, size);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), body.as_bytes(), |b, body| {
            b.iter(|| {
                let payload = WebhookPayload::parse(black_box(body)).unwrap();
                runtime.block_on(service.prepare(&payload)).messages()
            })
        });
    }
    group.finish();
}

fn settings() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = settings();
    targets = parse, route, render, fit, pipeline
}
criterion_main!(benches);
