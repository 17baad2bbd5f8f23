use freeagent_tests::spawn_app;
use reqwest::Method;
use serde_json::Value;

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn status_has_the_cli_fields_with_ms_timestamps_and_nulls() {
    let app = spawn_app().await;
    let (id, _) = app.submit_ok(b"zip").await;
    let (status, body) = json(app.admin(Method::GET, &format!("/api/builds/{id}/status")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["status"], "pending");
    assert_eq!(body["platform"], "ios");
    assert!(body["worker_id"].is_null());
    assert!(body["submitted_at"].is_i64());
    assert!(body["started_at"].is_null());
    assert!(body["completed_at"].is_null());
    assert!(body["error_message"].is_null());

    app.insert_worker("w1", "Mac", "idle").await;
    app.lease_to(&id, "w1").await;
    let (_, body) = json(app.admin(Method::GET, &format!("/api/builds/{id}/status")).send().await.unwrap()).await;
    assert_eq!(body["status"], "assigned");
    assert_eq!(body["worker_id"], "w1");
    assert!(body["started_at"].as_i64().unwrap() >= body["submitted_at"].as_i64().unwrap());
    app.stop().await;
}

#[tokio::test]
async fn build_routes_accept_the_key_or_that_builds_token_only() {
    let app = spawn_app().await;
    let (a, token_a) = app.submit_ok(b"a").await;
    let (b, token_b) = app.submit_ok(b"b").await;
    for route in ["status", "logs"] {
        let path = format!("/api/builds/{a}/{route}");
        let cases: Vec<(reqwest::RequestBuilder, u16, Option<&str>)> = vec![
            (app.anon(Method::GET, &path), 401, Some("Missing X-API-Key or X-Build-Token header")),
            (app.anon(Method::GET, &path).header("X-API-Key", "wrong-wrong-wrong-wrong"), 403, Some("Invalid API key")),
            (
                app.anon(Method::GET, &path).header("X-Build-Token", &token_b),
                403,
                Some("Invalid or expired build token"),
            ),
            (
                app.anon(Method::GET, &path).header("X-Build-Token", "garbage"),
                403,
                Some("Invalid or expired build token"),
            ),
            (app.anon(Method::GET, &path).header("X-Build-Token", &token_a), 200, None),
            (app.admin(Method::GET, &path), 200, None),
            // The original CLI sends a wrong-or-stale key and the token: the token wins.
            (
                app.anon(Method::GET, &path)
                    .header("X-API-Key", "stale-stale-stale-stale")
                    .header("X-Build-Token", &token_a),
                200,
                None,
            ),
            (app.admin(Method::GET, &path).header("X-Build-Token", &token_b), 200, None),
        ];
        for (request, status, message) in cases {
            let (got, body) = json(request.send().await.unwrap()).await;
            assert_eq!(got, status, "{route}: {body}");
            if let Some(message) = message {
                assert_eq!(body["error"], message);
            }
        }
    }
    // Token of build b on b works; unknown builds are 404 for key and token alike.
    let response = app
        .anon(Method::GET, &format!("/api/builds/{b}/status"))
        .header("X-Build-Token", &token_b)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for path in [
        "/api/builds/AAAAAAAAAAAAAAAAAAAAA/status",
        "/api/builds/..%2F..%2Fetc%2Fpasswd/status",
        "/api/builds/a%20b/logs",
    ] {
        let (status, body) = json(app.admin(Method::GET, path).send().await.unwrap()).await;
        assert_eq!((status, body["error"].as_str()), (404, Some("Build not found")), "{path}");
        let (status, _) =
            json(app.anon(Method::GET, path).header("X-Build-Token", &token_a).send().await.unwrap()).await;
        assert_eq!(status, 404, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_list_is_a_bare_array_newest_first() {
    let app = spawn_app().await;
    let (first, _) = app.submit_ok(b"1").await;
    let (second, _) = app.submit_ok(b"2").await;
    app.insert_worker("w1", "Mac", "idle").await;
    app.lease_to(&first, "w1").await;
    app.complete_with(&first, b"ipa").await;
    let (status, body) = json(app.admin(Method::GET, "/api/builds").send().await.unwrap()).await;
    assert_eq!(status, 200);
    let items = body.as_array().expect("a bare array");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], second.as_str());
    assert_eq!(items[1]["id"], first.as_str());
    assert_eq!(items[1]["status"], "completed");
    let created = items[0]["createdAt"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok() && created.ends_with('Z') && created.len() == 24,
        "{created}"
    );
    assert!(items[0].get("completedAt").is_none(), "omitted while unset");
    assert!(items[1]["completedAt"].is_string());

    let (_, body) = json(app.admin(Method::GET, "/api/builds?limit=1").send().await.unwrap()).await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    let (status, _) = json(app.admin(Method::GET, "/api/builds?limit=0").send().await.unwrap()).await;
    assert_eq!(status, 400);
    let (status, _) = json(app.anon(Method::GET, "/api/builds").send().await.unwrap()).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn active_builds_carry_the_assignment_time_in_ms() {
    let app = spawn_app().await;
    let (leased, _) = app.submit_ok(b"1").await;
    app.submit_ok(b"2").await;
    app.insert_worker("w1", "Mac", "idle").await;
    app.lease_to(&leased, "w1").await;
    let (status, body) = json(app.admin(Method::GET, "/api/builds/active").send().await.unwrap()).await;
    assert_eq!(status, 200);
    let builds = body["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0]["id"], leased.as_str());
    assert_eq!(builds[0]["status"], "assigned");
    assert_eq!(builds[0]["platform"], "ios");
    assert_eq!(builds[0]["worker_id"], "w1");
    assert!(builds[0]["started_at"].is_i64());
    let (status, _) = json(app.anon(Method::GET, "/api/builds/active").send().await.unwrap()).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn logs_are_returned_whole_in_insertion_order() {
    let app = spawn_app().await;
    let (id, token) = app.submit_ok(b"zip").await;
    let build = dispatcher::model::BuildId::parse(&id).unwrap();
    for i in 0..250 {
        let level = if i % 50 == 0 { dispatcher::model::LogLevel::Warn } else { dispatcher::model::LogLevel::Info };
        dispatcher::store::logs::append(app.pool(), &build, level, &format!("line {i}")).await.unwrap();
    }
    let (status, body) = json(
        app.anon(Method::GET, &format!("/api/builds/{id}/logs")).header("X-Build-Token", &token).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["build_id"], id.as_str());
    let logs = body["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 251, "no default limit");
    assert_eq!(logs[0]["message"], "Build submitted");
    assert_eq!(logs[0]["level"], "info");
    assert!(logs[0]["timestamp"].is_i64());
    for (i, line) in logs[1..].iter().enumerate() {
        assert_eq!(line["message"], format!("line {i}"));
    }
    assert_eq!(logs[1]["level"], "warn");
    app.stop().await;
}

#[tokio::test]
async fn download_streams_the_artifact_of_a_completed_build_only() {
    let app = spawn_app().await;
    let (id, token) = app.submit_ok(b"zip").await;
    let path = format!("/api/builds/{id}/download");
    let (status, body) = json(app.admin(Method::GET, &path).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("Build not completed")));

    app.insert_worker("w1", "Mac", "idle").await;
    app.lease_to(&id, "w1").await;
    let artifact: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    app.complete_with(&id, &artifact).await;
    for request in [app.admin(Method::GET, &path), app.anon(Method::GET, &path).header("X-Build-Token", &token)] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/octet-stream");
        assert_eq!(response.headers()["content-disposition"], format!("attachment; filename=\"{id}.ipa\"").as_str());
        assert_eq!(response.headers()["content-length"], artifact.len().to_string().as_str());
        assert_eq!(response.bytes().await.unwrap().as_ref(), artifact.as_slice());
    }
    // The stored result vanished: 404, not a broken stream.
    sqlx::query("UPDATE builds SET result_key = NULL WHERE id = $1").bind(&id).execute(app.pool()).await.unwrap();
    let (status, body) = json(app.admin(Method::GET, &path).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("Build result not found")));
    let (status, _) = json(app.anon(Method::GET, &path).send().await.unwrap()).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn the_uploaded_source_downloads_back_byte_identical() {
    let app = spawn_app().await;
    let source: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let response = app.submit(&source, "android", None).await;
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    let response = app.admin(Method::GET, &format!("/api/builds/{id}/download/source")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert_eq!(response.bytes().await.unwrap().as_ref(), source.as_slice());
    let (status, _) =
        json(app.admin(Method::GET, &format!("/api/builds/{id}/download/other")).send().await.unwrap()).await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test]
async fn cancelling_a_pending_build_with_an_empty_json_body_removes_its_job() {
    let app = spawn_app().await;
    let (id, _) = app.submit_ok(b"zip").await;
    assert_eq!(app.queued_jobs().await, 1);
    // Exactly what the CLI sends: a JSON content type and no body at all.
    let response = app
        .admin(Method::POST, &format!("/api/builds/{id}/cancel"))
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({ "status": "cancelled" }));
    assert_eq!(app.queued_jobs().await, 0, "the queued job is gone");

    let (_, body) = json(app.admin(Method::GET, &format!("/api/builds/{id}/status")).send().await.unwrap()).await;
    assert_eq!(body["status"], "failed", "clients know only five statuses");
    assert_eq!(body["error_message"], "Build cancelled by user");
    assert!(body["completed_at"].is_i64());
    let stored: String =
        sqlx::query_scalar("SELECT status FROM builds WHERE id = $1").bind(&id).fetch_one(app.pool()).await.unwrap();
    assert_eq!(stored, "cancelled");

    let (status, body) = json(app.admin(Method::POST, &format!("/api/builds/{id}/cancel")).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("Build already finished")));
    let (status, _) =
        json(app.admin(Method::POST, "/api/builds/AAAAAAAAAAAAAAAAAAAAA/cancel").send().await.unwrap()).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn cancelling_a_leased_build_frees_its_worker_and_only_its_token_may_do_it() {
    let app = spawn_app().await;
    let (id, token) = app.submit_ok(b"zip").await;
    let (_, other_token) = app.submit_ok(b"other").await;
    app.insert_worker("w1", "Mac", "idle").await;
    app.lease_to(&id, "w1").await;
    let path = format!("/api/builds/{id}/cancel");
    let (status, _) =
        json(app.anon(Method::POST, &path).header("X-Build-Token", &other_token).send().await.unwrap()).await;
    assert_eq!(status, 403);
    let (status, _) = json(app.anon(Method::POST, &path).header("X-Build-Token", &token).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let (worker_status,): (String,) =
        sqlx::query_as("SELECT status FROM workers WHERE id = 'w1'").fetch_one(app.pool()).await.unwrap();
    assert_eq!(worker_status, "idle");
    let lease: Option<String> = sqlx::query_scalar("SELECT lease_reply FROM builds WHERE id = $1")
        .bind(&id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(lease.is_none(), "the lease is gone");
    app.stop().await;
}

#[tokio::test]
async fn retry_enqueues_a_copy_with_its_own_id_and_token() {
    let app = spawn_app().await;
    let (id, token) = app.submit_ok(b"the original source").await;
    let response = app
        .anon(Method::POST, &format!("/api/builds/{id}/retry"))
        .header("X-Build-Token", &token)
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 200);
    let new_id = body["id"].as_str().unwrap();
    assert_ne!(new_id, id);
    assert_eq!(body["status"], "pending");
    assert!(body["submitted_at"].is_i64());
    assert_eq!(body["access_token"].as_str().unwrap().len(), 43);
    assert_ne!(body["access_token"], token.as_str());
    assert_eq!(body["original_build_id"], id.as_str());
    assert_eq!(app.queued_jobs().await, 2);

    let response = app.admin(Method::GET, &format!("/api/builds/{new_id}/download/source")).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"the original source");
    let (_, logs) = json(app.admin(Method::GET, &format!("/api/builds/{new_id}/logs")).send().await.unwrap()).await;
    assert_eq!(logs["logs"][0]["message"], format!("Build submitted (retry of {id})"));
    let (_, logs) = json(app.admin(Method::GET, &format!("/api/builds/{id}/logs")).send().await.unwrap()).await;
    assert_eq!(logs["logs"][1]["message"], format!("Retried as build {new_id}"));

    // The old token is no credential for the new build.
    let (status, _) = json(
        app.anon(Method::GET, &format!("/api/builds/{new_id}/status"))
            .header("X-Build-Token", &token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test]
async fn retry_of_a_build_whose_source_is_gone_is_refused_without_a_trace() {
    let app = spawn_app().await;
    let (id, _) = app.submit_ok(b"zip").await;
    app.backend
        .blobs
        .delete(&dispatcher::blobs::BlobKey::Source(dispatcher::model::BuildId::parse(&id).unwrap()))
        .await
        .unwrap();
    let (status, body) = json(app.admin(Method::POST, &format!("/api/builds/{id}/retry")).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "Original build source no longer available. Please submit a new build.");
    assert_eq!(app.build_rows().await, 1);
    assert_eq!(app.queued_jobs().await, 1);
    let (status, _) =
        json(app.admin(Method::POST, "/api/builds/AAAAAAAAAAAAAAAAAAAAA/retry").send().await.unwrap()).await;
    assert_eq!(status, 404);
    app.stop().await;
}
