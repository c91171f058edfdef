//! Alerts with any labels and annotations through every built-in template: messages fit
//! WeCom's limits for each msgtype, none is empty, every cut is marked, and label text
//! (template syntax included) shows literally, escaped for the msgtype.
#![no_main]

use alertmanager_wecom_fuzz::NotificationSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|spec: NotificationSpec| {
    alertmanager_wecom_fuzz::check_html_escape_round_trip(&spec.receiver);
    alertmanager_wecom_fuzz::check_render(&spec);
});
