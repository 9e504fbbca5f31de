//! Reading a mounted file (a model card, a labels file) in a handful of host calls.
//!
//! A fresh instance reads its model card and labels on every request. Through `std::fs`
//! (wasi-libc) each file took an open, three stats, a stream and two reads, every one a trip
//! through the host's WASI plumbing; here it is one open, one stat and one read.

use std::io;
use wasip2::filesystem::preopens;
use wasip2::filesystem::types::{DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

/// The whole of the file at `path`, an absolute path under one of the component's `files`
/// destinations.
pub fn read(path: &str) -> io::Result<Vec<u8>> {
    // The mount whose destination is the longest prefix of `path`, and the rest of the path.
    let (dir, rel) = preopens::get_directories()
        .into_iter()
        .filter_map(|(dir, root)| {
            let rel = path.strip_prefix(root.trim_end_matches('/'))?.strip_prefix('/')?;
            Some((root.len(), dir, rel))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, dir, rel)| (dir, rel))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no mount holds this path"))?;
    let file = dir
        .open_at(
            PathFlags::SYMLINK_FOLLOW,
            rel,
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .map_err(to_io)?;
    let size = file.stat().map_err(to_io)?.size;
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    loop {
        // Ask for one byte more than the size: a short read is the end of a regular file, so
        // a file that has not changed since the stat takes one call (wasmtime reports `end`
        // only on an empty read, which would take a second).
        let want = (size + 1).saturating_sub(data.len() as u64).max(4096);
        let (chunk, end) = file.read(want, data.len() as u64).map_err(to_io)?;
        data.extend_from_slice(&chunk);
        if end || (chunk.len() as u64) < want {
            return Ok(data);
        }
    }
}

fn to_io(e: ErrorCode) -> io::Error {
    let kind = match e {
        ErrorCode::NoEntry => io::ErrorKind::NotFound,
        ErrorCode::Access | ErrorCode::NotPermitted => io::ErrorKind::PermissionDenied,
        ErrorCode::IsDirectory => io::ErrorKind::IsADirectory,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.message())
}
