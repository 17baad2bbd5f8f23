//! `freeagent chaos`: proves the lease protocol's invariants (DESIGN.md §3) while
//! things break.
//!
//! The run starts its own `nats-server`, a fresh database on the configured
//! Postgres server and `--replicas` `freeagent serve` processes sharing them, then
//! `--workers` simulated workers and a few submitters that speak the real HTTP
//! protocol to a random replica per request. While builds flow, a fault injector
//! SIGKILLs and restarts replicas, kills workers mid-build (a new incarnation
//! re-registers, with its old id or a fresh one), stalls workers mid-build for
//! longer than the lease (they come back late and must be refused), SIGKILLs and restarts the NATS
//! server and cuts the replicas' Postgres connections (`pg_terminate_backend`).
//! When most builds are done the faults stop; the run waits for every build to
//! reach a terminal state and checks:
//!
//! - **lost**: an accepted submission without a row, an accepted result not
//!   reflected in its build, or a completed build whose artifact is not the bytes
//!   its worker uploaded;
//! - **completed-twice**: more than one terminal report accepted for a build, or
//!   more than one terminal event in the outbox;
//! - **double-leased**: a worker's request accepted after another worker received
//!   the build (see [`ledger`]);
//! - **stuck**: any build (also those whose submit answer was lost) not terminal
//!   at the end.
//!
//! It prints `submitted N, completed C, failed F, lost 0, completed-twice 0,
//! double-leased 0, stuck 0` and exits non-zero when any of them is not 0 (also
//! when a downloaded source differs from the upload). The run's directory (logs of
//! every process) and database are kept when it fails.
//!
//! # Layout
//!
//! - [`cluster`]: the processes (NATS, replicas) and the database.
//! - [`fleet`]: simulated submitters and workers.
//! - [`ledger`]: what the clients saw, and the double-lease rule.
//! - `verdict`: the final checks against Postgres and the artifacts.

pub mod cluster;
pub mod fleet;
pub mod ledger;
mod verdict;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio::task::JoinHandle;

use cluster::{Database, Layout, Nats, Replica, ReplicaSettings};
use fleet::{Shared, Slot};
use ledger::Ledger;

/// Arguments of `freeagent chaos`.
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Builds to submit.
    #[arg(long, default_value_t = 1000)]
    pub builds: usize,

    /// Simulated workers.
    #[arg(long, default_value_t = 10)]
    pub workers: usize,

    /// `freeagent serve` replicas.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,

    /// Seed of the fault schedule and the clients' choices (random when unset; printed).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Fraction of builds the simulated workers report as failed.
    #[arg(long, default_value_t = 0.05)]
    pub fail_rate: f64,

    /// Lease TTL of the replicas, in seconds (short, so killed workers' builds return soon).
    #[arg(long, default_value_t = 4)]
    pub lease_ttl_secs: u64,

    /// Faults stop when this share of the builds is finished (or after `--fault-secs`).
    #[arg(long, default_value_t = 0.9)]
    pub faults_until: f64,

    /// The longest the fault phase lasts, in seconds.
    #[arg(long, default_value_t = 900)]
    pub fault_secs: u64,

    /// How long to wait, after the faults stop, for every build to finish, in seconds.
    #[arg(long, default_value_t = 180)]
    pub drain_secs: u64,

    /// Keep the run's directory and database even when every invariant holds.
    #[arg(long)]
    pub keep: bool,

    /// Postgres server to create the run's own database on.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/freeagent",
        hide_env_values = true
    )]
    pub database_url: String,

    /// The `nats-server` binary the run starts (and restarts) itself.
    #[arg(long, env = "FREEAGENT_CHAOS_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: PathBuf,
}

/// Counts of injected faults.
#[derive(Debug, Default)]
struct Faults {
    replica_kills: u32,
    worker_kills: u32,
    worker_stalls: u32,
    nats_restarts: u32,
    pg_cuts: u32,
    pg_connections_cut: i64,
    unexpected_exits: u32,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillReplica,
    KillWorker,
    StallWorker,
    RestartNats,
    CutPostgres,
}

