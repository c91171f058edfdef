//! Load benchmark: `cargo run --release --example loadtest [-- --help]`.
//!
//! Everything runs on 127.0.0.1 and stops by itself, bounded in time and request count:
//! 1. builds the service (`cargo build --release --bin alertmanager-wecom`, same target
//!    directory as this example; `--service-bin PATH` uses a given binary instead),
//! 2. starts a fast fake WeCom in this process (`loadtest/fake.rs`),
//! 3. starts the service as a child process with a generated config pointing at the fake,
//!    and the baseline — a minimal forwarder (`loadtest/forwarder.rs`) — as another child,
//! 4. drives `POST /alerts` at a fixed concurrency with 1-, 100- and 1,000-alert groups,
//!    the baseline and the service one after the other for each size, and prints
//!    webhooks/s, WeCom sends/s, latency, RSS, CPU per 1,000 webhooks and gettoken calls,
//!    and the service's ratios to the baseline measured in the same run,
//! 5. times single 1,000-alert groups end to end on the idle service, with an in-process
//!    breakdown (parse, route, render + fit) through the library,
//! 6. runs alert storms to one recipient (`--storms`, `loadtest/storm.rs`; `--only-storms`
//!    for them alone): how long until every group is represented in WeCom, and the
//!    messages it took, against the fake in storm mode (WeCom's silent drop), with the
//!    forwarder given the same storms.

#[path = "loadtest/driver.rs"]
mod driver;
#[path = "loadtest/fake.rs"]
mod fake;
#[path = "loadtest/forwarder.rs"]
mod forwarder;
#[path = "loadtest/payloads.rs"]
mod payloads;
#[path = "loadtest/procstat.rs"]
mod procstat;
#[path = "loadtest/storm.rs"]
mod storm;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use clap::Parser;

use alertmanager_wecom::config::Config;
use alertmanager_wecom::deliver::app::LIMITS;
use alertmanager_wecom::model::WebhookPayload;
use alertmanager_wecom::render::Renderer;
use alertmanager_wecom::route::Router;
use driver::{drive, drive_rate, Bodies, PhaseResult};
use fake::FakeWeCom;

/// Load benchmark of alertmanager-wecom against a fake WeCom, with a minimal forwarder as
/// the baseline (all on loopback).
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of measured load per phase (each size, baseline and service each).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of unmeasured load before each phase.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// At most this many requests per phase.
    #[arg(long, default_value_t = 200_000)]
    max_requests: u64,
    /// Alerts per webhook, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    sizes: Vec<usize>,
    /// Sequential 1,000-alert webhooks timed end to end on the idle service (per kind).
    #[arg(long, default_value_t = 10)]
    single_runs: usize,
    /// Use this service binary instead of building one with cargo.
    #[arg(long, value_name = "PATH")]
    service_bin: Option<PathBuf>,
    /// Log level of the service (RUST_LOG); `info` logs a line per delivery, as in production.
    #[arg(long, default_value = "info")]
    service_log: String,
    /// Latency at the same load: after the fixed-concurrency phases of a size, both targets
    /// also get an open-loop load of this fraction of the service's throughput (0 = skip).
    #[arg(long, default_value_t = 0.25)]
    rate_fraction: f64,
    /// Run the service under this command prefix, e.g. `valgrind --tool=callgrind` or
    /// `heaptrack` for profiling (the figures are then those of the profiled service).
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    service_wrapper: Option<String>,
    /// The service's delivery state: `memory`, `redis` (a redis-server started on a free
    /// loopback port), or `both`, one run after the other.
    #[arg(long, value_enum, default_value_t = StateBackend::Both)]
    state: StateBackend,
    /// Send the same few groups again and again instead of a new group per request (with
    /// the record of accepted messages on, repeats are answered as duplicates).
    #[arg(long)]
    repeat_groups: bool,
    /// Alert storms after the load phases: the number of alert groups of each, every group
    /// to one recipient; `''` or `0` skips them.
    #[arg(long, default_value = "100,500,2000", value_name = "GROUPS,…")]
    storms: String,
    /// Seconds over which a storm's groups first arrive, spread evenly.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    storm_window: f64,
    /// Seconds from a storm's start after which its groups are no longer retried.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    storm_limit: f64,
    /// At most this many storm webhooks in flight at once (the simulated Alertmanager's).
    #[arg(long, default_value_t = 64)]
    storm_in_flight: usize,
    /// Run only the storms (no load phases, single groups or record measurement).
    #[arg(long)]
    only_storms: bool,
    /// The delivery state the storms run with. Default: the run's `--state`, except that
    /// with `both` (the default) storms run on `memory` only — each storm takes minutes;
    /// `--storm-state both` runs them on both.
    #[arg(long, value_enum, value_name = "BACKEND")]
    storm_state: Option<StateBackend>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StateBackend {
    Memory,
    Redis,
    Both,
}

