//! Finding the ONNX Runtime shared library (shared by the CLI and the service).
//!
//! The lookup depends on where the binary is, never on the working directory, so `bitplan` run
//! from any folder finds the library that `scripts/setup` put beside the checkout it was built in.

use std::path::{Path, PathBuf};

/// The library's file name.
const LIBRARY: &str = "libonnxruntime.so";

/// The library: `given` (`--ort-lib`, or `BITPLAN_ORT_LIB` through clap), else `libonnxruntime.so`
/// beside the executable, else the newest `.cache/onnxruntime-*/libonnxruntime.so` of the bitplan
/// checkout the executable sits in (a folder above it with `Cargo.toml` and `scripts/setup`: a
/// checkout's `target/release/bitplan` finds the checkout's `.cache/`; folders that are not a
/// checkout, such as a home directory, are not searched). The error lists every place looked at.
pub fn ort_library(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().map_err(|e| {
        format!("ONNX Runtime library not found: the executable's path is unknown ({e}); pass --ort-lib or set BITPLAN_ORT_LIB")
    })?;
    let places = places_beside(&exe);
    places.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let looked: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
        format!(
            "ONNX Runtime library not found: no --ort-lib, no BITPLAN_ORT_LIB, and none of: {} \
             (scripts/setup fetches it into the checkout's .cache/)",
            looked.join(", ")
        )
    })
}

/// Where to look for the library, in order, for an executable at `exe`.
fn places_beside(exe: &Path) -> Vec<PathBuf> {
    let Some(dir) = exe.parent() else {
        return Vec::new();
    };
    let mut places = vec![dir.join(LIBRARY)];
    let checkouts = dir
        .ancestors()
        .filter(|a| a.join("Cargo.toml").is_file() && a.join("scripts/setup").is_file());
    for ancestor in checkouts {
        let cache = ancestor.join(".cache");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("onnxruntime-"))
            .map(|e| e.path().join(LIBRARY))
            .collect();
        // Newest version first (onnxruntime-1.32.0 before onnxruntime-1.9.0).
        found.sort_by_key(|p| std::cmp::Reverse(version_of(p)));
        if found.is_empty() {
            places.push(cache.join("onnxruntime-*").join(LIBRARY));
        }
        places.extend(found);
    }
    places
}

/// The numeric version of a `.cache/onnxruntime-X.Y.Z/` folder, for ordering.
fn version_of(library: &Path) -> Vec<u64> {
    library
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("onnxruntime-"))
        .map(|v| v.split('.').map(|p| p.parse().unwrap_or(0)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_beside_the_executable_then_in_its_ancestors_caches() {
        let root = tempfile::tempdir().unwrap();
        let exe = root.path().join("checkout/target/release/bitplan");
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        // Not a checkout yet: its .cache is not searched.
        let lib = root
            .path()
            .join("checkout/.cache/onnxruntime-1.32.0")
            .join(LIBRARY);
        std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
        std::fs::write(&lib, b"").unwrap();
        assert_eq!(places_beside(&exe), [exe.parent().unwrap().join(LIBRARY)]);
        std::fs::create_dir_all(root.path().join("checkout/scripts")).unwrap();
        std::fs::write(root.path().join("checkout/scripts/setup"), b"").unwrap();
        std::fs::write(root.path().join("checkout/Cargo.toml"), b"").unwrap();
        for v in ["1.9.0", "1.32.0"] {
            let dir = root.path().join(format!("checkout/.cache/onnxruntime-{v}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(LIBRARY), b"").unwrap();
        }
        let places = places_beside(&exe);
        assert_eq!(
            places[0],
            root.path().join("checkout/target/release").join(LIBRARY)
        );
        let found: Vec<&PathBuf> = places.iter().filter(|p| p.is_file()).collect();
        assert_eq!(
            found,
            [
                &root
                    .path()
                    .join("checkout/.cache/onnxruntime-1.32.0")
                    .join(LIBRARY),
                &root
                    .path()
                    .join("checkout/.cache/onnxruntime-1.9.0")
                    .join(LIBRARY),
            ]
        );
    }
}