/// Runs the chaos harness; an error when an invariant broke or the run could not start.
pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.builds > 0 && args.workers > 0 && args.replicas > 0,
        "builds, workers and replicas must be > 0"
    );
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let suffix = dispatcher::auth::generate_token().to_lowercase().replace(['-', '_'], "")[..10].to_owned();
    let layout = Layout { root: std::env::temp_dir().join(format!("freeagent-chaos-{suffix}")) };
    std::fs::create_dir_all(&layout.root)?;
    let database = Database::new(&args.database_url, &suffix)?;
    println!(
        "chaos: seed {seed}, {} replicas, {} workers, {} builds, lease {} s, files in {}",
        args.replicas,
        args.workers,
        args.builds,
        args.lease_ttl_secs,
        layout.root.display()
    );

    let nats_binary = cluster::find_nats_server(&args.nats_server)?;
    let mut nats = Nats::start(&nats_binary, &layout).await?;
    let settings = ReplicaSettings {
        database_url: database.url.clone(),
        nats_url: nats.url(),
        namespace: format!("chaos_{suffix}"),
        api_key: dispatcher::auth::generate_token(),
        encryption_key: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, rand::random::<[u8; 32]>()),
        lease_ttl_secs: args.lease_ttl_secs,
    };
    let mut replicas = Vec::new();
    for index in 0..args.replicas {
        let mut replica = Replica::new(index)?;
        // The first creates and migrates the database; the others find it ready.
        replica.start(&settings, &layout, Duration::from_secs(120)).await?;
        replicas.push(replica);
    }

    let outcome = exercise(&args, seed, &settings, &layout, &database, &mut nats, &mut replicas).await;

    for replica in &mut replicas {
        replica.stop().await;
    }
    nats.stop().await;
    let passed = matches!(outcome, Ok(true));
    if passed && !args.keep {
        database.drop_database().await.ok();
        std::fs::remove_dir_all(&layout.root).ok();
    } else {
        println!("kept for inspection: {} and database {}", layout.root.display(), database.url);
    }
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => anyhow::bail!("an invariant broke (seed {seed})"),
        Err(e) => Err(e.context(format!("the chaos run failed (seed {seed})"))),
    }
}

