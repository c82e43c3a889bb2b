-- Per-application policy knobs, the last comparison's status and drift episodes.

ALTER TABLE applications ADD COLUMN self_heal BIGINT NOT NULL DEFAULT 0;
ALTER TABLE applications ADD COLUMN prune BIGINT NOT NULL DEFAULT 0;
ALTER TABLE applications ADD COLUMN ignore_rules TEXT NOT NULL DEFAULT '[]';  -- JSON list of rules
-- Set when the application reached Healthy after this (succeeded) sync, within the timeout:
-- the revision is then known-good (a rollback target).
ALTER TABLE syncs ADD COLUMN healthy_at BIGINT;

CREATE TABLE app_status (
    application      TEXT PRIMARY KEY NOT NULL REFERENCES applications (name),
    sync_status      TEXT NOT NULL,     -- Synced | OutOfSync | Unknown
    health           TEXT NOT NULL,     -- Healthy | Progressing | Degraded | Missing | Unknown
    health_message   TEXT NOT NULL,
    target_sha       TEXT,
    deployed_sha     TEXT,
    resources        TEXT NOT NULL,     -- the comparison, JSON (Secret values already redacted)
    compared_at      BIGINT NOT NULL
);

-- Live diverging from the last synced desired state without a new commit.
CREATE TABLE drift_episodes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    application   TEXT NOT NULL REFERENCES applications (name),
    opened_at     BIGINT NOT NULL,
    closed_at     BIGINT,
    close_reason  TEXT,                 -- self_healed | synced | reverted | rollback
    changes       TEXT NOT NULL         -- the drifted resources at onset, JSON
);
-- At most one open episode per application.
CREATE UNIQUE INDEX drift_open ON drift_episodes (application) WHERE closed_at IS NULL;
