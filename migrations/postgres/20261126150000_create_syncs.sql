-- Sync records (written ahead as 'running', closed exactly once) and the inventory of objects
-- Tidemark applied for each application (prune only ever touches these).

CREATE TABLE syncs (
    id            BIGSERIAL PRIMARY KEY,
    application   TEXT NOT NULL REFERENCES applications (name),
    revision      TEXT NOT NULL,
    digest        TEXT NOT NULL,
    cause         TEXT NOT NULL,               -- 'auto', 'manual', 'self_heal', 'rollback', ...
    requested_by  TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    results       TEXT NOT NULL DEFAULT '[]',  -- per-resource outcome, JSON
    message       TEXT
);
CREATE INDEX syncs_by_app ON syncs (application, id DESC);
CREATE INDEX syncs_running ON syncs (status) WHERE status = 'running';

CREATE TABLE inventory (
    application  TEXT NOT NULL REFERENCES applications (name),
    api_version  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    name         TEXT NOT NULL,
    applied_at   BIGINT NOT NULL,
    PRIMARY KEY (application, api_version, kind, namespace, name)
);
