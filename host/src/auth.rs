//! API keys for function routes.
//!
//! The keys file (`--api-keys-file`, e.g. a mounted Kubernetes Secret) holds one key per line,
//! optionally followed by the component ids it is limited to:
//!
//! ```text
//! # comment
//! sk-live-3f9a0c...                      # any function
//! sk-faq-only-77b1...  faq-match         # only faq-match
//! sk-vision-...        image-classify,faq-match
//! ```
//!
//! Keys are compared in constant time (digests compared with `subtle`, every key checked), and
//! never logged: errors name only the line number.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// A keys file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{file}: cannot read the API keys file: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: line {line}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// The credentials of `Authorization: Bearer <token>`, trimmed. The scheme's name is
/// case-insensitive in HTTP (RFC 9110, 11.1), so `bearer` and `BEARER` count too.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why a request was or was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No `Authorization: Bearer` or `x-api-key` header: 401.
    Missing,
    /// A key that matches nothing: 401.
    Invalid,
    /// A valid key that is not allowed on this function: 403.
    Forbidden,
}

struct Key {
    digest: [u8; 32],
    /// `None`: every function.
    scope: Option<Vec<String>>,
}

/// The loaded keys.
pub struct ApiKeys {
    keys: Vec<Key>,
}

impl ApiKeys {
    /// Read and parse a keys file.
    pub fn load(file: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(file).map_err(|source| KeysError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(file, &text)
    }

    /// Parse keys-file text; `file` is only for messages.
    pub fn parse(file: &Path, text: &str) -> Result<Self, KeysError> {
        let mut keys = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let invalid = |message: &str| KeysError::Invalid {
                file: file.to_path_buf(),
                line: i + 1,
                message: message.into(),
            };
            let mut parts = line.split_whitespace();
            let key = parts.next().unwrap_or_default();
            if key.len() < 16 {
                return Err(invalid(
                    "keys must be at least 16 characters; generate one with `openssl rand -hex 24`",
                ));
            }
            let rest = parts.collect::<Vec<_>>().join(" ");
            let scope = if rest.is_empty() {
                None
            } else {
                let ids: Vec<String> = rest.split(',').map(str::trim).map(str::to_owned).collect();
                if ids
                    .iter()
                    .any(|id| id.is_empty() || id.contains(char::is_whitespace))
                {
                    return Err(invalid(
                        "expected `<key> [component,component,...]`; separate ids with commas",
                    ));
                }
                Some(ids)
            };
            keys.push(Key {
                digest: Sha256::digest(key.as_bytes()).into(),
                scope,
            });
        }
        if keys.is_empty() {
            return Err(KeysError::Invalid {
                file: file.to_path_buf(),
                line: 0,
                message: "the file holds no keys, which would lock every function".into(),
            });
        }
        Ok(Self { keys })
    }

    /// Decide for a request to `component` with these headers.
    pub fn check(&self, headers: &http::HeaderMap, component: &str) -> Decision {
        match self.find(headers) {
            Err(refused) => refused,
            Ok(Key { scope: None, .. }) => Decision::Allowed,
            Ok(Key { scope: Some(ids), .. }) if ids.iter().any(|id| id == component) => Decision::Allowed,
            Ok(_) => Decision::Forbidden,
        }
    }

    /// Decide for a request that any valid key may make, whatever its functions.
    pub fn check_any(&self, headers: &http::HeaderMap) -> Decision {
        match self.find(headers) {
            Err(refused) => refused,
            Ok(_) => Decision::Allowed,
        }
    }

    /// The key these headers present, or why there is none.
    fn find(&self, headers: &http::HeaderMap) -> Result<&Key, Decision> {
        let presented = bearer_token(headers)
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(Decision::Missing);
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Look at every key, so timing does not tell how many keys were tried.
        let mut found: Option<&Key> = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        found.ok_or(Decision::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
# production keys
0123456789abcdef0123            # everything
faq-only-key-000000  faq-match
two-functions-key-00 image-classify, faq-match
";

    fn keys() -> ApiKeys {
        ApiKeys::parse(Path::new("keys"), FILE).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn bearer_and_x_api_key_are_accepted() {
        let k = keys();
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let h = headers(&[("authorization", format!("{scheme} 0123456789abcdef0123").as_str())]);
            assert_eq!(k.check(&h, "image-classify"), Decision::Allowed, "{scheme}");
        }
        let h = headers(&[("x-api-key", "faq-only-key-000000")]);
        assert_eq!(k.check(&h, "faq-match"), Decision::Allowed);
        // A key limited to some functions is still a key for what any key may do.
        assert_eq!(k.check_any(&h), Decision::Allowed);
        let h = headers(&[("x-api-key", "no-such-key-0000000")]);
        assert_eq!(k.check_any(&h), Decision::Invalid);
        assert_eq!(k.check_any(&headers(&[])), Decision::Missing);
    }

    #[test]
    fn missing_wrong_and_out_of_scope_keys_are_told_apart() {
        let k = keys();
        assert_eq!(k.check(&headers(&[]), "image-classify"), Decision::Missing);
        let h = headers(&[("authorization", "Bearer nope-nope-nope-nope")]);
        assert_eq!(k.check(&h, "image-classify"), Decision::Invalid);
        let h = headers(&[("x-api-key", "faq-only-key-000000")]);
        assert_eq!(k.check(&h, "image-classify"), Decision::Forbidden);
        let h = headers(&[("x-api-key", "two-functions-key-00")]);
        assert_eq!(k.check(&h, "faq-match"), Decision::Allowed);
    }

    #[test]
    fn bad_files_name_the_line_but_not_the_key() {
        let e = ApiKeys::parse(Path::new("keys"), "short\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 1") && !e.contains("short"), "{e}");
        let e = ApiKeys::parse(Path::new("keys"), "# nothing\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no keys"), "{e}");
        let e = ApiKeys::parse(Path::new("keys"), "0123456789abcdef0123 a b\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 1") && e.contains("commas"), "{e}");
    }
}
