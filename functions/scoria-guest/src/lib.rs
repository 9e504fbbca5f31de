//! What every Scoria scoring function needs, kept in one place so that functions stay short:
//!
//! - [`nn`]: guest bindings to `wasi:nn@0.2.0-rc-2024-10-28` and a typed `infer` helper;
//! - [`error`]: the JSON error body that every Scoria endpoint returns;
//! - [`card`]: the parts of a model's `model.toml` that a function reads at run time;
//! - [`mount`]: reading a file from the component's mounts in few host calls;
//! - [`request`]: the media type, the `k` parameter and settings, read the same way by all;
//! - [`response`]: the JSON answer, with its length;
//! - [`timing`]: the function's steps in its `Server-Timing` header;
//! - [`instance`]: what an instance keeps for its later requests, where it has any.

pub mod card;
pub mod error;
pub mod instance;
pub mod mount;
pub mod nn;
pub mod request;
pub mod response;
pub mod timing;
