//! The configuration file, as an operator (or a bad merge) may write it: the loader never
//! panics, and what it accepts builds a router. Files it names resolve in a scratch
//! directory holding a few secrets and a template directory.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn base_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("alertmanager-wecom-fuzz-config-{}", std::process::id()));
        alertmanager_wecom_fuzz::write_config_files(&dir);
        dir
    })
}

fuzz_target!(|text: &str| {
    alertmanager_wecom_fuzz::check_config(text, base_dir());
});
