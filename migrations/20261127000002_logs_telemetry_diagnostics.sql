-- Build logs, VM resource snapshots and worker diagnostics reports.

-- Logs are served whole in insertion order (`id`); the CLI's follow mode diffs by count.
CREATE TABLE build_logs (
    id        BIGSERIAL PRIMARY KEY,
    build_id  TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    ts        TIMESTAMPTZ NOT NULL DEFAULT now(),
    level     TEXT NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
    message   TEXT NOT NULL
);

CREATE INDEX build_logs_build ON build_logs (build_id, id);

-- CPU/memory samples of the build VM, the basis of the `totalCpuCycles` statistic.
CREATE TABLE cpu_snapshots (
    id           BIGSERIAL PRIMARY KEY,
    build_id     TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    ts           TIMESTAMPTZ NOT NULL DEFAULT now(),
    cpu_percent  DOUBLE PRECISION NOT NULL,
    memory_mb    DOUBLE PRECISION NOT NULL
);

CREATE INDEX cpu_snapshots_build ON cpu_snapshots (build_id);

-- `freeagent doctor` reports sent by workers.
CREATE TABLE diagnostic_reports (
    id           UUID PRIMARY KEY,
    worker_id    TEXT NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    status       TEXT NOT NULL CHECK (status IN ('healthy', 'warning', 'critical')),
    -- Server time of receipt: the client's clock is not trusted.
    run_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    duration_ms  BIGINT NOT NULL,
    auto_fixed   BOOLEAN NOT NULL DEFAULT false,
    checks       JSONB NOT NULL
);

CREATE INDEX diagnostic_reports_worker ON diagnostic_reports (worker_id, run_at DESC);
