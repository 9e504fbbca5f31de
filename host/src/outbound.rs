//! `allowed_outbound_hosts`: which outbound HTTP requests a component may make, in Spin's
//! syntax. An entry is `scheme://host[:port]`:
//! - the scheme is a name or `*`;
//! - the host is a name, `*` (any host), or `*.example.com` (any subdomain of example.com, not
//!   example.com itself);
//! - the port is a number, `*`, or a range `8000..8080` (the end excluded); without one, the
//!   scheme's default (80 for http, 443 for https).
//!
//! An entry may hold `{{ variable }}` templates over the app's `[variables]`, as in Spin; they
//! are filled in when the app starts ([`crate::manifest::Manifest::resolve_variables`]) and the
//! result is parsed here.

use std::ops::Range;

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`, held as `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    One(u16),
    Range(Range<u16>),
    /// No port written: the request's scheme's default.
    Default,
}

impl AllowedHost {
    /// Parse an entry; the error says what is wrong with it, for the manifest's message.
    pub fn parse(entry: &str) -> Result<Self, String> {
        if entry.contains("{{") || entry.contains("}}") {
            return Err(format!(
                "`{entry}` holds `{{{{` or `}}}}`, which no host name has"
            ));
        }
        let Some((scheme, rest)) = entry.split_once("://") else {
            return Err(format!("`{entry}` has no scheme; write `https://example.com`"));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!(
                "`{entry}` has a path; an entry names a scheme, host and port only"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        if scheme.is_empty() || host.is_empty() {
            return Err(format!("`{entry}` needs a scheme and a host (each may be `*`)"));
        }
        let host = match host {
            "*" => HostPattern::Any,
            h => match h.strip_prefix("*.") {
                Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                    HostPattern::Subdomains(format!(".{}", domain.to_ascii_lowercase()))
                }
                Some(_) => {
                    return Err(format!(
                        "`{entry}`: write a subdomain wildcard as `*.example.com`"
                    ));
                }
                None if h.contains('*') => {
                    return Err(format!(
                        "`{entry}`: `*` stands for a whole host or a leading `*.` only"
                    ));
                }
                None => HostPattern::Exact(h.to_ascii_lowercase()),
            },
        };
        let bad_port = || format!("`{entry}`: the port must be a number, `*` or a range like `8000..8080`");
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => match p.split_once("..") {
                Some((a, b)) => {
                    let (a, b) = (
                        a.parse().map_err(|_| bad_port())?,
                        b.parse().map_err(|_| bad_port())?,
                    );
                    if a >= b {
                        return Err(bad_port());
                    }
                    PortPattern::Range(a..b)
                }
                None => PortPattern::One(p.parse().map_err(|_| bad_port())?),
            },
        };
        let scheme = (scheme != "*").then(|| scheme.to_ascii_lowercase());
        if scheme.is_none() && port == PortPattern::Default {
            return Err(format!("`{entry}`: with any scheme, say the port (`:443`, `:*`)"));
        }
        Ok(Self { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self
            .scheme
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case(scheme));
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => *h == host,
            HostPattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        };
        let port_ok = match &self.port {
            PortPattern::Any => true,
            PortPattern::One(p) => *p == port,
            PortPattern::Range(r) => r.contains(&port),
            PortPattern::Default => Some(port) == default_port(scheme),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// The port a URL of `scheme` means when it names none.
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entry: &str, scheme: &str, host: &str, port: u16) -> bool {
        AllowedHost::parse(entry).unwrap().allows(scheme, host, port)
    }

    #[test]
    fn entries_match_scheme_host_and_port() {
        assert!(allows("https://example.com", "https", "example.com", 443));
        assert!(allows("https://example.com", "https", "EXAMPLE.com", 443));
        assert!(!allows("https://example.com", "http", "example.com", 80));
        assert!(!allows("https://example.com", "https", "evil.com", 443));
        assert!(!allows("https://example.com", "https", "example.com", 8443));
        assert!(allows("http://localhost:8080", "http", "localhost", 8080));
        assert!(!allows("http://localhost:8080", "http", "localhost", 8081));
        assert!(allows("*://*:*", "http", "anything", 1));
    }

    #[test]
    fn subdomain_wildcards_and_port_ranges() {
        assert!(allows("https://*.example.com", "https", "api.example.com", 443));
        assert!(allows("https://*.example.com", "https", "a.b.example.com", 443));
        assert!(!allows("https://*.example.com", "https", "example.com", 443));
        assert!(!allows("https://*.example.com", "https", "badexample.com", 443));
        assert!(allows("http://localhost:8000..8080", "http", "localhost", 8000));
        assert!(allows("http://localhost:8000..8080", "http", "localhost", 8079));
        assert!(!allows("http://localhost:8000..8080", "http", "localhost", 8080));
    }

    #[test]
    fn what_is_not_supported_is_refused_with_the_entry() {
        for (entry, says) in [
            ("https://{{ api_host }}", "no host name has"),
            ("example.com", "no scheme"),
            ("https://example.com/path", "path"),
            ("https://ex*mple.com", "whole host"),
            ("https://example.com:http", "port"),
            ("https://example.com:9..8", "port"),
            ("*://example.com", "say the port"),
        ] {
            let e = AllowedHost::parse(entry).unwrap_err();
            assert!(e.contains(entry) && e.contains(says), "{entry}: {e}");
        }
    }
}
