//! The manifest reader: any text as multi-document YAML/JSON must give objects or an error,
//! never a panic, a hang or unbounded memory (alias bombs, deep nesting, huge documents).
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::render::{canonical_json, digest, read_manifests, Limits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    if let Ok(rendered) = read_manifests(text, "fuzz.yaml", &limits) {
        // A render is canonical: its canonical JSON (an array of the objects) parses back to the
        // same canonical form and digest.
        let parsed: serde_json::Value =
            serde_json::from_str(&rendered.canonical).expect("canonical JSON parses");
        let again = canonical_json(&parsed);
        assert_eq!(again, rendered.canonical);
        assert_eq!(digest(&again), rendered.digest);
        assert_eq!(parsed.as_array().map(Vec::len), Some(rendered.objects.len()));
    }
});
