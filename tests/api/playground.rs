//! The template playground (`server.playground`): off unless turned on, behind
//! `server.auth`, rendering exactly what `POST /-/render` does, edited templates, their
//! errors located, bounded inputs and no secrets in what it answers.

use serde_json::{json, Value};

use crate::helpers::*;

const TOKEN: &str = "TESTSECRET-playground";
const ROBOT_KEY: &str = "TESTSECRET-robot-key-93f1a7";

fn playground_on(auth: bool) -> TestConfig {
    let auth = if auth {
        format!("  auth: {{bearer_token: {TOKEN}}}\n")
    } else {
        String::new()
    };
    TestConfig {
        routes: format!(
            "robots: [{{name: chat, key: {ROBOT_KEY}}}]\n{}",
            DEFAULT_ROUTES.replacen(
                "routes:\n",
                "routes:\n  - {name: robot, matchers: ['team=\"chat\"'], robot: chat, msgtype: markdown}\n",
                1
            )
        ),
        top_extra: format!("server:\n  playground: true\n{auth}"),
        ..TestConfig::default()
    }
}

/// Renders `sample` through the route `default` with an edited template.
async fn render_edited(app: &TestApp, sample: &str, msgtype: &str, source: &str) -> (u16, Value) {
    render(
        app,
        json!({"sample": sample, "route": "default", "template": {"msgtype": msgtype, "source": source}}),
    )
    .await
}

