//! Property tests: the fuzz targets' invariants (fuzz/src/invariants.rs, included here) on
//! a modest number of generated inputs each, so that every `cargo test` checks them and
//! a regression shows up without a fuzzing run. The fuzz targets explore further; these
//! keep what they established.

use alertmanager_wecom::interact::event::CardEvent;
use alertmanager_wecom::model::matcher::MatchOp;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

#[path = "../../fuzz/src/invariants.rs"]
mod invariants;

use invariants::*;

/// Enough cases to catch a regression, few enough for the whole file to take seconds in a
/// debug build; `PROPTEST_CASES` raises it for a longer look.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        // A failure prints its shrunk input; no regression file is written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Tricky fragments and arbitrary text, strung together.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => select(TRICKY).prop_map(str::to_string),
        2 => "\\PC{0,8}",
        1 => vec(any::<char>(), 0..6).prop_map(String::from_iter),
    ];
    vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

/// Mostly http(s) links, some not links at all, some longer than WeCom takes.
fn link() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        text(),
        text().prop_map(|t| format!("https://prometheus.example/graph?g0.expr={t}")),
        text().prop_map(|t| format!("http://{}{t}", "x".repeat(1100))),
        text().prop_map(|t| format!("http://prometheus.example/{t}")),
    ]
}

fn alert() -> impl Strategy<Value = AlertSpec> {
    (
        any::<bool>(),
        option::of(text()),
        option::of(text()),
        vec((text(), text()), 0..4),
        option::of(text()),
        option::of(text()),
        option::of(link()),
        link(),
    )
        .prop_map(
            |(firing, alertname, severity, labels, summary, description, runbook_url, generator_url)| {
                AlertSpec {
                    firing,
                    alertname,
                    severity,
                    labels,
                    summary,
                    description,
                    runbook_url,
                    generator_url,
                }
            },
        )
}

fn notification(alerts: impl Strategy<Value = Vec<AlertSpec>>) -> impl Strategy<Value = NotificationSpec> {
    (alerts, link(), text(), vec(text(), 0..3)).prop_map(|(alerts, external_url, receiver, mentions)| {
        NotificationSpec {
            alerts,
            external_url,
            receiver,
            mentions,
        }
    })
}

/// One alert repeated `copies` times, each copy with a label of its own: a group too big
/// for one message.
fn big_group() -> impl Strategy<Value = Vec<AlertSpec>> {
    (alert(), 20..150usize, "\\PC{100,300}").prop_map(|(alert, copies, filler)| {
        (0..copies)
            .map(|i| {
                let mut copy = alert.clone();
                copy.labels.push(("copy".into(), i.to_string()));
                copy.description = Some(filler.clone());
                copy
            })
            .collect()
    })
}

fn recipient_labels() -> impl Strategy<Value = RecipientLabels> {
    (text(), text(), text(), text()).prop_map(|(owner, backup, party, tag)| RecipientLabels {
        owner,
        backup,
        party,
        tag,
    })
}

/// Matcher syntax, stray and in place: more shapes reach the parser's corners than random
/// text does.
const MATCHER_PIECES: &[&str] = &[
    "{", "}", ",", "=", "!=", "=~", "!~", "!", "~", "\"", "\\", "\\\"", "\\n", "\\t", " ", "\n", "a", "team",
    "_x9", "9", "db", "数据", "🙂", ".*", "(", ")", "|", "[", "]", "+", "'", "`", "\t",
];

fn matcher_text() -> impl Strategy<Value = String> {
    vec(select(MATCHER_PIECES), 0..16).prop_map(|pieces| pieces.concat())
}

fn match_op() -> impl Strategy<Value = MatchOp> {
    select(
        &[
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::RegexMatch,
            MatchOp::RegexNoMatch,
        ][..],
    )
}

/// YAML punctuation, scalars that stretch types, and keys of the configuration: what a
/// mutation of a valid file inserts.
const YAML_PIECES: &[&str] = &[
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "  ",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    ",",
    "#",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "!!binary ",
    "~",
    "null",
    "-1",
    "0",
    "1e400",
    "18446744073709551616",
    "0x10",
    "${X}",
    "${X:-y}",
    "\t",
    "数据",
    "secret_file: secret",
    "key_file: empty",
    "routes: []",
    "matchers: ['a=~\"(\"']",
    "msgtype: text",
    "to: {users: ['{{labels.x']}",
    "timezone: Mars/Base",
    "0s",
    "25h",
    "redis://",
    "backend: redis",
];

const CONFIG_SEEDS: &[&str] = &[
    include_str!("../../fuzz/seeds/config/every-section.yml"),
    include_str!("../../examples/config.yml"),
];

/// A valid configuration with pieces inserted and spans cut out, at character positions.
fn mutated_config() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        0..24usize,
        option::of(select(YAML_PIECES)),
    );
    (select(CONFIG_SEEDS), vec(edit, 1..6)).prop_map(|(seed, edits)| {
        let mut chars: Vec<char> = seed.chars().collect();
        for (at, cut, insert) in edits {
            let at = at.index(chars.len() + 1);
            let end = (at + cut).min(chars.len());
            let insert = insert.map_or(Vec::new(), |piece| piece.chars().collect());
            chars.splice(at..end, insert);
        }
        chars.into_iter().collect()
    })
}

