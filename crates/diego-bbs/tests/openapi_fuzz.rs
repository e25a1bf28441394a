//! The API document is exact: requests generated from `/openapi.json` by a property-based
//! fuzzer (schemathesis) are never refused when the document says they are valid (only
//! 404/409/412, state reasons, are allowed), never answered with a 5xx, and every response
//! conforms to the document.
//!
//! schemathesis is a Python tool from PyPI; `scripts/install-packages` installs it (as root)
//! into `/opt/schemathesis`. Without root the test skips, saying why; as root a missing
//! install fails it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where `scripts/install-packages` puts schemathesis; `DIEGO_SCHEMATHESIS` overrides it.
const DEFAULT_ST: &str = "/opt/schemathesis/bin/st";

fn schemathesis() -> Option<PathBuf> {
    let st = std::env::var_os("DIEGO_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ST));
    if st.is_file() {
        return Some(st);
    }
    if diego_testkit::host::is_root() {
        panic!(
            "{} is missing: scripts/install-packages installs schemathesis (as root)",
            st.display()
        );
    }
    println!(
        "SKIPPED openapi fuzz: {} is missing (scripts/install-packages installs it as root)",
        st.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_generated_from_the_document_are_accepted_and_answered_as_documented() {
    let Some(st) = schemathesis() else { return };
    let s = common::start().await;
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let out = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", s.url)])
        // The event streams never end; tests/events.rs covers them.
        .args(["--exclude-path-regex", "^/v1/events/"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,positive_data_acceptance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: schemathesis' coverage phase can exhaust a worker thread's recursion
        // on the recursive action schema.
        .args(["--workers", "1"])
        .args([
            "--max-examples",
            "50",
            "--request-timeout",
            "30",
            "--max-failures",
            "50",
        ])
        .arg("--continue-on-failure")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout.lines().rev().find(|l| l.starts_with('=')).unwrap_or("");
    println!("schemathesis: {summary}");
    assert!(
        out.status.success(),
        "schemathesis found requests the document allows that the server refused, 5xx \
         answers or responses that break the document:\n{stdout}\n{stderr}"
    );
    // Every operation was exercised but the event streams and the document itself (which
    // schemathesis reads rather than tests).
    let doc: serde_json::Value = s.get("/openapi.json").await.1;
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| !path.starts_with("/v1/events/") && *path != "/openapi.json")
        .map(|(_, ops)| ops.as_object().unwrap().len())
        .sum();
    assert!(
        stdout.contains(&format!("Tested: {operations}")),
        "expected {operations} operations tested:\n{stdout}"
    );
}
