//! The directory an app's rate budget counts parties and tags with: their members read
//! from WeCom in the background (sub-departments walked, tags' parties expanded), kept for
//! the refresh interval, and left unknown — counted as one member — when WeCom says no.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alertmanager_wecom::config::{AppConfig, Config};
use alertmanager_wecom::deliver::clients::Clients;
use alertmanager_wecom::deliver::directory::{Directory, Group};
use alertmanager_wecom::metrics::Metrics;

use crate::fake_wecom::{Endpoint, FakeWeCom, Fault};
use crate::helpers::*;

/// How long a test waits for a background read.
const PATIENCE: Duration = Duration::from_secs(5);
const DIRECTORY_ENDPOINTS: [Endpoint; 3] = [
    Endpoint::UserSimpleList,
    Endpoint::DepartmentSimpleList,
    Endpoint::TagGet,
];

/// A fake WeCom with the ops app and a directory: party 10 (alice) above 11 (bob, Carol)
/// above 12 (dave); tag 5 with Eve, alice and party 11.
async fn wecom() -> FakeWeCom {
    let wecom = start_fake_wecom().await;
    wecom.add_users(&["Carol", "dave", "Eve", "frank"]);
    wecom.add_party("10", &["alice"]);
    wecom.add_party("11", &["bob", "Carol"]);
    wecom.add_party("12", &["dave"]);
    wecom.add_child_party("10", "11");
    wecom.add_child_party("11", "12");
    wecom.add_tag("5", &["Eve", "alice"], &["11"]);
    wecom
}

/// The ops app of the fake, named `name` (so its log lines can be told from other tests').
fn app(name: &str, wecom: &FakeWeCom) -> AppConfig {
    let yaml = format!(
        "wecom: {{api_url: '{}'}}\napps: [{{name: {name}, corp_id: {CORP_ID}, agent_id: {OPS_AGENT}, secret: {OPS_SECRET}}}]\nroutes: [{{name: all, app: {name}, msgtype: text, to: {{users: [alice]}}}}]\n",
        wecom.base_url()
    );
    let config = Config::from_yaml(&yaml, "test.yml", Path::new("")).expect("valid test config");
    config.apps[0].clone()
}

fn directory(app: &AppConfig, refresh: Duration) -> Directory {
    capture_logs();
    let clients = Clients::new(Metrics::new());
    let secret = app.secret.as_ref().expect("the test app has a secret");
    let tokens = clients.token_cache(app, secret);
    Directory::new(app, clients.api.clone(), Some(tokens), refresh).with_call_timeout(Duration::from_secs(1))
}

fn party(id: &str) -> Group {
    Group::Party(id.into())
}

fn tag(id: &str) -> Group {
    Group::Tag(id.into())
}

fn list(members: &Option<Arc<[String]>>) -> Option<Vec<&str>> {
    members
        .as_ref()
        .map(|members| members.iter().map(String::as_str).collect())
}

