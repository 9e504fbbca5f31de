//! Reading what every function reads from its request and its environment, one way for all:
//! the media type, the `k` query parameter, and settings from the manifest's `environment` or
//! from Spin variables (`[component.<id>.variables]`).
//!
//! A bad setting is the deployment's mistake, not the client's: a 500 `misconfigured` that
//! names the variable and its value, never a silent fall-back to the default.

use crate::error::ApiError;
use std::str::FromStr;

/// The media type of a `Content-Type` header value, lowercase and without parameters
/// (`Application/JSON; charset=utf-8` is `application/json`); `None` without the header.
pub fn media_type(header: Option<&str>) -> Option<String> {
    header.map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// The `k` query parameter (how many results), from 1 to `max`; `None` when absent.
pub fn query_k(query: Option<&str>, max: usize) -> Result<Option<usize>, ApiError> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        if let Some(v) = pair.strip_prefix("k=") {
            return match v.parse::<usize>() {
                Ok(k) if (1..=max).contains(&k) => Ok(Some(k)),
                _ => Err(ApiError::bad_request(
                    "invalid_k",
                    format!("k must be an integer from 1 to {max}, not `{v}`"),
                )),
            };
        }
    }
    Ok(None)
}

/// The setting `name` from the component's environment, or `default` when it is not set.
pub fn env_or<T: FromStr>(name: &str, default: T) -> Result<T, ApiError> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| misconfigured(format!("{name}=`{v}` is not valid"))),
        Err(_) => Ok(default),
    }
}

/// The setting `variable` from the component's Spin variables (`[component.<id>.variables]`,
/// usually a template over an application variable the operator sets with
/// `SPIN_VARIABLE_<NAME>`), else `env` from its environment, else `default`.
pub async fn variable_or_env<T: FromStr>(variable: &str, env: &str, default: T) -> Result<T, ApiError> {
    match spin_sdk::variables::get(variable).await {
        Ok(v) => v
            .parse()
            .map_err(|_| misconfigured(format!("the variable {variable}=`{v}` is not valid"))),
        Err(spin_sdk::variables::Error::Undefined(_)) => env_or(env, default),
        Err(e) => Err(misconfigured(format!("the variable {variable}: {e}"))),
    }
}

/// The setting `name`, which the component's manifest entry must set.
pub fn env_required(name: &str) -> Result<String, ApiError> {
    std::env::var(name)
        .map_err(|_| misconfigured(format!("{name} is not set in this component's environment")))
}

fn misconfigured(message: String) -> ApiError {
    ApiError::internal("misconfigured", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_type_drops_parameters_and_case() {
        assert_eq!(
            media_type(Some("Application/JSON; charset=utf-8")).as_deref(),
            Some("application/json")
        );
        assert_eq!(media_type(Some("image/png")).as_deref(), Some("image/png"));
        assert_eq!(media_type(None), None);
    }

    #[test]
    fn k_is_read_from_the_query_within_its_range() {
        assert_eq!(query_k(None, 50), Ok(None));
        assert_eq!(query_k(Some("x=1"), 50), Ok(None));
        assert_eq!(query_k(Some("x=1&k=7"), 50), Ok(Some(7)));
        for bad in ["k=0", "k=51", "k=two", "k=-1"] {
            let e = query_k(Some(bad), 50).unwrap_err();
            assert_eq!((e.status, e.code), (400, "invalid_k"), "{bad}");
        }
    }

    #[test]
    fn a_bad_setting_is_an_error_not_the_default() {
        // Variables of this test only; tests in this crate run in one process.
        std::env::set_var("SCORIA_GUEST_TEST_GOOD", "12");
        std::env::set_var("SCORIA_GUEST_TEST_BAD", "twelve");
        assert_eq!(env_or("SCORIA_GUEST_TEST_GOOD", 5usize), Ok(12));
        assert_eq!(env_or("SCORIA_GUEST_TEST_UNSET", 5usize), Ok(5));
        let e = env_or("SCORIA_GUEST_TEST_BAD", 5usize).unwrap_err();
        assert_eq!((e.status, e.code), (500, "misconfigured"));
        assert!(
            e.message.contains("SCORIA_GUEST_TEST_BAD=`twelve`"),
            "{}",
            e.message
        );
        let e = env_required("SCORIA_GUEST_TEST_UNSET").unwrap_err();
        assert!(e.message.contains("is not set"), "{}", e.message);
    }
}
