//! Webhook deliveries: provider, proof headers and body from the input. Half the inputs are
//! signed correctly with the test secret so the fuzzer reaches the JSON parsing and URL
//! matching behind the signature check.
#![no_main]

use hmac::{KeyInit, Mac};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use server::http::webhooks::{inspect_delivery, same_repo};

const SECRET: &str = "fuzz-secret";
const PROVIDERS: [&str; 6] = ["github", "gitlab", "gitea", "forgejo", "generic", "bitbucket"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let provider = PROVIDERS[usize::from(selector) % PROVIDERS.len()];
    let signed = selector & 0x80 != 0;
    // The input is `header value \0 body` (or just a body when signed).
    let (raw_proof, body) = match rest.iter().position(|b| *b == 0) {
        Some(i) if !signed => (&rest[..i], &rest[i + 1..]),
        _ => (&[][..], rest),
    };
    let mut headers = HeaderMap::new();
    let proof = if signed {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if provider == "gitlab" {
            SECRET.to_owned()
        } else if provider == "github" || provider == "generic" {
            format!("sha256={hex}")
        } else {
            hex
        }
    } else {
        String::from_utf8_lossy(raw_proof).into_owned()
    };
    if let Ok(value) = HeaderValue::from_str(&proof) {
        for name in [
            "x-hub-signature-256",
            "x-gitlab-token",
            "x-gitea-signature",
            "x-forgejo-signature",
            "x-tidemark-signature",
        ] {
            headers.insert(name, value.clone());
        }
    }
    if let Ok(urls) = inspect_delivery(provider, &headers, SECRET, body) {
        for url in urls {
            let _ = same_repo(&url, "https://github.com/example/app.git");
            let _ = same_repo(&url, "git@github.com:example/app.git");
            assert!(same_repo(&url, &url), "a URL names its own repository: {url:?}");
        }
    }
});
