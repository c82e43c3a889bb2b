-- Several replicas on one database: who is alive, which replica reconciles which application,
-- and which replica runs each sync.

-- Every running Tidemark process: a random id per start, and when it last said it was alive
-- (every 5 s; a replica not seen for 15 s is gone).
CREATE TABLE replicas (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL
);

-- One lease per application: only its owner reconciles it until `expires_at` (ms); renewed with
-- the owner's heartbeat, free for another replica once expired.
CREATE TABLE app_leases (
    application TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- The replica running a sync and its last heartbeat: a starting replica closes as interrupted
-- only syncs whose owner stopped beating.
ALTER TABLE syncs ADD COLUMN owner TEXT;
ALTER TABLE syncs ADD COLUMN heartbeat_at BIGINT;

-- The replica that took an approved request to run it (claimed in one conditional UPDATE).
ALTER TABLE sync_requests ADD COLUMN claimed_by TEXT;

-- At most one running sync per application: two clicks on two replicas cannot both apply.
UPDATE syncs SET status = 'interrupted', finished_at = started_at,
    message = 'closed when Tidemark learnt to run several replicas: another sync of this application was running'
WHERE status = 'running'
  AND id NOT IN (SELECT MAX(id) FROM syncs WHERE status = 'running' GROUP BY application);
CREATE UNIQUE INDEX syncs_one_running ON syncs (application) WHERE status = 'running';