/// Drives the clients and the faults, then checks; `Ok(false)` when an invariant broke.
async fn exercise(
    args: &ChaosArgs,
    seed: u64,
    settings: &ReplicaSettings,
    layout: &Layout,
    database: &Database,
    nats: &mut Nats,
    replicas: &mut [Replica],
) -> anyhow::Result<bool> {
    let shared = Shared {
        replicas: Arc::new(replicas.iter().map(Replica::url).collect()),
        api_key: settings.api_key.clone(),
        ledger: Arc::new(Ledger::default()),
        fail_rate: args.fail_rate,
    };
    let started = Instant::now();
    let slots: Vec<Arc<Slot>> = (0..args.workers).map(|_| Arc::new(Slot::default())).collect();
    let mut workers: Vec<JoinHandle<()>> = slots
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            tokio::spawn(fleet::work(shared.clone(), slot.clone(), format!("chaos-{i}"), false, seed ^ (i as u64 + 1)))
        })
        .collect();
    let submitters = 4.min(args.builds);
    let depth = (args.workers * 3).max(8);
    let submitting: Vec<JoinHandle<()>> = (0..submitters)
        .map(|s| {
            let indices = (s..args.builds).step_by(submitters).collect();
            tokio::spawn(fleet::submit(shared.clone(), indices, depth.div_ceil(submitters), seed ^ (1000 + s as u64)))
        })
        .collect();

    // The fault phase.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults = Faults::default();
    let mut schedule =
        vec![Fault::KillReplica, Fault::KillWorker, Fault::StallWorker, Fault::RestartNats, Fault::CutPostgres];
    for i in (1..schedule.len()).rev() {
        schedule.swap(i, rng.random_range(0..=i));
    }
    let stop_at = (args.builds as f64 * args.faults_until).ceil() as usize;
    let fault_deadline = started + Duration::from_secs(args.fault_secs);
    let mut generation = 0u64;
    while shared.ledger.finished_count() < stop_at && Instant::now() < fault_deadline {
        let gap = Duration::from_millis(rng.random_range(300..1500));
        let until = Instant::now() + gap;
        while Instant::now() < until {
            supervise(replicas, settings, layout, &mut faults).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fault = schedule.pop().unwrap_or_else(|| match rng.random_range(0..100) {
            0..25 => Fault::KillReplica,
            25..50 => Fault::KillWorker,
            50..70 => Fault::StallWorker,
            70..80 => Fault::RestartNats,
            _ => Fault::CutPostgres,
        });
        match fault {
            Fault::KillReplica => {
                let victim = rng.random_range(0..replicas.len());
                replicas[victim].kill().await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
                replicas[victim].start(settings, layout, Duration::from_secs(60)).await?;
                faults.replica_kills += 1;
            }
            Fault::KillWorker => {
                let mut busy = Vec::new();
                for (i, slot) in slots.iter().enumerate() {
                    if slot.busy_with.lock().await.is_some() {
                        busy.push(i);
                    }
                }
                let victim = if busy.is_empty() {
                    rng.random_range(0..slots.len())
                } else {
                    busy[rng.random_range(0..busy.len())]
                };
                workers[victim].abort();
                let _ = (&mut workers[victim]).await;
                *slots[victim].busy_with.lock().await = None;
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..1000))).await;
                generation += 1;
                // Half come back with their id (W1/W2 re-register), half as new workers (W0).
                let keep_id = rng.random_bool(0.5);
                workers[victim] = tokio::spawn(fleet::work(
                    shared.clone(),
                    slots[victim].clone(),
                    format!("chaos-{victim}"),
                    keep_id,
                    seed ^ (generation << 20) ^ victim as u64,
                ));
                faults.worker_kills += 1;
            }
            Fault::StallWorker => {
                let mut busy = Vec::new();
                for slot in &slots {
                    if slot.busy_with.lock().await.is_some() {
                        busy.push(slot.clone());
                    }
                }
                if !busy.is_empty() {
                    let victim = &busy[rng.random_range(0..busy.len())];
                    let hang =
                        Duration::from_secs(args.lease_ttl_secs) + Duration::from_millis(rng.random_range(500..3000));
                    *victim.stalled_until.lock().await = Some(Instant::now() + hang);
                    faults.worker_stalls += 1;
                }
            }
            Fault::RestartNats => {
                nats.restart(Duration::from_millis(rng.random_range(300..2000))).await?;
                faults.nats_restarts += 1;
            }
            Fault::CutPostgres => {
                faults.pg_connections_cut += database.terminate_connections().await.unwrap_or(0);
                faults.pg_cuts += 1;
            }
        }
    }
    let fault_phase = started.elapsed();

    // The drain: no more faults, every build must finish.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&database.url)
        .await
        .context("cannot connect to the run's database")?;
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    loop {
        supervise(replicas, settings, layout, &mut faults).await?;
        let submitted_all = submitting.iter().all(JoinHandle::is_finished);
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM builds WHERE status NOT IN ('completed', 'failed', 'cancelled')")
                .fetch_one(&pool)
                .await?;
        if (submitted_all && open == 0) || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in submitting.iter().chain(workers.iter()) {
        task.abort();
    }
    let elapsed = started.elapsed();

    println!(
        "faults: {} replica kills, {} worker kills, {} worker stalls, {} NATS restarts, {} Postgres cuts ({} connections), {} unexpected replica exits",
        faults.replica_kills,
        faults.worker_kills,
        faults.worker_stalls,
        faults.nats_restarts,
        faults.pg_cuts,
        faults.pg_connections_cut,
        faults.unexpected_exits
    );
    println!(
        "took {:.1} s (faults for {:.1} s); clients saw {} server errors while dependencies were down, {} rate-limited answers",
        elapsed.as_secs_f64(),
        fault_phase.as_secs_f64(),
        shared.ledger.server_errors(),
        shared.ledger.rate_limited()
    );
    let verdict = verdict::check(&shared, &pool, args.builds).await?;
    verdict.print();
    Ok(verdict.holds())
}

/// Restarts a replica that exited by itself (counted: the protocol survives it,
/// but it is worth a look in the replica's log).
async fn supervise(
    replicas: &mut [Replica],
    settings: &ReplicaSettings,
    layout: &Layout,
    faults: &mut Faults,
) -> anyhow::Result<()> {
    for replica in replicas.iter_mut() {
        if let Some(status) = replica.exited() {
            println!("a replica exited by itself ({status}); restarting it");
            faults.unexpected_exits += 1;
            replica.start(settings, layout, Duration::from_secs(60)).await?;
        }
    }
    Ok(())
}
