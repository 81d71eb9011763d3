//! Outbound HTTP (awc). awc clients are `!Send`: each thread keeps its own, reusing connections.

use std::time::Duration;

thread_local! {
    static CLIENT: awc::Client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(Duration::from_secs(5)))
        // Requests set their own timeout; this only bounds a forgotten one.
        .timeout(Duration::from_secs(60))
        .disable_redirects()
        .finish();
}

/// This thread's shared client.
pub fn client() -> awc::Client {
    CLIENT.with(Clone::clone)
}

/// Percent-encodes one path segment (product ids and versions may hold `/`, `:` or spaces).
pub fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(
            super::path_segment("urn:org:dp/1.0 x"),
            "urn%3Aorg%3Adp%2F1.0%20x"
        );
        assert_eq!(super::path_segment("a-b_c.d~"), "a-b_c.d~");
    }
}