/// Bodies per phase; request i sends body i % VARIANTS (the alert kinds rotate, so the
/// groups take different routes, apps and msgtypes).
const VARIANTS: usize = 8;
const APPS: [&str; 2] = ["wwload-ops", "wwload-dba"];
/// Open-loop phases: requests beyond this many outstanding are skipped (and reported).
const MAX_IN_FLIGHT: usize = 256;

fn main() -> ExitCode {
    let mut raw = std::env::args();
    if raw.nth(1).as_deref() == Some("__forwarder") {
        let upstream = raw.next().expect("__forwarder UPSTREAM_BASE_URL [TOUSER]");
        let touser = raw.next().unwrap_or_else(|| "@all".into());
        return match forwarder::run(&upstream, &touser) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("forwarder: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    if let Err(error) = storm::sizes(&args.storms) {
        eprintln!("loadtest: {error}");
        return ExitCode::FAILURE;
    }
    if args.state == StateBackend::Both {
        return run_each_backend(&args);
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(error) => {
            eprintln!("loadtest: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Whether this run's storms run here, on `backend`.
fn storms_on(args: &Args, backend: StateBackend) -> bool {
    match args.storm_state {
        None | Some(StateBackend::Both) => true,
        Some(only) => only == backend,
    }
}

/// `--state both`: this program again with `--state memory`, then `--state redis` (storms
/// on `memory` only unless `--storm-state` says otherwise; with `--only-storms`, a backend
/// without storms is not run at all).
fn run_each_backend(args: &Args) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("loadtest: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut given: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = given.iter().position(|a| a == "--state") {
        given.drain(at..(at + 2).min(given.len()));
    }
    given.retain(|a| !a.starts_with("--state="));
    if args.storm_state.is_none() {
        given.extend(["--storm-state".into(), "memory".into()]);
    }
    let mut worst = 0;
    for (backend, state) in [("memory", StateBackend::Memory), ("redis", StateBackend::Redis)] {
        let storms = match args.storm_state {
            None => state == StateBackend::Memory,
            Some(only) => only == StateBackend::Both || only == state,
        };
        let sizes = storm::sizes(&args.storms).unwrap_or_default();
        if args.only_storms && (!storms || sizes.is_empty()) {
            continue;
        }
        println!("\n######## delivery state: {backend} ########\n");
        let status = Command::new(&exe)
            .args(&given)
            .args(["--state", backend])
            .status();
        let code = match status {
            Ok(status) => status.code().unwrap_or(1),
            Err(error) => {
                eprintln!("loadtest: cannot run {}: {error}", exe.display());
                1
            }
        };
        worst = worst.max(code);
    }
    ExitCode::from(worst.clamp(0, 255) as u8)
}

/// The `state:` section for `backend`, with Redis on `redis_port`.
fn state_config(backend: StateBackend, redis_port: u16) -> String {
    match backend {
        StateBackend::Redis => format!(
            "state:\n  backend: redis\n  url: redis://127.0.0.1:{redis_port}/0\n  key_prefix: 'loadtest-{}:'\n",
            fastrand::u64(..)
        ),
        // The default; left out, so the config also suits a binary from before `state:`
        // (`--service-bin`, to compare one commit with another).
        _ => String::new(),
    }
}

/// The service's configuration. Every route sends to a party or a tag, never to users, and
/// every group takes exactly one route (one `message/send` per webhook, like the baseline,
/// except that a big text/markdown group goes out as a numbered series of up to
/// `templates.max_messages` messages; sends/s shows it):
/// the service counts messages per user against WeCom's silent 30-a-minute drop and holds
/// back (503) what would exceed it, so a user recipient under thousands of webhooks a second
/// would measure those hold-backs instead of delivery. Otherwise production defaults:
/// the record of accepted messages is on (`dedup_window` 10m), and every request is a new
/// group, so each is claimed, sent and recorded.
fn service_config(listen: &str, api_url: &str, state: &str) -> String {
    format!(
        r#"listen: {listen}
wecom:
  api_url: {api_url}
  timeout: 5s
  delivery_deadline: 6s
{state}
# Every webhook of a phase goes to the same party or tag: with WeCom's 30 a minute per
# member the phases would measure storm digests, not the pipeline. A limit no load reaches
# keeps the budgets booked (their cost is measured) without holding anything back;
# storms are measured on their own, with WeCom's limits.
apps:
  - {{name: ops, corp_id: {ops}, agent_id: 1000002, secret: loadtest-secret-ops, rate_limit: {{per_minute: 100000000, per_hour: 0}}}}
  - {{name: dba, corp_id: {dba}, agent_id: 1000003, secret: loadtest-secret-dba, rate_limit: {{per_minute: 100000000, per_hour: 0}}}}
routes:
  - {{name: watchdog, matchers: ['alertname="Watchdog"'], app: ops, msgtype: text, to: {{tags: [9]}}}}
  - {{name: db-critical, matchers: ['team="db"', 'severity="critical"'], app: dba, msgtype: textcard, to: {{parties: [12]}}}}
  - {{name: db, matchers: ['team="db"'], app: dba, msgtype: markdown, to: {{parties: [12]}}}}
  - {{name: pay, matchers: ['team=~"pay|payments"', 'severity=~"critical|warning"'], app: ops, msgtype: textcard, to: {{parties: [13]}}}}
  - {{name: web, matchers: ['{{team="web", severity!="info"}}'], app: ops, msgtype: markdown, to: {{parties: [14]}}}}
  - {{name: infra-probes, matchers: ['team="infra"', 'job=~"blackbox|probe.*"'], app: ops, msgtype: markdown, to: {{parties: [15]}}}}
  - {{name: staging, matchers: ['env="staging"'], app: ops, msgtype: text, to: {{tags: [3]}}}}
  - {{name: default, app: ops, msgtype: markdown, to: {{tags: [1]}}}}
templates:
  timezone: Asia/Shanghai
"#,
        ops = APPS[0],
        dba = APPS[1],
    )
}

/// A child process stopped when dropped: SIGTERM (the service shuts down gracefully, and a
/// profiler wrapping it writes its output), SIGKILL after 30 s.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cargo build --release --bin alertmanager-wecom` into the target directory this example
/// was built in (…/target/release/examples/loadtest → …/target).
fn service_binary(args: &Args) -> Result<PathBuf, String> {
    if let Some(path) = &args.service_bin {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target_dir = exe
        .ancestors()
        .nth(3)
        .ok_or("cannot find the target directory")?
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    eprintln!("building the service: cargo build --release --bin alertmanager-wecom");
    let mut command = Command::new(cargo);
    // `cargo run` gives this process the example's CARGO_MANIFEST_DIR, CARGO_PKG_* … and,
    // the package having a build script, its OUT_DIR; passed on, build scripts that watch
    // them (ring's watches OUT_DIR) would rebuild the TLS stack here and again in the next
    // `cargo run`, about 3 minutes each.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "OUT_DIR"
            || name == "CARGO_MANIFEST_DIR"
            || name == "CARGO_MANIFEST_PATH"
            || name == "CARGO_CRATE_NAME"
            || name == "CARGO_BIN_NAME"
            || name == "CARGO_PRIMARY_PACKAGE"
            || name.starts_with("CARGO_PKG_")
        {
            command.env_remove(&*name);
        }
    }
    let status = command
        .args([
            "build",
            "--release",
            "--bin",
            "alertmanager-wecom",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build failed: {status}"));
    }
    Ok(target_dir.join("release").join("alertmanager-wecom"))
}

/// The load generator's runtime (two workers, beside the service's) and an HTTP client
/// keeping `connections` idle connections, each request bounded by `timeout`.
fn driver_runtime(
    connections: usize,
    timeout: Duration,
) -> Result<(tokio::runtime::Runtime, reqwest::Client), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    Ok((runtime, client))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

async fn wait_ready(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(reply) = client.get(url).send().await {
            if reply.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not become ready within 60s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One measured phase against one target process.
struct Measured {
    result: PhaseResult,
    sends: u64,
    cpu_seconds: f64,
    peak_rss_kib: u64,
}

impl Measured {
    fn cpu_per_1000(&self) -> f64 {
        self.cpu_seconds / self.result.requests().max(1) as f64 * 1000.0
    }
}

struct Target {
    name: &'static str,
    pid: u32,
    url: String,
}

/// How a phase loads its target: `Some(rate)` open loop at that many webhooks per second,
/// `None` at `--concurrency` (closed loop).
async fn measure(
    client: &reqwest::Client,
    target: &Target,
    bodies: &Bodies,
    args: &Args,
    fake: &FakeWeCom,
    ticks_per_second: u64,
    rate: Option<f64>,
) -> Measured {
    let load = |duration: f64| async move {
        let duration = Duration::from_secs_f64(duration);
        match rate {
            None => {
                drive(
                    client,
                    &target.url,
                    bodies,
                    args.concurrency,
                    duration,
                    args.max_requests,
                )
                .await
            }
            Some(rate) => drive_rate(client, &target.url, bodies, rate, duration, MAX_IN_FLIGHT).await,
        }
    };
    if args.warmup > 0.0 {
        load(args.warmup).await;
    }
    let sends_before = fake.counters.sends();
    let cpu_before = procstat::cpu_ticks(target.pid).unwrap_or(0);
    let sampler = procstat::RssSampler::start(target.pid);
    let result = load(args.duration).await;
    let peak_rss_kib = sampler.finish();
    let cpu_after = procstat::cpu_ticks(target.pid).unwrap_or(0);
    Measured {
        sends: fake.counters.sends() - sends_before,
        cpu_seconds: (cpu_after - cpu_before) as f64 / ticks_per_second as f64,
        peak_rss_kib,
        result,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_row(size: usize, mode: &str, name: &str, m: &Measured) {
    let r = &m.result;
    let errors = if r.errors.is_empty() {
        String::new()
    } else {
        format!("  errors {:?}", r.errors)
    };
    println!(
        "{size:>6} {mode:>7} {name:<10} {:>9.0} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>9.3} {:>8}{errors}",
        r.per_second(),
        m.sends as f64 / r.elapsed.as_secs_f64(),
        r.quantile_ms(0.5),
        r.quantile_ms(0.99),
        r.max_ms(),
        mib(m.peak_rss_kib),
        m.cpu_per_1000(),
        r.requests(),
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn run(args: &Args) -> Result<bool, String> {
    if cfg!(debug_assertions) {
        eprintln!("warning: the load generator was built without --release; its figures are not comparable");
    }
    let service_bin = service_binary(args)?;
    let record_kib = if args.only_storms { 0 } else { full_record_kib() };
    let ticks_per_second = procstat::clock_ticks();
    let fake = FakeWeCom::start(2).map_err(|e| format!("fake WeCom: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;

    let redis_port = free_port()?;
    let redis = match args.state {
        StateBackend::Redis => Some(start_redis(redis_port, dir.path())?),
        _ => None,
    };
    let storms = storm::StormContext {
        args,
        service_bin: &service_bin,
        fake: &fake,
        dir: dir.path(),
        backend: args.state,
        redis_port,
        ticks_per_second,
    };
    let run_storms = || -> Result<bool, String> {
        if storms_on(args, args.state) {
            storm::run(&storms)
        } else {
            println!("\nalert storms: not on this backend (--storm-state)");
            Ok(true)
        }
    };
    if args.only_storms {
        let ok = run_storms()?;
        drop(redis);
        fake.stop();
        return Ok(ok);
    }
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let config_text = service_config(&listen, &fake.base_url, &state_config(args.state, redis_port));
    let config_path = dir.path().join("loadtest.yml");
    std::fs::write(&config_path, &config_text).map_err(|e| e.to_string())?;
    let log_path = dir.path().join("service.log");
    let service = spawn_service(args, &service_bin, &config_path, &log_path)?;
    let (forwarder, forwarder_port) = start_forwarder(&fake.base_url, "@all")?;

    let (runtime, client) = driver_runtime(args.concurrency, Duration::from_secs(30))?;
    let ours = Target {
        name: "service",
        pid: service.0.id(),
        url: format!("http://{listen}/alerts"),
    };
    let baseline = Target {
        name: "forwarder",
        pid: forwarder.0.id(),
        url: format!("http://127.0.0.1:{forwarder_port}/alerts"),
    };

    runtime.block_on(wait_ready(&client, &format!("http://{listen}/-/ready")))?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = procstat::status_kib(ours.pid, "VmRSS").unwrap_or(0);
    let baseline_idle_rss = procstat::status_kib(baseline.pid, "VmRSS").unwrap_or(0);

    println!("alertmanager-wecom load test — loopback, {} CPU(s)", cpus());
    println!(
        "concurrency {}, {:.1}s measured (+{:.1}s warm-up) per phase, at most {} requests per phase",
        args.concurrency, args.duration, args.warmup, args.max_requests
    );
    println!(
        "service: {} (RUST_LOG={}, log {})",
        service_bin.display(),
        args.service_log,
        log_path.display()
    );
    println!(
        "idle RSS: service {:.1} MiB (anonymous {:.1}, file-backed {:.1}: mostly the binary's code), forwarder {:.1} MiB\n",
        mib(idle_rss),
        mib(procstat::status_kib(ours.pid, "RssAnon").unwrap_or(0)),
        mib(procstat::status_kib(ours.pid, "RssFile").unwrap_or(0)),
        mib(baseline_idle_rss)
    );
    println!(
        "{:>6} {:>7} {:<10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "alerts",
        "load",
        "target",
        "hooks/s",
        "sends/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "peakRSS",
        "cpu s/1k",
        "requests"
    );

    let mut all_ok = true;
    let mut ratios = Vec::new();
    let mut peak_under_load = 0;
    // The sampled peak of each size's phases (VmHWM only knows the overall one).
    let mut peak_by_size: Vec<(usize, u64)> = Vec::new();
    for &size in &args.sizes {
        let bodies = Bodies::new(
            (0..VARIANTS).map(|v| payloads::group(v, size, v)).collect(),
            !args.repeat_groups,
        );
        // One phase against one target: `None` at --concurrency, `Some(rate)` open loop.
        let phase = |target: &Target, rate: Option<f64>| {
            let measured = runtime.block_on(measure(
                &client,
                target,
                &bodies,
                args,
                &fake,
                ticks_per_second,
                rate,
            ));
            let mode = rate.map_or_else(|| format!("c{}", args.concurrency), |rate| format!("{rate:.0}/s"));
            print_row(size, &mode, target.name, &measured);
            measured
        };
        let base = phase(&baseline, None);
        let redis_before = redis.as_ref().and_then(|_| redis_commands(redis_port));
        let our = phase(&ours, None);
        if let (Some(before), Some(after)) = (
            redis_before,
            redis.as_ref().and_then(|_| redis_commands(redis_port)),
        ) {
            // The warm-up's requests count too: they are the phase's first requests.
            let webhooks = our.result.requests() + (our.result.per_second() * args.warmup) as u64;
            println!(
                "{:>6} {:>7} redis      {:.2} round trips per webhook (claim, budget booking, settle, record; a lookup for groups of 100+ alerts)",
                "",
                "",
                (after - before) as f64 / webhooks.max(1) as f64
            );
        }
        peak_under_load = peak_under_load.max(our.peak_rss_kib);
        peak_by_size.push((size, our.peak_rss_kib));
        all_ok &= check_phase(&our);
        let throughput = our.result.per_second() / base.result.per_second();
        let closed_p99 = our.result.quantile_ms(0.99) / base.result.quantile_ms(0.99);
        println!(
            "{:>6} {:>7} ratio      throughput {throughput:.2}x, p99 {closed_p99:.2}x, CPU/webhook {:.2}x  (service/forwarder, same concurrency)",
            "",
            "",
            our.cpu_per_1000() / base.cpu_per_1000().max(1e-9)
        );
        let mut same_load_p99 = None;
        if args.rate_fraction > 0.0 {
            let rate = (our.result.per_second() * args.rate_fraction).max(1.0);
            let base = phase(&baseline, Some(rate));
            let our = phase(&ours, Some(rate));
            peak_under_load = peak_under_load.max(our.peak_rss_kib);
            if let Some((_, peak)) = peak_by_size.last_mut() {
                *peak = (*peak).max(our.peak_rss_kib);
            }
            all_ok &= check_phase(&our);
            let p99 = our.result.quantile_ms(0.99) / base.result.quantile_ms(0.99);
            println!(
                "{:>6} {:>7} ratio      p99 {p99:.2}x, p50 {:.2}x  (service/forwarder, same rate: {:.0}% of the service's throughput)",
                "",
                "",
                our.result.quantile_ms(0.5) / base.result.quantile_ms(0.5),
                args.rate_fraction * 100.0
            );
            same_load_p99 = Some(p99);
        }
        ratios.push((size, throughput, closed_p99, same_load_p99));
    }

    // Single 1,000-alert groups on the idle service, one at a time.
    let kinds = if args.single_runs == 0 { 0 } else { payloads::KINDS };
    println!("\nsingle 1000-alert group, end to end (POST /alerts → parse, route, render, fit, send → 200), idle service:");
    let mut singles = Vec::new();
    for kind in 0..kinds {
        let body = Bytes::from(payloads::group(kind, 1000, 100 + kind));
        let mut times = Vec::new();
        for run in 0..=args.single_runs {
            let started = Instant::now();
            let status = runtime.block_on(async {
                let reply = client
                    .post(&ours.url)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = reply.status();
                reply.bytes().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(status)
            })?;
            if !status.is_success() {
                return Err(format!("a single 1000-alert group was answered {status}"));
            }
            if run > 0 {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        let breakdown = breakdown(&config_text, dir.path(), &body)?;
        println!(
            "  {:<22} {:>7} KiB  median {:>6.2} ms  max {:>6.2} ms   in-process: {breakdown}",
            kind_name(kind),
            body.len() / 1024,
            times[times.len() / 2],
            times[times.len() - 1],
        );
        singles.push(times[times.len() / 2]);
    }
    let single_worst = singles.iter().copied().fold(0.0, f64::max);
    let single_ok = args.single_runs == 0 || single_worst < 20.0;

    let gettoken = fake.counters.gettoken_calls();
    let bad_tokens = fake.counters.bad_token.load(std::sync::atomic::Ordering::Relaxed);
    let peak_hwm = procstat::status_kib(ours.pid, "VmHWM").unwrap_or(0);
    let token_ok = APPS.iter().all(|corp| gettoken.get(*corp) == Some(&1))
        && gettoken.len() == APPS.len()
        && bad_tokens == 0;
    println!(
        "\ngettoken calls: {gettoken:?} (forwarder uses a fixed token); sends with an unknown token: {bad_tokens}"
    );
    println!(
        "service RSS: idle {:.1} MiB, peak sampled under load {:.1} MiB, VmHWM {:.1} MiB; now {:.1} MiB (anonymous {:.1})",
        mib(idle_rss),
        mib(peak_under_load),
        mib(peak_hwm),
        mib(procstat::status_kib(ours.pid, "VmRSS").unwrap_or(0)),
        mib(procstat::status_kib(ours.pid, "RssAnon").unwrap_or(0)),
    );

    println!(
        "in-memory record of accepted messages at its cap (100,000 entries): {:.2} MiB (anonymous RSS it added to this process)",
        mib(record_kib)
    );

    // A shared store costs round trips the forwarder does not make: its own targets.
    let (min_throughput, max_p99) = match args.state {
        StateBackend::Redis => (0.4, 3.0),
        _ => (0.6, 2.0),
    };
    println!("\ntargets:");
    for (size, throughput, closed_p99, same_load_p99) in &ratios {
        if *size == 1 {
            println!(
                "  {:<55} {throughput:.2}x  {}",
                format!("1-alert throughput ≥ {min_throughput}x forwarder"),
                verdict(*throughput >= min_throughput)
            );
            all_ok &= *throughput >= min_throughput;
        }
        match same_load_p99 {
            Some(p99) => {
                println!(
                    "  {:<55} {p99:.2}x  {}   (at c{}: {closed_p99:.2}x)",
                    format!("{size}-alert p99 ≤ {max_p99}x forwarder, same rate"),
                    verdict(*p99 <= max_p99),
                    args.concurrency
                );
                all_ok &= *p99 <= max_p99;
            }
            None => {
                println!(
                    "  {:<55} {closed_p99:.2}x  {}",
                    format!("{size}-alert p99 ≤ {max_p99}x forwarder, c{}", args.concurrency),
                    verdict(*closed_p99 <= max_p99)
                );
                all_ok &= *closed_p99 <= max_p99;
            }
        }
    }
    let checks = [
        (
            "single 1000-alert group < 20 ms (worst kind, median)".to_string(),
            if singles.is_empty() {
                "not run".to_string()
            } else {
                format!("{single_worst:.2} ms")
            },
            single_ok,
            String::new(),
        ),
        (
            "peak RSS under load ≤ 20 MiB (VmHWM)".into(),
            format!("{:.1} MiB", mib(peak_hwm)),
            peak_hwm <= 20 * 1024,
            format!(
                "   (sampled, by alerts/webhook: {} MiB)",
                peak_by_size
                    .iter()
                    .map(|(size, peak)| format!("{size}: {:.1}", mib(*peak)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "idle RSS ≤ 10 MiB".into(),
            format!("{:.1} MiB", mib(idle_rss)),
            idle_rss <= 10 * 1024,
            String::new(),
        ),
        (
            "exactly one gettoken per app".into(),
            format!("{:?}", gettoken.values().collect::<Vec<_>>()),
            token_ok,
            String::new(),
        ),
    ];
    let checks = checks.into_iter().chain(std::iter::once((
        "in-memory record at its cap ≤ 4 MB".to_string(),
        format!("{:.2} MiB", mib(record_kib)),
        record_kib * 1024 <= 4_000_000,
        String::new(),
    )));
    for (name, value, ok, detail) in checks {
        println!("  {name:<55} {value}  {}{detail}", verdict(ok));
        all_ok &= ok;
    }
    drop(service);
    drop(forwarder);
    all_ok &= run_storms()?;
    drop(redis);
    fake.stop();
    Ok(all_ok)
}

/// Starts the service (under `--service-wrapper`, if given) with `config`, its log to `log`.
fn spawn_service(args: &Args, service_bin: &Path, config: &Path, log: &Path) -> Result<ChildGuard, String> {
    let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let mut command = match &args.service_wrapper {
        Some(wrapper) => {
            let mut words = wrapper.split_whitespace();
            let mut command = Command::new(words.next().ok_or("--service-wrapper is empty")?);
            command.args(words).arg(service_bin);
            command
        }
        None => Command::new(service_bin),
    };
    let child = command
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", &args.service_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", service_bin.display()))?;
    Ok(ChildGuard(child))
}

/// Starts the baseline (this program with `__forwarder`) sending to `touser` through the
/// fake at `upstream`; returns it and the port it listens on.
fn start_forwarder(upstream: &str, touser: &str) -> Result<(ChildGuard, u16), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut forwarder = ChildGuard(
        Command::new(exe)
            .args(["__forwarder", upstream, touser])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the forwarder: {e}"))?,
    );
    let mut line = String::new();
    BufReader::new(forwarder.0.stdout.take().ok_or("forwarder stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("the forwarder said {line:?}"))?;
    Ok((forwarder, port))
}

/// What the in-memory record of accepted messages costs when full, measured in this
/// process before anything else is allocated: anonymous RSS after 100,000 records minus
/// before.
fn full_record_kib() -> u64 {
    use alertmanager_wecom::state::{Ledger, MemoryLedger};
    let pid = std::process::id();
    let before = procstat::status_kib(pid, "RssAnon").unwrap_or(0);
    let ledger = MemoryLedger::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        for _ in 0..100_000 {
            let key: [u8; 16] = fastrand::u128(..).to_le_bytes();
            ledger.accepted(&key, Duration::from_secs(600)).await;
        }
    });
    let after = procstat::status_kib(pid, "RssAnon").unwrap_or(0);
    assert_eq!(ledger.len(), 100_000);
    after.saturating_sub(before)
}

/// A `redis-server` on `port` without persistence, for `--state redis`.
fn start_redis(port: u16, dir: &Path) -> Result<ChildGuard, String> {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server (apt-get install -y redis-server): {e}"))?;
    let guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_commands(port).is_none() {
        if Instant::now() > deadline {
            return Err("redis-server did not answer within 10s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(guard)
}

/// The commands clients sent Redis (round trips, pipelining aside), over a plain
/// connection: `INFO commandstats`, counting only what the service sends itself — scripts,
/// the record's PSETEX, bookings given back (ZREM), the watcher's PING — and not the calls
/// scripts make inside Redis, which `total_commands_processed` would count too.
fn redis_commands(port: u16) -> Option<u64> {
    use std::io::{Read, Write};
    let mut connection = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    connection.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    connection.write_all(b"INFO commandstats\r\n").ok()?;
    // A bulk string: `$LEN\r\n` then LEN bytes.
    let mut reply = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let n = connection.read(&mut buffer).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&reply);
        let Some((header, body)) = text.split_once("\r\n") else {
            continue;
        };
        let length: usize = header.trim_start_matches('$').parse().ok()?;
        if body.len() >= length {
            break;
        }
    }
    let text = String::from_utf8_lossy(&reply);
    let calls = |command: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Some(
        ["evalsha", "eval", "psetex", "zrem", "get", "ping", "script|load"]
            .iter()
            .map(|c| calls(c))
            .sum(),
    )
}

/// Every webhook answered 200.
fn check_phase(m: &Measured) -> bool {
    m.result.errors.is_empty()
}

fn kind_name(kind: usize) -> &'static str {
    match kind % payloads::KINDS {
        0 => "pay (textcard)",
        1 => "db, unicode (markdown)",
        2 => "infra (markdown)",
        _ => "web (markdown)",
    }
}

/// Where the time of one group goes, measured in this process through the library with the
/// service's configuration: parse, route, render + fit (median of 5).
fn breakdown(config_text: &str, dir: &Path, body: &[u8]) -> Result<String, String> {
    let config = Config::from_yaml(config_text, "loadtest.yml", dir).map_err(|e| e.to_string())?;
    let router = Router::new(&config.routes).map_err(|e| e.to_string())?;
    let renderer = Renderer::new(&config.templates).map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let payload = WebhookPayload::parse(body).map_err(|e| e.to_string())?;
        let t1 = Instant::now();
        let plan = router.plan(&payload.alerts);
        let t2 = Instant::now();
        for n in &plan.notifications {
            renderer
                .render(n.route, &payload, &n.alerts, &n.mentions.users, &LIMITS)
                .map_err(|e| e.to_string())?;
        }
        let t3 = Instant::now();
        samples.push([t1 - t0, t2 - t1, t3 - t2]);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = samples.iter().map(|s| s[i].as_secs_f64() * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(format!(
        "parse {:.2} ms, route {:.2} ms, render+fit {:.2} ms",
        median(0),
        median(1),
        median(2)
    ))
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
