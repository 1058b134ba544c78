#![no_main]
//! See `argonlink_fuzz::frame_parse`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = argonlink_fuzz::frame_parse::run(data);
});
