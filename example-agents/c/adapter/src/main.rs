//! `wasi-reactor-adapter PATH` writes the WASI preview1 reactor adapter (the
//! one shipped with the host's wasmtime release) to PATH, for
//! `wasm-tools component new --adapt wasi_snapshot_preview1=PATH`.
//! An up-to-date PATH is left untouched.

use std::path::PathBuf;
use std::process::ExitCode;
use wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER as ADAPTER;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: wasi-reactor-adapter PATH");
        return ExitCode::from(2);
    };
    let path = PathBuf::from(path);
    if std::fs::read(&path).is_ok_and(|bytes| bytes == ADAPTER) {
        return ExitCode::SUCCESS;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Err(err) = std::fs::create_dir_all(parent) {
            eprintln!("wasi-reactor-adapter: creating {}: {err}", parent.display());
            return ExitCode::FAILURE;
        }
    }
    // Written beside PATH, then renamed, so a reader never sees half a file.
    let partial = path.with_extension("wasm.partial");
    match std::fs::write(&partial, ADAPTER).and_then(|()| std::fs::rename(&partial, &path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wasi-reactor-adapter: writing {}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}
