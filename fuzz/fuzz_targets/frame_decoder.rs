#![no_main]
//! See `argonlink_fuzz::decoder`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = argonlink_fuzz::decoder::run(data);
});
