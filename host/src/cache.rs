//! On-disk cache of compiled components, so a restart or a new pod skips Cranelift.
//!
//! An entry is keyed by the component's sha256 and by the engine's compatibility hash (wasmtime
//! version, target, and every setting that changes code generation), so a stale or foreign
//! artefact is never loaded. `scoria compile` fills the cache ahead of time, for images.

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept. Only the host writes here; its contents are trusted
/// native code, which is why the folder must not be writable by anyone else.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// A compiled component and where it came from.
pub struct Compiled {
    pub component: Component,
    /// sha256 of the component's bytes, hex.
    pub digest: String,
    /// Whether it was loaded from the cache rather than compiled now.
    pub cached: bool,
}

impl CompileCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Compile `bytes`, or load the artefact a previous run cached for the same bytes and engine.
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> anyhow::Result<Compiled> {
        let digest = hex::encode(Sha256::digest(bytes));
        let path = self.path(engine, &digest);
        if path.is_file() {
            // SAFETY: the file was written by `Component::serialize` for this engine's
            // configuration (the key includes its compatibility hash), into a folder only the
            // host writes; wasmtime also checks the header before using it.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    return Ok(Compiled {
                        component,
                        digest,
                        cached: true,
                    });
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable cache entry")
                }
            }
        }
        let component = compile_uncached(engine, bytes)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "cannot write the compile cache");
        }
        Ok(Compiled {
            component,
            digest,
            cached: false,
        })
    }

    fn path(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let bytes = component.serialize().map_err(anyhow::Error::from)?;
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }
}

/// Compile without any cache.
pub fn compile_uncached(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    Component::new(engine, bytes).map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The smallest component: no imports, no exports.
    const EMPTY: &str = "(component)";

    #[test]
    fn second_compile_comes_from_the_cache() {
        let engine = Engine::default();
        let bytes = wat::parse_str(EMPTY).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path());
        let first = cache.compile(&engine, &bytes).unwrap();
        assert!(!first.cached);
        let second = cache.compile(&engine, &bytes).unwrap();
        assert!(second.cached);
        assert_eq!(first.digest, second.digest);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_corrupt_entry_is_recompiled() {
        let engine = Engine::default();
        let bytes = wat::parse_str(EMPTY).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path());
        cache.compile(&engine, &bytes).unwrap();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::write(e.unwrap().path(), b"garbage").unwrap();
        }
        let again = cache.compile(&engine, &bytes).unwrap();
        assert!(!again.cached);
    }
}

/// Cranelift's per-function cache, in memory: a rebuilt component whose functions mostly did
/// not change compiles only the ones that did, so a hot swap after a small edit (or of the
/// same code with new bytes) skips most of Cranelift. Cleared when it passes [`Self::LIMIT`].
#[derive(Debug, Default)]
pub struct FunctionCache {
    entries: std::sync::Mutex<FunctionEntries>,
}

#[derive(Debug, Default)]
struct FunctionEntries {
    map: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl FunctionCache {
    /// Most bytes kept; a few versions of the example functions take tens of MB.
    pub const LIMIT: usize = 512 << 20;
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.map.get(key).map(|v| std::borrow::Cow::Owned(v.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.bytes + key.len() + value.len() > Self::LIMIT {
            e.map.clear();
            e.bytes = 0;
        }
        e.bytes += key.len() + value.len();
        e.map.insert(key.to_vec(), value);
        true
    }
}
