//! Which browser origins are the service's own (DESIGN §14): a state-changing request a browser
//! sends from any other origin is refused, so a web page an operator opens cannot drive the API.

use std::net::SocketAddr;

/// The origins a page of this service is loaded from: `server.public_url`'s, and the bound
/// address's (on loopback or every interface: `localhost`, `127.0.0.1` and `[::1]` too). Any
/// other origin is another site's, or a name (DNS rebinding) that merely points here.
pub fn own_origins(public_url: &str, bound: SocketAddr) -> Vec<String> {
    let port = bound.port();
    let mut hosts = vec![bound.to_string()];
    if bound.ip().is_loopback() || bound.ip().is_unspecified() {
        hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(|h| format!("{h}:{port}")));
    }
    let mut origins: Vec<String> = hosts
        .iter()
        .filter_map(|host| origin_of(&format!("http://{host}")))
        .collect();
    origins.extend(origin_of(public_url));
    origins.sort();
    origins.dedup();
    origins
}

/// `scheme://host[:port]` of a URL as a browser writes it in `Origin`: lower case, no path, no
/// default port. `None` for anything but http(s) (`null`, `file://`…).
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix(default_port).unwrap_or(&host);
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_compared_as_browsers_write_them() {
        assert_eq!(
            origin_of("HTTPS://Devops.Example.com:443/base/path?q").as_deref(),
            Some("https://devops.example.com")
        );
        assert_eq!(
            origin_of("http://10.0.0.5:8002").as_deref(),
            Some("http://10.0.0.5:8002")
        );
        assert_eq!(
            origin_of("http://[::1]:80").as_deref(),
            Some("http://[::1]")
        );
        for not_an_origin in ["null", "", "file:///etc", "http://", "ftp://x"] {
            assert_eq!(origin_of(not_an_origin), None, "{not_an_origin}");
        }
    }

    #[test]
    fn own_origins_are_the_public_url_and_the_bound_address() {
        let loopback = own_origins("http://127.0.0.1:8002", "127.0.0.1:8002".parse().unwrap());
        assert_eq!(
            loopback,
            [
                "http://127.0.0.1:8002",
                "http://[::1]:8002",
                "http://localhost:8002"
            ]
        );
        let exposed = own_origins(
            "https://devops.example.com/",
            "10.0.0.5:8002".parse().unwrap(),
        );
        assert_eq!(
            exposed,
            ["http://10.0.0.5:8002", "https://devops.example.com"]
        );
        let everywhere = own_origins("", "0.0.0.0:8002".parse().unwrap());
        assert!(everywhere.contains(&"http://localhost:8002".to_owned()));
        assert!(everywhere.contains(&"http://0.0.0.0:8002".to_owned()));
    }
}
