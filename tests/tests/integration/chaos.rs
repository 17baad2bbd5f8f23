//! The chaos harness's CI variant: `freeagent chaos` with about 200 builds, three
//! replicas and ten workers while replicas, workers, NATS and Postgres connections
//! fail. The harness checks the lease invariants itself and exits non-zero when one
//! breaks; this test runs it as a newcomer would and reads its verdict.

use std::process::Stdio;
use std::time::Duration;

use freeagent_tests::{freeagent_bin, postgres_base_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_builds_survive_kills_and_restarts_with_every_invariant() {
    let seed: u64 = std::env::var("FREEAGENT_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand_seed);
    let child = tokio::process::Command::new(freeagent_bin())
        .args(["chaos", "--builds", "200", "--workers", "10", "--replicas", "3", "--seed", &seed.to_string()])
        .env("DATABASE_URL", format!("{}/postgres", postgres_base_url()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("freeagent chaos starts");
    let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("the CI chaos run finishes within 5 minutes")
        .expect("freeagent chaos runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(output.status.success(), "an invariant broke (seed {seed}):\n{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("submitted 200, "), "{last}");
    assert!(last.ends_with(", lost 0, completed-twice 0, double-leased 0, stuck 0"), "{last}");
    let faults = stdout.lines().find(|l| l.starts_with("faults: ")).expect("a faults line");
    let body = faults.trim_start_matches("faults: ");
    for kind in ["replica kills", "worker kills", "NATS restarts", "Postgres cuts"] {
        let part = body.split(", ").find(|p| p.contains(kind)).unwrap_or_default();
        let count: u32 = part.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(count >= 1, "no {kind} happened: {faults}");
    }
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
}
