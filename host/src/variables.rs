//! Spin's application variables: `[variables]` declared by the app, `[component.<id>.variables]`
//! templates over them, and where their values come from.
//!
//! Spin apps keep configuration out of their code this way: the app declares `name = { default
//! = "..." }` or `name = { required = true }`, a component maps its own keys to templates such as
//! `"{{ name }}"` or `"https://{{ region }}.example.com"`, and the operator sets values with
//! `SPIN_VARIABLE_<NAME>` in the environment or in a `.env` file. A guest reads its keys with
//! `spin:variables/variables.get` (or `wasi:config/store`), served by [`wit`]. The rules here
//! (names, templates, the provider order, refusing to start when a required variable has no
//! value) are those of Spin's `spin-expressions` and `spin-variables-env` crates, so that a
//! manifest means the same under `spin up` and `scoria up`.
//!
//! Values are resolved once, when the app starts, as Spin's environment provider reads the
//! same environment for the life of the process.

pub mod wit;

use std::collections::BTreeMap;
use std::path::Path;

/// Why variables could not be declared or resolved; the manifest turns these into errors that
/// name its file and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariablesError {
    /// A variable or component key that Spin would refuse.
    #[error("`{name}` is not a valid variable name: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A template with an unclosed `{{`.
    #[error("`{0}` has a `{{{{` without its `}}}}`")]
    Unclosed(String),
    /// A template that names a variable the app does not declare.
    #[error("`{template}` uses `{name}`, which is not declared in `[variables]`")]
    Unknown { template: String, name: String },
    /// Required variables that no provider has a value for.
    #[error(
        "no value for the required variable(s) {}; set {} in the environment or in .env",
        list(.0, |n| format!("`{n}`")),
        list(.0, |n| format!("{}=...", env_name(n)))
    )]
    Unresolved(Vec<String>),
    /// The `.env` file exists but cannot be read as one.
    #[error("{file}: {message}")]
    Dotenv { file: String, message: String },
}

fn list(names: &[String], f: impl Fn(&str) -> String) -> String {
    names.iter().map(|n| f(n)).collect::<Vec<_>>().join(", ")
}

/// The environment variable that sets application variable `name`, as Spin names it.
pub fn env_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// Check a variable name (application or component) with Spin's rules: lowercase ASCII letters,
/// digits and single underscores, starting with a letter and ending with a letter or digit, so
/// that every name maps to one environment variable.
pub fn validate_name(name: &str) -> Result<(), VariablesError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Some("only lowercase letters, digits and `_` are allowed")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("it must start with a lowercase letter")
    } else if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("it must end with a letter or digit")
    } else if name.contains("__") {
        Some("it must not hold two `_` in a row")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(VariablesError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// `[variables] <name>`: a declared application variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The value when no provider sets one; `None` makes the variable required.
    pub default: Option<String>,
    /// Its value is sensitive: never logged.
    pub secret: bool,
}

/// A string with `{{ name }}` expressions, as Spin parses it (the text between the braces is
/// trimmed; there is no escape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    raw: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

impl Template {
    /// Parse `raw`; every expression must be a declared variable of `declared`.
    pub fn parse(raw: &str, declared: &BTreeMap<String, Variable>) -> Result<Self, VariablesError> {
        Self::parse_with(raw, |name| declared.contains_key(name))
    }

    fn parse_with(raw: &str, declared: impl Fn(&str) -> bool) -> Result<Self, VariablesError> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            if let Some(expr) = rest.strip_prefix("{{") {
                let (name, after) = expr
                    .split_once("}}")
                    .ok_or_else(|| VariablesError::Unclosed(raw.to_string()))?;
                let name = name.trim();
                if !declared(name) {
                    return Err(VariablesError::Unknown {
                        template: raw.to_string(),
                        name: name.to_string(),
                    });
                }
                parts.push(Part::Variable(name.to_string()));
                rest = after;
            } else {
                let end = rest.find("{{").unwrap_or(rest.len());
                parts.push(Part::Literal(rest[..end].to_string()));
                rest = &rest[end..];
            }
        }
        Ok(Self {
            raw: raw.to_string(),
            parts,
        })
    }

    /// Whether `text` holds a template expression at all.
    pub fn is_template(text: &str) -> bool {
        text.contains("{{")
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The template with every expression replaced by its value; the error is the first
    /// variable without one.
    pub fn render(&self, values: &Values) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(name) => match values.0.get(name) {
                    Some(value) => out.push_str(value),
                    None => return Err(name.clone()),
                },
            }
        }
        Ok(out)
    }
}

/// Where values come from, first match wins, as in Spin's default runtime configuration:
/// `SPIN_VARIABLE_<NAME>` in the process environment, then in the `.env` file of the directory
/// the host was started in, then the declared default.
pub struct Provider {
    /// The `SPIN_VARIABLE_*` part of the environment.
    env: BTreeMap<String, String>,
    dotenv: BTreeMap<String, String>,
}

