//! What a new user meets first: setup's detection of what the build loads (run against prepared
//! folders), the binary run from any folder with no environment, and manifests written by other
//! tools.

use crate::{bitplan, repo, stderr, stdout};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs `scripts/requirements --plan` with `root` as the file system root for libraries and only
/// `tools` (fake executables) on PATH; returns the apt packages it would install, sorted.
fn would_install(target: &str, root: &Path, tools: &[(&str, i32)]) -> Vec<String> {
    would_install_with(target, root, tools, &[])
}

/// The same, with extra environment variables.
fn would_install_with(
    target: &str,
    root: &Path,
    tools: &[(&str, i32)],
    env: &[(&str, &Path)],
) -> Vec<String> {
    let bin = root.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, code) in tools {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\nexit {code}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("/bin/bash")
        .arg(repo().join("scripts/requirements"))
        .args(["--plan", "--for", target, "--root"])
        .arg(root)
        .env_clear()
        .env("PATH", &bin)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut packages: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    packages.sort();
    packages.dedup();
    packages
}

fn touch(root: &Path, path: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b"").unwrap();
}

const ALL_TOOLS: &[(&str, i32)] = &[
    ("cmake", 0),
    ("c++", 0),
    ("python3", 0),
    ("chromium", 0),
    ("node", 0),
    ("npm", 0),
];

const HEADERS: &str = "usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h";

