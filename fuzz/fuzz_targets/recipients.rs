//! Recipients rendered from alert labels (`to: {users: ['{{labels.owner}}']}`): label
//! values are taken literally, never as templates, and give exactly the clean ids they
//! name; party and tag ids are numbers; the fallback and the robot's mentions follow.
#![no_main]

use alertmanager_wecom_fuzz::RecipientLabels;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|alerts: Vec<RecipientLabels>| {
    alertmanager_wecom_fuzz::check_recipients(&alerts[..alerts.len().min(32)]);
});
