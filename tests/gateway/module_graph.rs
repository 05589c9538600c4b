//! The seams between modules, read from the source: the HSM layer is a provider beneath the
//! core and must not reach up into it. `hsm` imports neither `kms` (the KMS decisions and the
//! ciphertext format) nor `telemetry` nor the HTTP edge (`wire`, `api`, `listener`): metrics
//! observe its calls through `hsm::CallObserver`, implemented on the telemetry side.
//! Nor does it name the core's error type: it answers `hsm::ProviderError`, which the core
//! maps. The core reaches the HSM through `hsm::KeyProvider`, not the concrete `Hsm` or
//! either of its two material locators. And
//! errors are types, not strings: no `Result<_, String>` in `src/`.
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, at any depth.
fn rust_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines of a file without their `//` comments, numbered from 1.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.split("//").next().unwrap_or("").to_string()))
        .collect()
}

/// Every `crate::<module>` path in code (not in comments) of the files under `dir`.
fn crate_paths_under(dir: &Path, module: &str) -> Vec<String> {
    let needle = format!("crate::{module}");
    let mut found = Vec::new();
    for path in rust_files_under(dir) {
        for (n, code) in code_lines(&path) {
            let uses =
                code.contains(&format!("{needle}::")) || code.contains(&format!("{needle};"));
            if uses || code.trim_start().starts_with(&format!("use {needle}")) {
                found.push(format!("{}:{n}: {}", path.display(), code.trim()));
            }
        }
    }
    found
}

/// The generic arguments of each `Result<...>` in `code`, split at top-level commas.
fn result_arguments(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(start) = rest.find("Result<") {
        let inner = &rest[start + "Result<".len()..];
        let (mut depth, mut arguments, mut current) = (1usize, Vec::new(), String::new());
        for c in inner.chars() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => depth -= 1,
                ',' if depth == 1 => {
                    arguments.push(current.trim().to_string());
                    current.clear();
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                break;
            }
            current.push(c);
        }
        arguments.push(current.trim().to_string());
        found.push(arguments);
        rest = inner;
    }
    found
}

#[test]
fn the_hsm_layer_imports_nothing_from_the_core_telemetry_or_the_http_edge() {
    let hsm = crate::common::repository_root().join("src/hsm");
    for module in [
        "kms",
        "telemetry",
        "wire",
        "api",
        "listener",
        "server",
        "error",
    ] {
        let found = crate_paths_under(&hsm, module);
        assert!(
            found.is_empty(),
            "src/hsm uses crate::{module}:\n{}",
            found.join("\n")
        );
    }
}

/// Code lines (not comments) of the files under `dir` that name the type `name` as a whole
/// word, except in the files `allowed` (paths relative to `dir`).
fn type_uses_under(dir: &Path, name: &str, allowed: &[&str]) -> Vec<String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let relative = path
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if path.extension().is_none_or(|e| e != "rs") || allowed.contains(&relative.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let named = code.match_indices(name).any(|(at, _)| {
                let before = code[..at].chars().next_back();
                let after = code[at + name.len()..].chars().next();
                !before.is_some_and(is_word) && !after.is_some_and(is_word)
            });
            if named {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_core_reaches_the_hsm_through_the_provider_trait() {
    let kms = crate::common::repository_root().join("src/kms");
    // The domain-key commands (`p11kms domain create | rotate`) run on a token the CLI
    // opened itself, outside any request; start-up picks the provider (token objects or
    // domain-wrapped) there too.
    for name in ["Hsm", "TokenMaterials", "DomainWrapped"] {
        let found = type_uses_under(&kms, name, &["domain.rs"]);
        assert!(
            found.is_empty(),
            "src/kms names the concrete provider {name}:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn no_function_in_src_returns_a_string_as_its_error() {
    let src = crate::common::repository_root().join("src");
    // The fuzz harnesses are tools, not the service (the benchmark is a crate of its own).
    let exempt = [src.join("fuzzing")];
    let mut found = Vec::new();
    for path in rust_files_under(&src) {
        if exempt.iter().any(|dir| path.starts_with(dir)) {
            continue;
        }
        for (n, code) in code_lines(&path) {
            if result_arguments(&code)
                .iter()
                .any(|arguments| arguments.len() == 2 && arguments[1] == "String")
            {
                found.push(format!("{}:{n}: {}", path.display(), code.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "errors as strings (use a thiserror enum):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_string_error_scan_reads_nested_results() {
    assert_eq!(
        result_arguments("fn f() -> Result<Result<Key, String>, KmsError> {"),
        vec![
            vec!["Result<Key, String>".to_string(), "KmsError".to_string()],
            vec!["Key".to_string(), "String".to_string()],
        ]
    );
    assert_eq!(
        result_arguments("type R = Result<(Vec<u8>, u8), String>;"),
        vec![vec!["(Vec<u8>, u8)".to_string(), "String".to_string()]]
    );
}
