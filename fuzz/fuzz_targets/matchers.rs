//! Label matchers as operators write them (routes' `matchers`, silences): the parsers never
//! panic, and each matcher's canonical form parses back to the same matcher, alone and in
//! a list. Split at NUL bytes, the same text also names a matcher's parts (name, value,
//! operator), which must round-trip whatever they are.
#![no_main]

use alertmanager_wecom::model::matcher::MatchOp;
use libfuzzer_sys::fuzz_target;

const OPS: [MatchOp; 4] = [
    MatchOp::Equal,
    MatchOp::NotEqual,
    MatchOp::RegexMatch,
    MatchOp::RegexNoMatch,
];

fuzz_target!(|text: &str| {
    alertmanager_wecom_fuzz::check_matchers(text);
    if let Some((name, value)) = text.split_once('\0') {
        let op = OPS[name.len() % OPS.len()];
        alertmanager_wecom_fuzz::check_matcher_parts(name, op, value);
    }
});