/// Looks the group up until it answers `want`, for at most [`PATIENCE`].
async fn wait_for(directory: &Directory, group: &Group, want: &[&str]) {
    let started = Instant::now();
    loop {
        let members = directory.members(group);
        if list(&members).as_deref() == Some(want) {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{group:?}: still {:?}, not {want:?}",
            list(&members)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Looks the group up for `span`, every 10 ms; answers every answer.
async fn keep_asking(directory: &Directory, group: &Group, span: Duration) -> Vec<Option<Vec<String>>> {
    let started = Instant::now();
    let mut answers = Vec::new();
    while started.elapsed() < span {
        let members = directory.members(group);
        answers.push(list(&members).map(|m| m.iter().map(|s| s.to_string()).collect()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    answers
}

fn calls(wecom: &FakeWeCom) -> [usize; 3] {
    DIRECTORY_ENDPOINTS.map(|endpoint| wecom.directory_calls(endpoint))
}

/// Log lines of this test's app that contain `text`.
fn log_lines(app: &str, text: &str) -> usize {
    captured_logs()
        .lines()
        .filter(|line| line.contains(&format!("app {app}:")) && line.contains(text))
        .count()
}

#[tokio::test]
async fn a_party_counts_its_own_members_and_those_of_every_party_below_it() {
    let wecom = wecom().await;
    let directory = directory(&app("dir-party", &wecom), Duration::from_secs(600));
    wait_for(&directory, &party("10"), &["alice", "bob", "carol", "dave"]).await;
    wait_for(&directory, &party("11"), &["bob", "carol", "dave"]).await;
    wait_for(&directory, &party("12"), &["dave"]).await;
    // One walk of the tree and one member list per department, per party.
    assert_eq!(calls(&wecom), [3 + 2 + 1, 3, 0]);
}

#[tokio::test]
async fn a_tag_counts_its_users_and_the_members_of_its_parties_once_each() {
    let wecom = wecom().await;
    let directory = directory(&app("dir-tag", &wecom), Duration::from_secs(600));
    wait_for(&directory, &tag("5"), &["alice", "bob", "carol", "dave", "eve"]).await;
    assert_eq!(calls(&wecom), [2, 1, 1]);
}

#[tokio::test]
async fn the_first_lookup_answers_none_and_one_read_runs_in_the_background() {
    let wecom = wecom().await;
    let directory = directory(&app("dir-first", &wecom), Duration::from_secs(600));
    wecom.inject_directory_faults(Endpoint::TagGet, vec![Fault::Delay(Duration::from_millis(300))]);
    let started = Instant::now();
    assert_eq!(directory.members(&tag("5")), None, "nothing read yet");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "the lookup did not wait on WeCom"
    );
    let answers = keep_asking(&directory, &tag("5"), Duration::from_millis(200)).await;
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    wait_for(&directory, &tag("5"), &["alice", "bob", "carol", "dave", "eve"]).await;
    assert_eq!(
        wecom.directory_calls(Endpoint::TagGet),
        1,
        "lookups in flight share the read"
    );
    keep_asking(&directory, &tag("5"), Duration::from_millis(200)).await;
    assert_eq!(calls(&wecom), [2, 1, 1], "fresh: not read again");
}

#[tokio::test]
async fn members_are_read_again_after_the_refresh_interval_and_stale_ones_used_meanwhile() {
    let wecom = wecom().await;
    let refresh = Duration::from_millis(400);
    let directory = directory(&app("dir-refresh", &wecom), refresh);
    wait_for(&directory, &party("12"), &["dave"]).await;
    let read_at = Instant::now();
    wecom.add_party("12", &["frank"]);
    let answers = keep_asking(&directory, &party("12"), refresh / 2).await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_deref() == Some(&["dave".to_string()][..])),
        "{answers:?}"
    );
    assert_eq!(calls(&wecom), [1, 1, 0], "not read again within the interval");
    tokio::time::sleep(refresh.saturating_sub(read_at.elapsed())).await;
    // Stale: this lookup starts a read and still answers what was read before.
    assert_eq!(list(&directory.members(&party("12"))), Some(vec!["dave"]));
    wait_for(&directory, &party("12"), &["dave", "frank"]).await;
    assert_eq!(calls(&wecom), [2, 2, 0]);
}

#[tokio::test]
async fn an_app_that_may_not_read_the_directory_counts_groups_as_one_member_and_says_so_once() {
    let wecom = wecom().await;
    wecom.deny_directory(OPS_AGENT);
    let refresh = Duration::from_millis(600);
    let directory = directory(&app("dir-denied", &wecom), refresh);
    let answers = keep_asking(&directory, &party("10"), refresh / 2).await;
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    assert_eq!(calls(&wecom), [0, 1, 0], "the denial is kept, not asked again");
    // Read again a refresh interval later, still denied: still one warning.
    keep_asking(&directory, &party("10"), refresh).await;
    assert_eq!(calls(&wecom), [0, 2, 0]);
    assert_eq!(log_lines("dir-denied", "may not read party 10"), 1);
    assert!(captured_logs().contains("counted as one member"));
    // Allowed again: read at the next refresh, and that is logged.
    wecom.allow_directory(OPS_AGENT);
    wait_for(&directory, &party("10"), &["alice", "bob", "carol", "dave"]).await;
    assert_eq!(
        log_lines("dir-denied", "read party 10 from WeCom's directory again"),
        1
    );
}

#[tokio::test]
async fn a_party_or_tag_that_does_not_exist_stays_unknown() {
    let wecom = wecom().await;
    let directory = directory(&app("dir-missing", &wecom), Duration::from_secs(600));
    for group in [party("404"), tag("404")] {
        let answers = keep_asking(&directory, &group, Duration::from_millis(300)).await;
        assert!(answers.iter().all(Option::is_none), "{group:?}: {answers:?}");
    }
    assert_eq!(calls(&wecom), [0, 1, 1], "asked once each");
    // An id that cannot name one is not asked for at all.
    keep_asking(&directory, &party("{{labels.team}}"), Duration::from_millis(100)).await;
    assert_eq!(calls(&wecom), [0, 1, 1]);
    assert_eq!(log_lines("dir-missing", "does not exist"), 3);
    // A tag whose party has no member the app can see counts its users.
    wecom.add_parties(&["13"]);
    wecom.add_tag("6", &["frank"], &["13"]);
    wait_for(&directory, &tag("6"), &["frank"]).await;
}

#[tokio::test]
async fn a_token_rejected_during_a_read_is_replaced_and_the_read_goes_on() {
    let wecom = wecom().await;
    let refresh = Duration::from_millis(300);
    let directory = directory(&app("dir-token", &wecom), refresh);
    // Mid-read: the second department's member list is answered "token expired".
    wecom.inject_directory_faults(
        Endpoint::UserSimpleList,
        vec![Fault::Delay(Duration::ZERO), Fault::Errcode(42001)],
    );
    let started = Instant::now();
    wait_for(&directory, &party("10"), &["alice", "bob", "carol", "dave"]).await;
    assert!(
        started.elapsed() < refresh,
        "recovered within the read, no backoff"
    );
    assert_eq!(wecom.gettoken_calls(), 2);
    // Between reads: WeCom revokes the token; the next read fetches a new one.
    wecom.invalidate_tokens();
    wecom.add_party("12", &["frank"]);
    tokio::time::sleep(refresh).await;
    wait_for(
        &directory,
        &party("10"),
        &["alice", "bob", "carol", "dave", "frank"],
    )
    .await;
    assert_eq!(wecom.gettoken_calls(), 3);
    assert!(
        !captured_logs().contains(crate::fake_wecom::TOKEN_PREFIX),
        "no token in the logs"
    );
}

#[tokio::test]
async fn a_failed_read_keeps_the_last_members_and_is_tried_again_after_the_backoff() {
    let wecom = wecom().await;
    let refresh = Duration::from_millis(500);
    let directory = directory(&app("dir-flaky", &wecom), refresh);
    wait_for(&directory, &party("12"), &["dave"]).await;
    wecom.inject_directory_faults(
        Endpoint::DepartmentSimpleList,
        vec![Fault::HttpStatus(502), Fault::Errcode(-1)],
    );
    wecom.add_party("12", &["frank"]);
    tokio::time::sleep(refresh).await;
    let answers = keep_asking(&directory, &party("12"), refresh * 3 / 2).await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_deref() == Some(&["dave".to_string()][..])),
        "the last members while reads fail: {answers:?}"
    );
    assert_eq!(
        wecom.directory_calls(Endpoint::DepartmentSimpleList),
        3,
        "one read, then one per backoff"
    );
    wait_for(&directory, &party("12"), &["dave", "frank"]).await;
    // Two kinds of failure in a row, but the same kind: logged once.
    assert_eq!(log_lines("dir-flaky", "cannot read party 12"), 1);
}

#[tokio::test]
async fn a_dry_run_app_never_reads_the_directory() {
    let wecom = wecom().await;
    let app = app("dir-dry", &wecom);
    let directory = Directory::new(
        &app,
        Clients::new(Metrics::new()).api,
        None,
        Duration::from_millis(10),
    );
    let answers = keep_asking(&directory, &party("10"), Duration::from_millis(200)).await;
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    assert_eq!(calls(&wecom), [0, 0, 0]);
    assert_eq!(wecom.gettoken_calls(), 0);
}
