//! WeCom's callback requests, as anyone who finds the URL may send them: URL verification,
//! decryption and the event reader never panic, signed or not; decryption of any
//! plaintext accepts only a well-formed one; encryption, passive replies and card events
//! round-trip.
#![no_main]

use alertmanager_wecom::interact::event::CardEvent;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Click {
    to_user_name: String,
    from_user_name: String,
    create_time: i64,
    agent_id: i64,
    event_key: String,
    task_id: String,
    card_type: String,
    response_code: String,
}

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    Request {
        signature: &'a str,
        timestamp: &'a str,
        nonce: &'a str,
        echostr: &'a str,
        body: &'a [u8],
    },
    Plaintext(&'a [u8]),
    RoundTrip {
        message: &'a str,
        random: [u8; 16],
        timestamp: &'a str,
        nonce: &'a str,
    },
    Click(Click),
}

fuzz_target!(|input: Input| {
    match input {
        Input::Request {
            signature,
            timestamp,
            nonce,
            echostr,
            body,
        } => alertmanager_wecom_fuzz::check_callback_request(signature, timestamp, nonce, echostr, body),
        Input::Plaintext(plaintext) => alertmanager_wecom_fuzz::check_decrypt_plaintext(plaintext),
        Input::RoundTrip {
            message,
            random,
            timestamp,
            nonce,
        } => alertmanager_wecom_fuzz::check_callback_round_trip(message, random, timestamp, nonce),
        Input::Click(c) => alertmanager_wecom_fuzz::check_card_event_round_trip(&CardEvent {
            to_user_name: c.to_user_name,
            from_user_name: c.from_user_name,
            create_time: c.create_time,
            agent_id: c.agent_id,
            event_key: c.event_key,
            task_id: c.task_id,
            card_type: c.card_type,
            response_code: c.response_code,
        }),
    }
});