impl Provider {
    /// The process environment and `dir/.env` (if there is one).
    pub fn from_environment(dir: &Path) -> Result<Self, VariablesError> {
        let file = dir.join(".env");
        let dotenv = match dotenvy::from_path_iter(&file) {
            Ok(iter) => iter
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map_err(|e| VariablesError::Dotenv {
                    file: file.display().to_string(),
                    message: e.to_string(),
                })?,
            Err(e) if e.not_found() => BTreeMap::new(),
            Err(e) => {
                return Err(VariablesError::Dotenv {
                    file: file.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        Ok(Self {
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("SPIN_VARIABLE_"))
                .collect(),
            dotenv,
        })
    }

    /// Values from a map of environment variables only (for tests and embedding).
    pub fn from_map(env: BTreeMap<String, String>) -> Self {
        Self {
            env,
            dotenv: BTreeMap::new(),
        }
    }

    /// Values from `(environment variable, value)` pairs only.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<String> {
        let key = env_name(name);
        self.env.get(&key).or_else(|| self.dotenv.get(&key)).cloned()
    }

    /// A value for every declared variable, or the list of required ones that have none.
    pub fn resolve(&self, declared: &BTreeMap<String, Variable>) -> Result<Values, VariablesError> {
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, var) in declared {
            match self.get(name).or_else(|| var.default.clone()) {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => missing.push(name.clone()),
            }
        }
        if missing.is_empty() {
            Ok(Values(values))
        } else {
            Err(VariablesError::Unresolved(missing))
        }
    }
}

/// The application variables' values, resolved when the app starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values(BTreeMap<String, String>);

impl Values {
    /// `text` with its templates filled in; unchanged if it holds none, or one naming a
    /// variable without a value (which the caller's own parsing then refuses).
    pub fn fill(&self, text: &str) -> String {
        if !Template::is_template(text) {
            return text.to_string();
        }
        Template::parse_with(text, |name| self.0.contains_key(name))
            .ok()
            .and_then(|t| t.render(self).ok())
            .unwrap_or_else(|| text.to_string())
    }
}

/// What one component's `spin:variables` answers: each of its keys, rendered, or the variable
/// that had no value (only when the app was not started through [`Provider::resolve`], as by
/// `scoria compile`).
#[derive(Debug, Clone, Default)]
pub struct ComponentVariables(BTreeMap<String, Result<String, String>>);

impl ComponentVariables {
    /// Render `templates` (a component's `[component.<id>.variables]`) with `values`.
    pub fn render(templates: &BTreeMap<String, Template>, values: &Values) -> Self {
        Self(
            templates
                .iter()
                .map(|(key, t)| (key.clone(), t.render(values)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> BTreeMap<String, Variable> {
        BTreeMap::from([
            (
                "region".to_string(),
                Variable {
                    default: Some("west".into()),
                    secret: false,
                },
            ),
            (
                "api_token".to_string(),
                Variable {
                    default: None,
                    secret: true,
                },
            ),
        ])
    }

    #[test]
    fn names_follow_spins_rules() {
        for good in ["a", "region", "api_token", "v2", "a_b_c"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "Region", "2fast", "_a", "a_", "a__b", "a-b", "a.b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_mix_text_and_declared_variables() {
        let t = Template::parse("https://{{ region }}.example.com:{{region}}", &declared()).unwrap();
        let values = Values(BTreeMap::from([("region".into(), "north".into())]));
        assert_eq!(t.render(&values).unwrap(), "https://north.example.com:north");
        assert_eq!(
            Template::parse("{{ nope }}", &declared()),
            Err(VariablesError::Unknown {
                template: "{{ nope }}".into(),
                name: "nope".into()
            })
        );
        assert_eq!(
            Template::parse("a {{ region", &declared()),
            Err(VariablesError::Unclosed("a {{ region".into()))
        );
        assert_eq!(
            Template::parse("plain", &declared())
                .unwrap()
                .render(&Values::default()),
            Ok("plain".into())
        );
    }

    #[test]
    fn the_environment_wins_over_the_default_and_required_ones_must_be_set() {
        let env = Provider::from_pairs;
        let e = env(&[]).resolve(&declared()).unwrap_err();
        assert_eq!(e, VariablesError::Unresolved(vec!["api_token".into()]));
        assert!(e.to_string().contains("SPIN_VARIABLE_API_TOKEN=..."), "{e}");
        let values = env(&[
            ("SPIN_VARIABLE_API_TOKEN", "t0k"),
            ("SPIN_VARIABLE_REGION", "east"),
        ])
        .resolve(&declared())
        .unwrap();
        assert_eq!(values.0["region"], "east");
        assert_eq!(values.0["api_token"], "t0k");
        let values = env(&[("SPIN_VARIABLE_API_TOKEN", "t0k")])
            .resolve(&declared())
            .unwrap();
        assert_eq!(values.0["region"], "west");
    }

    #[test]
    fn dotenv_is_read_after_the_process_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "SPIN_VARIABLE_API_TOKEN=\"from file\"\n# note\n",
        )
        .unwrap();
        let provider = Provider::from_environment(dir.path()).unwrap();
        assert_eq!(provider.get("api_token").as_deref(), Some("from file"));
        let none = tempfile::tempdir().unwrap();
        assert!(Provider::from_environment(none.path()).unwrap().dotenv.is_empty());
    }
}
