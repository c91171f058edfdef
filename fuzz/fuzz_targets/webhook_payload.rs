//! Alertmanager's webhook body, as any client may post it: parsing never panics, and what
//! it accepts survives being written out and read again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    alertmanager_wecom_fuzz::check_payload(body);
});
