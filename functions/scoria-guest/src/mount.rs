//! Reading a mounted file (a model card, labels, a vocabulary) in a handful of host calls.
//!
//! A fresh instance reads its model card and labels on every request. Through `std::fs`
//! (wasi-libc) each file took an open, three stats, a stream and two reads, every one a trip
//! through the host's WASI plumbing; here it is one open, one stat and one read.

use std::io;
use wasip2::filesystem::preopens;
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

thread_local! {
    /// The component's mounts, asked for once per instance: a request reads several files.
    static MOUNTS: Vec<(Descriptor, String)> = preopens::get_directories();
}

/// The whole of the file at `path`, an absolute path under one of the component's `files`
/// destinations.
pub fn read(path: &str) -> io::Result<Vec<u8>> {
    let file = MOUNTS.with(|mounts| {
        // The mount whose destination is the longest prefix of `path`, and the rest of the path.
        let (dir, rel) = mounts
            .iter()
            .filter_map(|(dir, root)| {
                let rel = path.strip_prefix(root.trim_end_matches('/'))?.strip_prefix('/')?;
                Some((root.len(), dir, rel))
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, dir, rel)| (dir, rel))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no mount holds this path"))?;
        dir.open_at(
            PathFlags::SYMLINK_FOLLOW,
            rel,
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .map_err(to_io)
    })?;
    let size = file.stat().map_err(to_io)?.size;
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // Read the size the stat gave. A short read is not the end of the file: wasmtime hands
    // back at most 64 KiB per call (a vocabulary takes several) and reports the end only on
    // an empty read, which would cost every file one more call. Mounts are read-only, so the
    // size holds.
    while (data.len() as u64) < size {
        let (chunk, end) = file
            .read(size - data.len() as u64, data.len() as u64)
            .map_err(to_io)?;
        data.extend_from_slice(&chunk);
        if end || chunk.is_empty() {
            break;
        }
    }
    Ok(data)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &str) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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
