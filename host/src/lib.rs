//! Scoria: machine-learning scoring functions as WebAssembly components.
//!
//! A request's path through the host, one module per step:
//! [`server`] (accept, route, limit) -> [`runtime`] (fresh component instance) ->
//! [`nn::wit`] (the guest's `wasi:nn` calls) -> [`nn`] (validation, shared loaded models) ->
//! a backend such as [`nn::tract`]. Start-up is in [`app`]; the manifest and model cards it
//! reads are in [`manifest`] and [`models`]; [`index`] builds the embedding indexes
//! that text-matching functions score against.

pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod cache;
pub mod choice;
pub mod index;
pub mod locked;
pub mod manifest;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod runtime;
pub mod server;
pub mod watch;
