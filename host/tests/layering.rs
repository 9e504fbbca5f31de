//! The host's modules form layers: no module reaches, through `crate::` paths, a module that
//! reaches it back. A cycle means two concerns that cannot change apart, so this test names
//! it (module by module) the moment it appears.
//!
//! Submodules count as their top-level module (`nn::batch` is `nn`); comments and tests are
//! left out, since a doc link or a test helper joins no concerns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `module -> modules it uses`, from every file under `host/src` but `main.rs` and `lib.rs`.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel.components().next().unwrap().as_os_str().to_string_lossy();
            let module = top.trim_end_matches(".rs").to_string();
            if module == "main" || module == "lib" || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let set = deps.entry(module.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let used: String = line[i + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !used.is_empty() && used != module {
                        set.insert(used);
                    }
                }
            }
        }
    }
    deps
}

/// A cycle through `from`, as the list of modules along it, if there is one.
fn cycle_through(from: &str, deps: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut path = vec![from.to_string()];
    let mut seen = BTreeSet::new();
    fn walk(
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
        deps: &BTreeMap<String, BTreeSet<String>>,
    ) -> bool {
        let here = path.last().unwrap().clone();
        for next in deps.get(&here).into_iter().flatten() {
            if *next == path[0] {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(path, seen, deps) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    walk(&mut path, &mut seen, deps).then_some(path)
}

#[test]
fn no_module_of_the_host_imports_in_a_circle() {
    let deps = uses();
    assert!(
        deps.contains_key("server") && deps["server"].contains("deployment"),
        "{deps:?}"
    );
    let cycles: Vec<String> = deps
        .keys()
        .filter_map(|m| cycle_through(m, &deps))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let deps: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        cycle_through("a", &deps),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(cycle_through("d", &deps), None);
}
