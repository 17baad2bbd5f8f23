//! The `freeagent` CLI and reference worker as processes against a controller.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use freeagent_tests::{TestApp, eventually, freeagent_bin, spawn_app, spawn_app_with};

struct Cli<'a> {
    app: &'a TestApp,
    config: tempfile::TempDir,
}

impl<'a> Cli<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self { app, config: tempfile::tempdir().unwrap() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(freeagent_bin());
        command
            .args(args)
            .arg("--url")
            .arg(&self.app.url)
            .env("FREEAGENT_CONFIG_DIR", self.config.path())
            .env_remove("EXPO_CONTROLLER_URL")
            .env_remove("EXPO_CONTROLLER_API_KEY")
            .env_remove("CONTROLLER_API_KEY")
            .env("FREEAGENT_DATA_DIR", self.config.path().join("no-data"));
        command
    }

    async fn run(&self, args: &[&str], with_key: bool) -> Output {
        let mut command = self.command(args);
        if with_key {
            command.arg("--api-key").arg(&self.app.key);
        }
        // Async: the controller under test runs on this same runtime.
        tokio::process::Command::from(command).output().await.unwrap()
    }
}

fn worker(app: &TestApp, name: &str, script: &str, marker: &Path) -> Child {
    Command::new(freeagent_bin())
        .args(["worker", "--url", &app.url, "--api-key", &app.key, "--name", name, "--platform", "android"])
        .args(["--build-command", script, "--artifact", "dist/*.apk", "--heartbeat-secs", "1", "--poll-wait-secs", "2"])
        .env("MARKER_DIR", marker)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn sample_project(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.json"), br#"{"expo":{"name":"sample"}}"#).unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/App.js"), b"export default () => null;\n").unwrap();
    std::fs::write(dir.path().join("build.sh"), script).unwrap();
    std::fs::create_dir_all(dir.path().join("node_modules/big")).unwrap();
    std::fs::write(dir.path().join("node_modules/big/index.js"), b"ignored").unwrap();
    std::fs::write(dir.path().join(".gitignore"), b"node_modules/\n").unwrap();
    dir
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn submitted_id(output: &Output) -> String {
    assert!(output.status.success(), "submit failed: {}", String::from_utf8_lossy(&output.stderr));
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn wait_status(app: &TestApp, id: &str, status: &str, limit: Duration) -> bool {
    eventually(limit, || async { (app.stored_status(id).await == status).then_some(()) }).await.is_some()
}

const BUILD: &str =
    "#!/bin/sh\nset -e\necho building $BUILD_ID\nmkdir -p dist\ncat app.json src/App.js > dist/app.apk\necho done\n";

#[tokio::test]
async fn two_workers_build_a_submitted_project_and_the_artifact_downloads_identical() {
    let app = spawn_app().await;
    let marker = tempfile::tempdir().unwrap();
    let mut workers =
        [worker(&app, "w1", "sh build.sh", marker.path()), worker(&app, "w2", "sh build.sh", marker.path())];
    let project = sample_project(BUILD);
    let cli = Cli::new(&app);
    let id = submitted_id(
        &cli.run(&["submit", project.path().to_str().unwrap(), "--platform", "android", "--json"], true).await,
    );
    assert!(wait_status(&app, &id, "completed", Duration::from_secs(60)).await, "completed");
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("app.apk");
    let download = cli.run(&["download", &id, "-o", target.to_str().unwrap()], true).await;
    assert!(download.status.success(), "{}", String::from_utf8_lossy(&download.stderr));
    let expected = [
        std::fs::read(project.path().join("app.json")).unwrap(),
        std::fs::read(project.path().join("src/App.js")).unwrap(),
    ]
    .concat();
    assert_eq!(std::fs::read(&target).unwrap(), expected, "byte-identical to what the build script made");
    // The build token was kept: status works without the key.
    let status = cli.run(&["status", &id, "--json"], false).await;
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(stdout(&status).contains("\"completed\""));
    let logs = cli.run(&["logs", &id], false).await;
    assert!(stdout(&logs).contains(&format!("building {id}")));
    // node_modules stayed out of the upload.
    let source = app
        .admin(reqwest::Method::GET, &format!("/api/builds/{id}/download/source"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let names: Vec<String> = zip::ZipArchive::new(std::io::Cursor::new(source.to_vec()))
        .unwrap()
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("node_modules")), "{names:?}");
    for w in &mut workers {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(w.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let id = w.id();
        eventually(Duration::from_secs(20), || async { (!pid_alive(&id.to_string())).then_some(()) }).await;
        let _ = w.wait();
    }
    let offline: i64 = sqlx::query_scalar("SELECT count(*) FROM workers WHERE status = 'offline'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(offline, 2, "both unregistered on SIGTERM");
    app.stop().await;
}

fn pid_alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
}

const SLOW: &str = "#!/bin/sh\necho $$ > \"$MARKER_DIR/$BUILD_ID.pid\"\necho waiting\nsleep 60\nmkdir -p dist\necho late > dist/app.apk\n";

#[tokio::test]
async fn cancelling_mid_build_stops_the_build_process_within_five_seconds() {
    let app = spawn_app().await;
    let marker = tempfile::tempdir().unwrap();
    let mut w = worker(&app, "w1", "sh build.sh", marker.path());
    let project = sample_project(SLOW);
    let cli = Cli::new(&app);
    let id = submitted_id(
        &cli.run(&["submit", project.path().to_str().unwrap(), "--platform", "android", "--json"], true).await,
    );
    let pid_file = marker.path().join(format!("{id}.pid"));
    let pid = eventually(Duration::from_secs(30), || async {
        std::fs::read_to_string(&pid_file).ok().map(|p| p.trim().to_owned())
    })
    .await
    .expect("the build started");
    assert!(pid_alive(&pid));
    let cancel = cli.run(&["cancel", &id], false).await;
    assert!(cancel.status.success(), "{}", String::from_utf8_lossy(&cancel.stderr));
    let cancelled = std::time::Instant::now();
    let stopped = eventually(Duration::from_secs(5), || async { (!pid_alive(&pid)).then_some(()) }).await;
    assert!(stopped.is_some(), "the build process still runs {:?} after the cancel", cancelled.elapsed());
    let _ = w.kill();
    let _ = w.wait();
    app.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_build_loses_the_build_to_another_worker() {
    let app = spawn_app_with(|s| {
        s.lease.lease_ttl_secs = 2;
        s.lease.reaper_interval_ms = 200;
    })
    .await;
    let marker = tempfile::tempdir().unwrap();
    let script = "#!/bin/sh\necho $$ > \"$MARKER_DIR/$BUILD_ID.$WORKER.pid\"\nsleep 2\nmkdir -p dist\necho \"built by $WORKER\" > dist/app.apk\n";
    let project = sample_project(script);
    let cli = Cli::new(&app);
    let mut first = Command::new(freeagent_bin())
        .args(["worker", "--url", &app.url, "--api-key", &app.key, "--name", "first", "--platform", "android"])
        .args(["--build-command", "WORKER=first sh build.sh", "--artifact", "dist/*.apk", "--heartbeat-secs", "1"])
        .env("MARKER_DIR", marker.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = submitted_id(
        &cli.run(&["submit", project.path().to_str().unwrap(), "--platform", "android", "--json"], true).await,
    );
    let first_pid = marker.path().join(format!("{id}.first.pid"));
    eventually(Duration::from_secs(30), || async { first_pid.exists().then_some(()) })
        .await
        .expect("first worker started");
    first.kill().unwrap();
    let _ = first.wait();
    let mut second = Command::new(freeagent_bin())
        .args(["worker", "--url", &app.url, "--api-key", &app.key, "--name", "second", "--platform", "android"])
        .args(["--build-command", "WORKER=second sh build.sh", "--artifact", "dist/*.apk", "--heartbeat-secs", "1"])
        .env("MARKER_DIR", marker.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_status(&app, &id, "completed", Duration::from_secs(60)).await, "completed by the other worker");
    let artifact = app
        .admin(reqwest::Method::GET, &format!("/api/builds/{id}/download"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(artifact, "built by second\n");
    second.kill().unwrap();
    let _ = second.wait();
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_message_a_nonzero_exit_and_writes_nothing() {
    let app = spawn_app().await;
    let cli = Cli::new(&app);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("never.apk");
    let cases: Vec<(Vec<&str>, bool, i32, &str)> = vec![
        (vec!["submit", "/no/such/project"], true, 2, "cannot read /no/such/project"),
        (vec!["status", "AAAAAAAAAAAAAAAAAAAAA"], true, 3, "Build not found"),
        (vec!["download", "AAAAAAAAAAAAAAAAAAAAA", "-o", target.to_str().unwrap()], true, 3, "Build not found"),
        (vec!["status", "AAAAAAAAAAAAAAAAAAAAA"], false, 4, "not authorized"),
    ];
    for (args, with_key, code, message) in cases {
        let output = cli.run(&args, with_key).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message) && stderr.contains("hint:"), "{args:?}: {stderr}");
    }
    let mut wrong = cli.command(&["list"]);
    wrong.arg("--api-key").arg("wrong-wrong-wrong-wrong");
    let wrong = tokio::process::Command::from(wrong).output().await.unwrap();
    assert_eq!(wrong.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("check the API key"));
    let unreachable = tokio::process::Command::new(freeagent_bin())
        .args(["list", "--url", "http://127.0.0.1:9", "--api-key", "whatever-whatever-1"])
        .env("FREEAGENT_CONFIG_DIR", cli.config.path())
        .output()
        .await
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach the controller"));
    assert!(!target.exists(), "nothing written");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "no partial file");
    assert_eq!(app.build_rows().await, 0);
    app.stop().await;
}
