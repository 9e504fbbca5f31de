//! Scoria: machine-learning scoring functions as WebAssembly components.
//!
//! A request's path through the host, one module per step:
//! [`server`] (accept, route, limit) -> [`runtime`] (fresh component instance) ->
//! [`nn::wit`] (the guest's `wasi:nn` calls) -> [`nn`] (validation, shared loaded models) ->
//! a backend such as [`nn::tract`]. Start-up is in [`app`], which loads models through
//! [`loader`]; the manifest and model cards it reads are in [`manifest`] and [`models`], the
//! manifest's Spin variables in [`variables`];
//! [`index`] builds the embedding indexes that text-matching functions score against.
//! What is being served, and swapping it, is [`deployment`], which [`admin`] (HTTP) and
//! [`watch`] (files) both drive.

pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod budget;
pub mod cache;
pub mod catalog;
pub mod choice;
pub mod connection;
pub mod deployment;
pub mod grpc;
pub mod index;
pub mod loader;
pub mod locked;
pub mod manifest;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod oip;
pub mod outbound;
pub mod response;
pub mod runtime;
pub mod server;
pub mod variables;
pub mod versions;
pub mod watch;
