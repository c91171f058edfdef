//! The fuzz targets' library: the invariants they check (`invariants.rs`, shared with the
//! property tests) and the turning of libFuzzer's bytes into inputs (`input.rs`).

pub mod input;
mod invariants;

pub use invariants::*;
