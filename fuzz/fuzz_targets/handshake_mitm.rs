#![no_main]
//! See `argonlink_fuzz::mitm`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = argonlink_fuzz::mitm::run(data);
});
