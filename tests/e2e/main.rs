//! End-to-end tests: a real Prometheus Alertmanager notifies our real binary, which
//! delivers to the in-process fake WeCom (`tests/api/fake_wecom.rs`).
//!
//! ```text
//! test ──POST /api/v2/alerts──▶ prometheus-alertmanager ──webhook──▶ alertmanager-wecom ──▶ fake WeCom
//!                               (child process)                      (child process)        (in this process)
//! ```
//!
//! Every test is `#[ignore]`d so that a plain `cargo test` passes without Alertmanager.
//! Run them with
//!
//! ```sh
//! apt-get install -y prometheus-alertmanager    # Debian/Ubuntu; 0.25 is what CI uses
//! apt-get install -y redis-server               # for the HA tests (ha.rs); 7.0 here
//! cargo test --test e2e -- --ignored
//! ```
//!
//! The Alertmanager binary is looked up as `$E2E_ALERTMANAGER`, else `prometheus-alertmanager`
//! (Debian's name) or `alertmanager` (upstream's) on `PATH`; when there is none, the tests
//! fail with the install instruction. When a test fails, the stderr of both processes and
//! the fake's request log are printed with the failure (`E2E_LOGS=1` prints them for
//! passing tests too; add `--nocapture` to see them).
//!
//! The playground's browser test (playground.rs) needs no Alertmanager but headless
//! Chromium (`apt-get install -y chromium`; `$CHROMIUM` overrides `/usr/bin/chromium`):
//! `cargo test --test e2e playground -- --ignored`, about 5 s.
//!
//! Each test takes 1–6 s (Alertmanager's group_wait is 1 s, its group_interval 2 s), the
//! HA tests 13 s and 20 s (a settled cluster, slow sends past the peer timeout, then
//! waiting to see that nothing is sent twice), the storm tests (storms.rs) about 70 s each
//! (hundreds of groups posted over a minute, then their digests); the suite about 100 s
//! with cargo's default two test threads here. Redis is `$REDIS_SERVER`, else
//! `redis-server` on `PATH`.

#[path = "../api/fake_wecom.rs"]
mod fake_wecom;
#[path = "../support/redis.rs"]
mod redis_server;

mod auth;
mod bounded;
mod delivery;
mod failures;
mod ha;
mod harness;
mod interactive;
mod playground;
mod storms;
