//! `uniffi-bindgen` for the Wrale uniffi binding.
//!
//! It lives in its own crate so that its version always equals the library's
//! (a mismatch gives checksum or metadata errors) and so that building the
//! library does not compile the generator. Use it in library mode:
//!
//! ```text
//! cargo build -p wrale-uniffi -p wrale-uniffi-bindgen
//! target/debug/uniffi-bindgen generate --library target/debug/libwrale_uniffi.so \
//!     --language kotlin --language swift --out-dir target/uniffi --no-format
//! ```

fn main() {
    uniffi::uniffi_bindgen_main()
}
