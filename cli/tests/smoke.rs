//! The `freeagent` binary starts and documents its settings. (This file also
//! makes `cargo test` build the binary the end-to-end tests drive.)

use std::process::Command;

fn freeagent(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_freeagent")).args(args).output().expect("the binary runs");
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn help_lists_every_command() {
    let help = freeagent(&["--help"]);
    for command in [
        "serve", "migrate", "bench", "worker", "demo", "submit", "status", "logs", "download", "cancel", "retry",
        "list", "workers",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn serve_help_names_every_setting_variable() {
    let help = freeagent(&["serve", "--help"]);
    for variable in [
        "DATABASE_URL",
        "NATS_URL",
        "HOST",
        "PORT",
        "CONTROLLER_API_KEY",
        "BASE_IMAGE_ID",
        "FREEAGENT_DATA_DIR",
        "FREEAGENT_BLOB_URL",
        "FREEAGENT_NAMESPACE",
        "FREEAGENT_LEASE_TTL_SECS",
        "FREEAGENT_MAX_BUILD_SECS",
        "FREEAGENT_MAX_ATTEMPTS",
        "FREEAGENT_ROLE",
    ] {
        assert!(help.contains(variable), "{variable} missing from serve --help");
    }
}