async fn render(app: &TestApp, request: Value) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}/playground/api/render", app.address))
        .bearer_auth(TOKEN)
        .json(&request)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn the_playground_is_off_by_default_and_says_how_to_turn_it_on() {
    let app = spawn_app().await;
    for path in [
        "/playground",
        "/playground/app.js",
        "/playground/style.css",
        "/playground/api/context",
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains("playground: true"), "{path}: {body}");
    }
    let response = app
        .http
        .post(format!("{}/playground/api/render", app.address))
        .json(&json!({"sample": "firing-crashloop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn the_playground_is_behind_server_auth_and_its_page_allows_only_its_own_files() {
    let app = spawn(playground_on(true)).await;
    for path in ["/playground", "/playground/app.js", "/playground/api/context"] {
        let refused = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 401, "{path}");
    }
    let refused = app
        .http
        .post(format!("{}/playground/api/render", app.address))
        .bearer_auth("TESTSECRET-wrong")
        .json(&json!({"sample": "firing-crashloop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    let page = app
        .http
        .get(format!("{}/playground", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/playground/app.js""#), "{html}");
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline script or style"
    );
    for (path, kind) in [("app.js", "javascript"), ("style.css", "css")] {
        let file = app
            .http
            .get(format!("{}/playground/{path}", app.address))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(file.status().as_u16(), 200);
        assert!(file.headers()["content-type"].to_str().unwrap().contains(kind));
    }
}

#[tokio::test]
async fn the_context_lists_samples_routes_with_their_template_and_the_limits() {
    let app = spawn(playground_on(true)).await;
    let context: Value = app
        .http
        .get(format!("{}/playground/api/context", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let samples: Vec<&str> = context["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        samples.contains(&"firing-crashloop") && samples.contains(&"big-group"),
        "{samples:?}"
    );
    let db = &context["routes"][1];
    assert_eq!(db["name"], "db");
    assert_eq!(db["msgtype"], "textcard");
    assert_eq!(db["template"], "textcard");
    assert!(db["source"]
        .as_str()
        .unwrap()
        .contains("<div class=\"highlight\">"));
    assert_eq!(db["limits"]["textcard"][1], json!(["description", 512, "B"]));
    let robot = &context["routes"][0];
    assert_eq!(robot["target_kind"], "robot");
    assert_eq!(robot["msgtypes"], json!(["text", "markdown", "markdown_v2"]));
    assert_eq!(context["max_template_bytes"], 65536);
    assert!(
        context["builtin"]["markdown_v2"].is_string(),
        "{}",
        context["builtin"]
    );
}

#[tokio::test]
async fn a_sample_through_a_route_renders_what_the_render_endpoint_does() {
    let app = spawn(playground_on(true)).await;
    // Samples take the labels a route's matchers ask for, so each reaches its route; the
    // crashloop's team=pay sends it to pay before the catch-all, the bare alert does not.
    for (route, sample) in [
        ("db", "firing-crashloop"),
        ("pay", "firing-crashloop"),
        ("default", "bare"),
        ("robot", "big-group"),
    ] {
        let (status, answer) = render(&app, json!({"sample": sample, "route": route})).await;
        assert_eq!(status, 200, "{answer}");
        let previews = answer["previews"].as_array().unwrap();
        assert!(!previews.is_empty(), "{route}: {answer}");
        // The same payload to /-/render gives the same messages.
        let expected: Value = app
            .http
            .post(format!("{}/-/render?route={route}", app.address))
            .bearer_auth(TOKEN)
            .body(answer["payload"].to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let expected = expected.as_array().unwrap();
        assert_eq!(previews.len(), expected.len(), "{route}");
        for (got, want) in previews.iter().zip(expected) {
            for key in [
                "route",
                "msgtype",
                "part",
                "parts",
                "cut",
                "sizes",
                "requests",
                "shown_alerts",
                "total_alerts",
            ] {
                assert_eq!(got[key], want[key], "{route}: {key}");
            }
        }
    }
    let (_, answer) = render(&app, json!({"sample": "firing-crashloop", "route": "db"})).await;
    let fields = &answer["previews"][0]["fields"];
    let description = fields
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "description")
        .unwrap();
    assert_eq!(description["limit"], 512);
    assert_eq!(description["unit"], "B");
    assert_eq!(
        description["size"], answer["previews"][0]["sizes"]["description"],
        "{fields}"
    );
    assert_eq!(app.wecom.send_calls(), 0, "nothing sent");
}

#[tokio::test]
async fn a_pasted_payload_is_routed_as_it_is() {
    let app = spawn(playground_on(false)).await;
    let payload = crashloop_with(r#""alertname":"DiskFull","team":"pay""#);
    let (status, answer) = render(&app, json!({"payload": payload, "route": "pay"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["previews"][0]["msgtype"], "markdown");
    assert!(answer["previews"][0]["requests"][0]["markdown"]["content"]
        .as_str()
        .unwrap()
        .contains("DiskFull"));
    let (status, answer) = render(&app, json!({"payload": "{not json", "route": "pay"})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["status"], "error");
}

#[tokio::test]
async fn an_edited_template_renders_with_the_msgtype_it_is_written_for() {
    let app = spawn(playground_on(true)).await;
    let source = "{{#each alerts}}{{labels.alertname}} <b>{{status}}</b>\n{{/each}}";
    let (status, answer) = render_edited(&app, "bare", "text", source).await;
    assert_eq!(status, 200, "{answer}");
    let preview = &answer["previews"][0];
    assert_eq!(preview["edited"], true);
    let content = preview["requests"][0]["text"]["content"].as_str().unwrap();
    assert!(content.starts_with("Bare <b>firing</b>"), "{content}");
    assert_eq!(preview["fields"][0]["size"], content.len());
    assert_eq!(preview["fields"][0]["limit"], 2048);

    // The same route as markdown: markdown's escaping applies.
    let (status, answer) = render_edited(&app, "bare", "markdown", source).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["previews"][0]["requests"][0]["markdown"]["content"]
        .as_str()
        .unwrap();
    assert!(content.starts_with("Bare <b>firing</b>"), "{content}");
    assert_eq!(answer["previews"][0]["msgtype"], "markdown");

    // A msgtype the target does not take is refused.
    let (status, answer) = render(
        &app,
        json!({"sample": "bare", "route": "robot", "template": {"msgtype": "textcard", "source": "x"}}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("text, markdown, markdown_v2"),
        "{answer}"
    );
}

#[tokio::test]
async fn template_errors_come_back_with_their_line_and_column() {
    let app = spawn(playground_on(true)).await;
    let broken = "{{#each alerts}}\n{{labels.alertname}}\n  {{/if}}\n";
    let (status, answer) = render(
        &app,
        json!({"sample": "firing-crashloop", "route": "db", "template": {"msgtype": "textcard", "source": broken}}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.starts_with("edited template:3:"), "{error}");
    assert!(
        error.contains(" 3 |   {{/if}}\n   |   ^"),
        "the line is quoted: {error}"
    );
    assert_eq!(answer["error_at"]["edited"], true);
    assert_eq!(answer["error_at"]["line"], 3);
    assert!(answer["error_at"]["column"].as_u64().unwrap() >= 1);

    // A field that does not exist fails while rendering (templates are strict).
    let missing = "title\n{{#each alerts}}\n{{labels.nope}}{{/each}}";
    let (status, answer) = render(
        &app,
        json!({"sample": "firing-crashloop", "route": "db", "template": {"msgtype": "textcard", "source": missing}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let preview = &answer["previews"][0];
    assert!(
        preview["error"].as_str().unwrap().contains("edited template:3:"),
        "{preview}"
    );
    assert_eq!(preview["error_at"]["line"], 3);
}

#[tokio::test]
async fn oversize_templates_and_payloads_are_refused_with_the_limit() {
    let app = spawn(playground_on(true)).await;
    let huge = "x".repeat(64 * 1024 + 1);
    let (status, answer) = render_edited(&app, "bare", "text", &huge).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("at most 65536 bytes"),
        "{answer}"
    );

    let payload = payload_with_alerts(10, r#""alertname":"Big""#, &"y".repeat(2 << 20));
    let (status, answer) = render(&app, json!({"payload": payload, "route": "default"})).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("server.max_body_bytes"),
        "{answer}"
    );

    let (status, answer) = render(&app, json!({"sample": "nope"})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("no sample named"),
        "{answer}"
    );
}

#[tokio::test]
async fn nothing_the_playground_answers_holds_a_secret() {
    let app = spawn(playground_on(true)).await;
    let mut answers = Vec::new();
    let context = app
        .http
        .get(format!("{}/playground/api/context", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    answers.push(context);
    for request in [
        json!({"sample": "firing-crashloop", "route": "robot"}),
        json!({"sample": "firing-crashloop"}),
        json!({"sample": "bare", "route": "robot", "template": {"msgtype": "markdown_v2", "source": "# {{status}}"}}),
    ] {
        let (status, answer) = render(&app, request).await;
        assert_eq!(status, 200, "{answer}");
        answers.push(answer.to_string());
    }
    let robot = serde_json::from_str::<Value>(&answers[1]).unwrap();
    assert_eq!(robot["previews"][0]["target"], "chat");
    assert!(robot["previews"][0]["requests"][0]["markdown"].is_object());
    for answer in answers {
        assert!(!answer.contains(ROBOT_KEY), "robot key in {answer}");
        assert!(!answer.contains(SECRET_MARK), "a secret in {answer}");
        assert!(!answer.contains("webhook/send"), "{answer}");
    }
}

#[tokio::test]
async fn a_template_that_includes_itself_is_an_error_not_a_crash() {
    let app = spawn(playground_on(true)).await;
    for source in [
        "{{#*inline \"again\"}}x{{> again}}{{/inline}}{{> again}}",
        "{{> \"<edited template>\"}}",
        "{{#if 1}}{{> (lookup . \"x\")}}{{/if}}",
    ] {
        let (status, answer) = render_edited(&app, "bare", "text", source).await;
        assert_eq!(status, 422, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with("edited template:1:"),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn deeply_nested_blocks_are_an_error_not_a_crash() {
    let app = spawn(playground_on(true)).await;
    let depth = 64 * 1024 / 16 - 1;
    let source = format!("{}x{}", "{{#if 1}}".repeat(depth), "{{/if}}".repeat(depth));
    let source = &source[..source.len().min(64 * 1024)];
    let (status, answer) = render_edited(&app, "bare", "text", source).await;
    assert!(status == 200 || status == 422, "{answer}");
}

/// A loop inside loops over the alerts writes alerts⁶ lines: over all 60 alerts of the
/// sample that is 4.7 × 10¹⁰ lines. Fitting grows the alerts a render sees from one, so it
/// never renders that (and a render that would pass 16 MiB is stopped: render/bounded.rs);
/// the answer comes back with what fits, cut and said so.
#[tokio::test]
async fn a_template_that_multiplies_its_output_is_fitted_not_run_away() {
    let app = spawn(playground_on(true)).await;
    let source = "{{#each alerts}}{{#each @root.alerts}}{{#each @root.alerts}}{{#each @root.alerts}}{{#each @root.alerts}}{{#each @root.alerts}}0123456789012345678901234567890123456789012345678901234567890123\n{{/each}}{{/each}}{{/each}}{{/each}}{{/each}}{{/each}}";
    for msgtype in ["text", "textcard"] {
        let (status, answer) = render_edited(&app, "big-group", msgtype, source).await;
        assert_eq!(status, 200, "{msgtype}: {answer}");
        let preview = &answer["previews"][0];
        assert_eq!(preview["cut"], true, "{msgtype}: {answer}");
        assert!(
            preview["shown_alerts"].as_u64().unwrap() < 60,
            "{msgtype}: {answer}"
        );
    }
}
