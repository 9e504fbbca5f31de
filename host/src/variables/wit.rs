//! `spin:variables/variables@3.0.0` (what spin-sdk 7's `variables::get` imports) and
//! `wasi:config/store@0.2.0-draft-2024-09-27` for guests, over a component's rendered
//! `[component.<id>.variables]`.
//!
//! Errors follow Spin's host: a name Spin would refuse is `invalid-name`, a key the component
//! does not declare is `undefined`, and a variable without a value is `provider`; through
//! `wasi:config` the first two are "no value" (`none`), as that interface asks.

use super::{ComponentVariables, validate_name};
use std::sync::Arc;
use wasmtime::component::{Accessor, HasData, Linker};

mod generated {
    wasmtime::component::bindgen!({
        inline: "
            package scoria:variables;
            world variables {
                import spin:variables/variables@3.0.0;
                import wasi:config/store@0.2.0-draft-2024-09-27;
            }
        ",
        path: [
            "../wit/deps/spin-variables@3.0.0",
            "../wit/deps/wasi-config@0.2.0-draft-2024-09-27",
        ],
        world: "scoria:variables/variables",
    });
}

use generated::spin::variables::variables as spin;
use generated::wasi::config::store as config;

/// What a store holds for these interfaces: its component's variables, shared by every
/// instance of that component.
pub type VariablesCtx = Arc<ComponentVariables>;

/// The [`HasData`] marker for these interfaces.
struct Variables;

impl HasData for Variables {
    type Data<'a> = &'a ComponentVariables;
}

impl ComponentVariables {
    fn lookup(&self, key: &str) -> Result<String, spin::Error> {
        validate_name(key).map_err(|e| spin::Error::InvalidName(e.to_string()))?;
        match self.0.get(key) {
            Some(Ok(value)) => Ok(value.clone()),
            Some(Err(variable)) => Err(spin::Error::Provider(format!(
                "no value for the required variable `{variable}`"
            ))),
            None => Err(spin::Error::Undefined(format!(
                "no variable `{key}` in this component's `[component.<id>.variables]`"
            ))),
        }
    }
}

impl spin::Host for &ComponentVariables {}

impl<T> spin::HostWithStore<T> for Variables {
    async fn get(accessor: &Accessor<T, Self>, name: String) -> Result<String, spin::Error> {
        accessor.with(|mut view| view.get().lookup(&name))
    }
}

impl config::Host for &ComponentVariables {
    fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        match self.lookup(&key) {
            Ok(value) => Ok(Some(value)),
            Err(spin::Error::InvalidName(_) | spin::Error::Undefined(_)) => Ok(None),
            Err(spin::Error::Provider(m)) => Err(config::Error::Upstream(m)),
            Err(spin::Error::Other(m)) => Err(config::Error::Io(m)),
        }
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        self.0
            .iter()
            .map(|(key, value)| match value {
                Ok(v) => Ok((key.clone(), v.clone())),
                Err(variable) => Err(config::Error::Upstream(format!(
                    "no value for the required variable `{variable}`"
                ))),
            })
            .collect()
    }
}

/// Add both interfaces to `linker`; `get` finds a store's [`VariablesCtx`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &ComponentVariables,
) -> wasmtime::Result<()> {
    spin::add_to_linker::<T, Variables>(linker, get)?;
    config::add_to_linker::<T, Variables>(linker, get)?;
    Ok(())
}
