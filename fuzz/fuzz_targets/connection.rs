#![no_main]
//! See `argonlink_fuzz::connection`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    argonlink_fuzz::connection::run(data);
});
