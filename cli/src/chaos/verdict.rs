//! The final checks of a chaos run: Postgres rows, outbox events and artifacts
//! against what the clients saw.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt as _;
use sqlx::PgPool;

use super::fleet::{Shared, admin_get, client};
use super::ledger::artifact;

/// What the checks found.
#[derive(Debug, Default)]
pub struct Verdict {
    wanted: usize,
    submitted: usize,
    completed: usize,
    failed: usize,
    /// Builds created by a submission whose answer was lost.
    unacknowledged: usize,
    lost: BTreeSet<String>,
    completed_twice: BTreeSet<String>,
    double_leased: BTreeSet<String>,
    stuck: BTreeSet<String>,
    corrupt_sources: BTreeSet<String>,
}

impl Verdict {
    /// Whether every invariant holds and every build was submitted.
    pub fn holds(&self) -> bool {
        self.lost.is_empty()
            && self.completed_twice.is_empty()
            && self.double_leased.is_empty()
            && self.stuck.is_empty()
            && self.corrupt_sources.is_empty()
            && self.submitted == self.wanted
    }

    /// Prints the findings, then the summary line last.
    pub fn print(&self) {
        for (name, ids) in [
            ("lost", &self.lost),
            ("completed twice", &self.completed_twice),
            ("double-leased", &self.double_leased),
            ("stuck", &self.stuck),
            ("source differs from the upload", &self.corrupt_sources),
        ] {
            if !ids.is_empty() {
                let sample: Vec<&str> = ids.iter().take(10).map(String::as_str).collect();
                println!("{name}: {} (e.g. {})", ids.len(), sample.join(", "));
            }
        }
        if self.submitted != self.wanted {
            println!("only {} of {} submissions were accepted before the end", self.submitted, self.wanted);
        }
        if self.unacknowledged > 0 {
            println!("{} build(s) whose submit answer was lost also ran (they count for stuck)", self.unacknowledged);
        }
        println!(
            "submitted {}, completed {}, failed {}, lost {}, completed-twice {}, double-leased {}, stuck {}",
            self.submitted,
            self.completed,
            self.failed,
            self.lost.len(),
            self.completed_twice.len(),
            self.double_leased.len(),
            self.stuck.len()
        );
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    status: String,
    worker_id: Option<String>,
}

/// Checks the run's end state.
pub async fn check(shared: &Shared, pool: &PgPool, wanted: usize) -> anyhow::Result<Verdict> {
    let submissions = shared.ledger.submissions();
    let seen = shared.ledger.take_builds();
    let rows: HashMap<String, Row> = sqlx::query_as::<_, Row>("SELECT id, status, worker_id FROM builds")
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let mut v = Verdict { wanted, submitted: submissions.len(), ..Verdict::default() };

    for (id, row) in &rows {
        if !matches!(row.status.as_str(), "completed" | "failed" | "cancelled") {
            v.stuck.insert(id.clone());
        }
        if !submissions.contains_key(id) {
            v.unacknowledged += 1;
        }
    }
    for (id, source_sha) in &submissions {
        match rows.get(id) {
            None => {
                v.lost.insert(id.clone());
            }
            Some(row) if row.status == "completed" => v.completed += 1,
            Some(row) if row.status == "failed" => v.failed += 1,
            Some(_) => {}
        }
        if let Some(s) = seen.get(id)
            && s.downloads.iter().any(|d| d != source_sha)
        {
            v.corrupt_sources.insert(id.clone());
        }
    }
    for (id, s) in &seen {
        if s.double_leased() {
            v.double_leased.insert(id.clone());
        }
        if s.completed_twice() {
            v.completed_twice.insert(id.clone());
        }
        // An accepted report must be what the build says.
        for (worker, success) in &s.outcomes {
            let expected = if *success { "completed" } else { "failed" };
            match rows.get(id) {
                Some(row) if row.status == expected && row.worker_id.as_deref() == Some(worker) => {}
                _ => {
                    v.lost.insert(id.clone());
                }
            }
        }
    }
    let twice: Vec<String> = sqlx::query_scalar(
        "SELECT entity_id FROM outbox WHERE kind = 'build' AND event_type IN ('completed', 'failed') \
         GROUP BY entity_id HAVING count(*) > 1",
    )
    .fetch_all(pool)
    .await?;
    v.completed_twice.extend(twice);

    // Every completed build serves exactly the bytes its worker uploaded.
    let completed: Vec<(String, String)> = rows
        .values()
        .filter(|r| r.status == "completed")
        .map(|r| (r.id.clone(), r.worker_id.clone().unwrap_or_default()))
        .collect();
    let http = &client();
    let wrong: Vec<Option<String>> = futures::stream::iter(completed)
        .map(|(id, worker)| async move {
            let matches = match admin_get(shared, http, &format!("/api/builds/{id}/download")).await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok_and(|b| b.as_ref() == artifact(&id, &worker)),
                _ => false,
            };
            (!matches).then_some(id)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    v.lost.extend(wrong.into_iter().flatten());
    Ok(v)
}