#[test]
fn setup_detects_libclang_as_bindgen_loads_it() {
    // Only libclang-cpp (what this Debian image ships): not what bindgen loads.
    let cpp_only = tempfile::tempdir().unwrap();
    touch(cpp_only.path(), "usr/lib/llvm-14/lib/libclang-cpp.so.14");
    touch(
        cpp_only.path(),
        "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
    );
    touch(cpp_only.path(), HEADERS);
    assert_eq!(
        would_install("build", cpp_only.path(), ALL_TOOLS),
        ["libclang-dev"]
    );

    // The runtime library libclang1-14 installs, with clang's builtin headers: nothing to do.
    let versioned = tempfile::tempdir().unwrap();
    touch(
        versioned.path(),
        "usr/lib/x86_64-linux-gnu/libclang-14.so.1",
    );
    touch(versioned.path(), HEADERS);
    assert_eq!(
        would_install("test", versioned.path(), ALL_TOOLS),
        ["postgresql"],
        "testing needs PostgreSQL's server programs"
    );
    // Debian's postgresql-15 puts them outside PATH; both must be executable.
    for tool in ["initdb", "pg_ctl"] {
        let p = versioned
            .path()
            .join("usr/lib/postgresql/15/bin")
            .join(tool);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(would_install("test", versioned.path(), ALL_TOOLS).is_empty());
    // The same library without the headers bindgen parses HiGHS's header with.
    let no_headers = tempfile::tempdir().unwrap();
    touch(no_headers.path(), "usr/lib/llvm-14/lib/libclang.so");
    assert_eq!(
        would_install("build", no_headers.path(), ALL_TOOLS),
        ["libclang-dev"]
    );

    // Nothing at all: every requirement, the browser tests' only when testing.
    let nothing = tempfile::tempdir().unwrap();
    assert_eq!(
        would_install("build", nothing.path(), &[]),
        ["cmake", "g++", "libclang-dev", "python3", "python3-pip"]
    );
    assert_eq!(
        would_install("test", nothing.path(), &[]),
        [
            "chromium",
            "cmake",
            "g++",
            "libclang-dev",
            "nodejs",
            "npm",
            "postgresql",
            "python3",
            "python3-pip"
        ]
    );
    // LIBCLANG_PATH naming the library file (clang-sys takes a file or a folder), with clang's
    // headers beside it, and LD_LIBRARY_PATH naming its folder: found outside the usual places.
    let elsewhere = tempfile::tempdir().unwrap();
    touch(elsewhere.path(), "llvm/lib/libclang.so.1");
    touch(elsewhere.path(), "llvm/lib/clang/17/include/stddef.h");
    let lib = elsewhere.path().join("llvm/lib/libclang.so.1");
    let dir = elsewhere.path().join("llvm/lib");
    for (var, value) in [("LIBCLANG_PATH", &lib), ("LD_LIBRARY_PATH", &dir)] {
        assert!(
            would_install_with(
                "build",
                nothing.path(),
                ALL_TOOLS,
                &[(var, value.as_path())]
            )
            .is_empty(),
            "{var}"
        );
    }
    // python3 whose `-m pip` fails: only pip.
    let mut no_pip = ALL_TOOLS.to_vec();
    no_pip[2] = ("python3", 1);
    assert_eq!(
        would_install("build", versioned.path(), &no_pip),
        ["python3-pip"]
    );
}

/// `exe evaluate` of the digits fixture at `bits`, run in `cwd` without BITPLAN_ORT_LIB.
fn evaluate_digits(exe: &Path, bits: &Path, cwd: &Path) -> std::process::Output {
    Command::new(exe)
        .args(["evaluate", "--format", "json", "--bits"])
        .arg(bits)
        .arg(repo().join("examples/digits-cnn.manifest.json"))
        .arg("--model")
        .arg(repo().join("testdata/digits-cnn/digits_cnn.onnx"))
        .arg("--data")
        .arg(repo().join("testdata/digits-cnn/digits_val.npz"))
        .current_dir(cwd)
        .env_remove("BITPLAN_ORT_LIB")
        .output()
        .unwrap()
}

#[test]
fn the_binary_finds_onnx_runtime_from_any_folder() {
    let elsewhere = tempfile::tempdir().unwrap();
    let bits = elsewhere.path().join("bits.json");
    std::fs::write(&bits, r#"{"conv1": 8, "conv2": 3, "fc1": 4, "fc2": 8}"#).unwrap();
    let out = evaluate_digits(
        Path::new(env!("CARGO_BIN_EXE_bitplan")),
        &bits,
        elsewhere.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let accuracy = v["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9, "{v}");

    // With no library anywhere it looks, the error lists every place.
    let lonely = elsewhere.path().join("bin/bitplan");
    std::fs::create_dir_all(lonely.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_bitplan"), &lonely).unwrap();
    let out = evaluate_digits(&lonely, &bits, &repo());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("ONNX Runtime library not found"), "{err}");
    assert!(
        err.contains(
            &elsewhere
                .path()
                .join("bin/libonnxruntime.so")
                .display()
                .to_string()
        ) && err.contains("scripts/setup fetches it"),
        "{err}"
    );
}

#[test]
fn manifests_from_other_tools_plan_with_warnings_and_typos_fail() {
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra.json");
    std::fs::write(
        &extra,
        r#"{"name": "m", "bits": [8, 4], "layers": [
            {"name": "a", "params": 100, "macs": 1000, "hessian_trace": 2.0, "hessian_trace_stderr": 0.0075,
             "op": "Conv", "shape": [4, 25], "source": "pyhessian"},
            {"name": "b", "params": 50, "macs": 500, "hessian_trace": 1.0}]}"#,
    )
    .unwrap();
    let path = extra.to_str().unwrap();
    let out = bitplan(&["plan", path, "--max-avg-bits", "6", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("hessian_trace_stderr"), "{err}");
    for field in ["op", "shape", "source"] {
        assert!(
            err.contains(&format!("layers[0].{field}: unknown field, ignored")),
            "{err}"
        );
    }
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let paths: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["layers[0].op", "layers[0].shape", "layers[0].source"]
    );

    let typo = dir.path().join("typo.json");
    std::fs::write(
        &typo,
        r#"{"name": "m", "bits": [8, 4], "layers": [
            {"name": "a", "params": 100, "macs": 1000, "hessian_trace": 2.0},
            {"name": "b", "params": 100, "macs": 1000, "hessian_trace": 2.0},
            {"name": "c", "params": 100, "macs": 1000, "hessian_trace": 2.0},
            {"name": "d", "params": 50, "macs": 500, "hesian_trace": 1.0}]}"#,
    )
    .unwrap();
    let out = bitplan(&["plan", typo.to_str().unwrap(), "--max-avg-bits", "6"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("layers[3].hesian_trace: unknown field; did you mean hessian_trace?"),
        "{}",
        stderr(&out)
    );
}
