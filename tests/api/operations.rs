//! Operating the service: reloads, graceful shutdown, bounded work.

use std::time::Duration;

use alertmanager_wecom::service::ConfigSource;
use futures_util::future::join_all;

use crate::fake_wecom::Fault;
use crate::helpers::*;

/// A config file in a temp dir, with the usual routes and a templates directory.
struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    fn new(api_url: &str, extra: &str) -> ConfigDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        let config = ConfigDir { dir };
        config.write_config(api_url, extra);
        config
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("config.yml")
    }

    fn write_config(&self, api_url: &str, extra: &str) {
        let yaml = config_yaml(
            &TestConfig {
                routes: "routes:\n  - {name: all, app: ops, msgtype: text, template: oncall, to: {users: [alice]}}\n".into(),
                top_extra: format!("{extra}\n"),
                ..TestConfig::default()
            },
            api_url,
        )
        .replace("templates:\n  timezone: Asia/Shanghai", "templates:\n  timezone: Asia/Shanghai\n  dir: templates");
        std::fs::write(self.path(), yaml).unwrap();
    }

    fn write_template(&self, text: &str) {
        std::fs::write(self.dir.path().join("templates/oncall.hbs"), text).unwrap();
    }
}

async fn reload(app: &TestApp) -> (u16, serde_json::Value) {
    let response = app
        .http
        .post(format!("{}/-/reload", app.address))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn content(app: &TestApp, index: usize) -> String {
    app.wecom.delivered()[index].body["text"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_reload_swaps_in_new_templates_and_a_broken_one_is_rejected() {
    let wecom = start_fake_wecom().await;
    let config = ConfigDir::new(&wecom.base_url(), "server: {reload_interval: 0s}");
    config.write_template("v1 {{firingCount}}");
    let app = spawn_from(ConfigSource::File(config.path()), wecom).await;
    app.post(CRASHLOOP).await;
    assert_eq!(content(&app, 0), "v1 1");

    config.write_template("v2 {{firingCount}}");
    let (status, body) = reload(&app).await;
    assert_eq!(status, 200, "{body}");
    app.post(RESOLVED).await;
    assert_eq!(content(&app, 1), "v2 0");

    // A template that only breaks at render time is caught by the sample render.
    config.write_template("v3 {{annotatoins.summary}}");
    let (status, body) = reload(&app).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("oncall"), "{body}");
    app.post(UNICODE_MARKUP).await;
    assert_eq!(
        content(&app, 2),
        "v2 1",
        "the running configuration keeps serving"
    );

    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "alertmanager_wecom_config_last_reload_successful"),
        0.0
    );
    assert!(
        metric(
            &metrics,
            "alertmanager_wecom_config_last_reload_success_timestamp_seconds"
        ) > 1.7e9
    );
}

#[tokio::test]
async fn a_changed_config_file_is_picked_up_without_a_signal_even_through_a_symlink_swap() {
    let wecom = start_fake_wecom().await;
    // Like a Kubernetes ConfigMap: config.yml -> ..data/config.yml, ..data -> ..v1.
    let config = ConfigDir::new(&wecom.base_url(), "server: {reload_interval: 100ms}");
    config.write_template("v1");
    let root = config.dir.path();
    std::fs::create_dir(root.join("..v1")).unwrap();
    std::fs::rename(config.path(), root.join("..v1/config.yml")).unwrap();
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    let link = root.join("live.yml");
    std::os::unix::fs::symlink("..data/config.yml", &link).unwrap();
    let app = spawn_from(ConfigSource::File(link.clone()), wecom).await;

    std::fs::create_dir(root.join("..v2")).unwrap();
    let text = std::fs::read_to_string(root.join("..v1/config.yml")).unwrap();
    std::fs::write(
        root.join("..v2/config.yml"),
        text.replace("msgtype: text", "msgtype: markdown"),
    )
    .unwrap();
    std::fs::write(root.join("templates/oncall.hbs"), "v2").unwrap();
    std::os::unix::fs::symlink("..v2", root.join("..data.tmp")).unwrap();
    std::fs::rename(root.join("..data.tmp"), root.join("..data")).unwrap();

    let mut msgtype = String::new();
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.post(&CRASHLOOP.replace("api-7d9f", &format!("api-{i}")))
            .await;
        msgtype = app.wecom.delivered().last().unwrap().msgtype.clone();
        if msgtype == "markdown" {
            break;
        }
    }
    let logs = captured_logs();
    let reloads: Vec<&str> = logs.lines().filter(|l| l.contains("reload")).collect();
    assert_eq!(msgtype, "markdown", "the swapped config was loaded: {reloads:?}");
    assert!(captured_logs().contains("configuration reloaded"));
}

#[tokio::test]
async fn shutdown_turns_unready_and_lets_a_delivery_in_flight_finish() {
    let app = spawn_app().await;
    app.wecom
        .inject_send_faults(vec![Fault::Delay(Duration::from_millis(800))]);
    let in_flight = {
        let http = app.http.clone();
        let url = format!("{}/alerts", app.address);
        tokio::spawn(async move {
            http.post(url)
                .header("Content-Type", "application/json")
                .body(CRASHLOOP)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = {
        let shutdown = app.shutdown.clone();
        tokio::spawn(async move { shutdown.stop().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the delivery in flight finished"
    );
    assert_eq!(app.wecom.delivered().len(), 1);
    stopping.await.unwrap();
    assert!(
        app.http
            .get(format!("{}/-/ready", app.address))
            .send()
            .await
            .is_err(),
        "new connections are refused"
    );
}

#[tokio::test]
async fn beyond_the_concurrency_and_queue_limits_webhooks_get_503_with_retry_after() {
    let app = spawn(TestConfig {
        top_extra: "server: {max_concurrent_requests: 1, max_queued_requests: 1}\n".into(),
        routes: "routes:\n  - {name: all, app: ops, msgtype: text, to: {parties: [2]}}\n".into(),
        ..TestConfig::default()
    })
    .await;
    app.wecom
        .inject_send_faults(vec![Fault::Delay(Duration::from_millis(500)); 3]);
    let posts = (0..4).map(|i| {
        let app = &app;
        async move {
            let response = app
                .post_alerts(&CRASHLOOP.replace("api-7d9f", &format!("api-{i}")))
                .await;
            (
                response.status().as_u16(),
                response.headers().get("retry-after").cloned(),
            )
        }
    });
    let results = join_all(posts).await;
    let refused: Vec<_> = results.iter().filter(|(status, _)| *status == 503).collect();
    assert_eq!(refused.len(), 2, "{results:?}");
    assert!(refused.iter().all(|(_, retry_after)| retry_after.is_some()));
    assert_eq!(results.iter().filter(|(status, _)| *status == 200).count(), 2);
}
