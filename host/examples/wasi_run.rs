//! Runs a wasm32-wasip2 command under wasmtime: the test runner for the functions' crates.
//!
//! `cargo test --target wasm32-wasip2` in `functions/` uses it (`./dev test` sets
//! `CARGO_TARGET_WASM32_WASIP2_RUNNER`), so that code with WebAssembly-only paths, such as the
//! `vision` crate's SIMD resize, is tested as the host will run it: the same wasmtime, with
//! SIMD on. The command gets its arguments, the environment and stdio, and no files.
//!
//! Usage: wasi_run <command.wasm> [args...]; exits with the command's status.

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn main() -> wasmtime::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().context("usage: wasi_run <command.wasm> [args...]")?;
    let engine = Engine::default();
    let component = Component::from_file(&engine, path).with_context(|| format!("loading {path}"))?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let wasi = WasiCtxBuilder::new()
        .inherit_stdio()
        .inherit_env()
        .args(&args)
        .build();
    let mut store = Store::new(
        &engine,
        Host {
            wasi,
            table: ResourceTable::new(),
        },
    );
    let command = Command::instantiate(&mut store, &component, &linker)?;
    let status = command.wasi_cli_run().call_run(&mut store)?;
    std::process::exit(if status.is_ok() { 0 } else { 1 });
}
