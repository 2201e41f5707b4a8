//! Finding the ONNX Runtime shared library (shared by the CLI and the service).

use std::path::{Path, PathBuf};

/// The library: the given path, else `libonnxruntime.so` beside the binary, else the newest of
/// `.cache/onnxruntime-*/` in the working directory (where scripts/setup puts it).
pub fn ort_library(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("libonnxruntime.so"));
    }
    if let Ok(entries) = std::fs::read_dir(".cache") {
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("libonnxruntime.so"))
            .collect();
        found.sort();
        candidates.extend(found.into_iter().rev());
    }
    candidates.into_iter().find(|p| p.exists()).ok_or_else(|| {
        "ONNX Runtime library not found: pass --ort-lib or set BITPLAN_ORT_LIB \
         (scripts/setup fetches it into .cache/)"
            .to_string()
    })
}