fn card_event() -> impl Strategy<Value = CardEvent> {
    let field = || prop_oneof![Just(String::new()), text(), "[a-zA-Z0-9_:]{1,12}"];
    (
        field(),
        field(),
        any::<i64>(),
        any::<i64>(),
        field(),
        field(),
        field(),
        field(),
    )
        .prop_map(
            |(
                to_user_name,
                from_user_name,
                create_time,
                agent_id,
                event_key,
                task_id,
                card_type,
                response_code,
            )| {
                CardEvent {
                    to_user_name,
                    from_user_name,
                    create_time,
                    agent_id,
                    event_key,
                    task_id,
                    card_type,
                    response_code,
                }
            },
        )
}

/// The mutations start from valid files, which the loader's guard lets through.
#[test]
fn the_config_seeds_load_in_the_scratch_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_config_files(dir.path());
    for seed in CONFIG_SEEDS {
        assert!(config_reads_only_base_dir(seed), "{seed}");
        if let Err(e) = alertmanager_wecom::config::Config::from_yaml(seed, "seed.yml", dir.path()) {
            panic!("{e}\n{seed}");
        }
    }
    assert!(!config_reads_only_base_dir("apps: [{secret_file: /dev/zero}]"));
    assert!(!config_reads_only_base_dir(
        "a: &p ../../etc/passwd\nrobots: [{key_file: *p}]"
    ));
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_webhook_body_of_any_bytes_is_parsed_or_refused_without_panicking(body in vec(any::<u8>(), 0..256)) {
        check_payload(&body);
    }

    #[test]
    fn a_parsed_webhook_payload_written_out_again_parses_to_the_same_payload(
        spec in notification(vec(alert(), 0..4)),
    ) {
        check_payload(&spec.body());
    }

    #[test]
    fn matchers_parse_or_are_refused_and_their_canonical_form_parses_back(text in matcher_text()) {
        check_matchers(&text);
    }

    #[test]
    fn a_matcher_of_any_name_and_value_shows_as_text_that_parses_back(
        name in text(),
        op in match_op(),
        value in text(),
    ) {
        check_matcher_parts(&name, op, &value);
    }

    #[test]
    fn recipients_are_the_clean_ids_label_values_name_and_never_evaluated_templates(
        alerts in vec(recipient_labels(), 1..6),
    ) {
        check_recipients(&alerts);
    }

    #[test]
    fn unescaping_a_textcard_title_gives_back_exactly_the_text(text in text()) {
        check_html_escape_round_trip(&text);
    }

    #[test]
    fn callback_encryption_round_trips_any_message_bare_and_as_a_signed_reply(
        message in text(),
        random in any::<[u8; 16]>(),
        timestamp in prop_oneof!["[0-9]{10}", text()],
        nonce in prop_oneof!["[0-9]{9}", text()],
    ) {
        check_callback_round_trip(&message, random, &timestamp, &nonce);
    }

    #[test]
    fn callback_requests_of_garbage_are_refused_without_panicking_signed_or_not(
        signature in prop_oneof!["[0-9a-f]{40}", text()],
        timestamp in text(),
        nonce in text(),
        echostr in prop_oneof!["[A-Za-z0-9+/]{0,128}={0,2}", text()],
        body in prop_oneof![
            vec(any::<u8>(), 0..128),
            text().prop_map(|t| envelope(&t).into_bytes()),
            text().prop_map(String::into_bytes),
        ],
    ) {
        check_callback_request(&signature, &timestamp, &nonce, &echostr, &body);
    }

    #[test]
    fn decryption_of_any_plaintext_accepts_only_a_well_formed_one(
        plaintext in prop_oneof![
            vec(any::<u8>(), 32..160),
            // Well-formed but for one byte: the length field, the receive id or the padding.
            (text(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(message, at, byte)| {
                let mut plain = vec![7u8; 16];
                plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
                plain.extend_from_slice(message.as_bytes());
                plain.extend_from_slice(CALLBACK_CORP.as_bytes());
                let pad = 32 - plain.len() % 32;
                plain.extend(std::iter::repeat_n(pad as u8, pad));
                let at = at.index(plain.len());
                plain[at] = byte;
                plain
            }),
        ],
    ) {
        check_decrypt_plaintext(&plaintext);
    }

    #[test]
    fn a_card_click_written_as_wecom_writes_it_reads_back_as_the_same_click(event in card_event()) {
        check_card_event_round_trip(&event);
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn every_builtin_template_fits_wecom_limits_and_shows_label_text_literally(
        spec in notification(vec(alert(), 1..4)),
    ) {
        check_render(&spec);
    }

    #[test]
    fn the_config_loader_accepts_or_refuses_any_yaml_without_panicking(text in mutated_config()) {
        let dir = tempfile::tempdir().unwrap();
        write_config_files(dir.path());
        check_config(&text, dir.path());
    }
}

proptest! {
    #![proptest_config(config(8))]

    #[test]
    fn a_group_too_big_for_one_message_is_a_series_within_wecom_limits(spec in notification(big_group())) {
        check_render(&spec);
    }
}
