-- Repositories, clusters and applications: what Tidemark manages.
-- `source` is 'config' (declared in tidemark.toml, read-only) or 'api' (created by an admin).
-- Timestamps are milliseconds since the Unix epoch.

CREATE TABLE repositories (
    name        TEXT PRIMARY KEY NOT NULL,
    url         TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('config', 'api')),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE clusters (
    name        TEXT PRIMARY KEY NOT NULL,
    url         TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('config', 'api')),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE applications (
    name             TEXT PRIMARY KEY NOT NULL,
    project          TEXT NOT NULL,
    repository       TEXT NOT NULL REFERENCES repositories (name),
    path             TEXT NOT NULL,
    target_revision  TEXT NOT NULL,
    cluster          TEXT NOT NULL REFERENCES clusters (name),
    namespace        TEXT NOT NULL,
    sync_policy      TEXT NOT NULL CHECK (sync_policy IN ('manual', 'auto')),
    source           TEXT NOT NULL CHECK (source IN ('config', 'api')),
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    -- Set when a config-declared application leaves the config: hidden, history kept.
    retired_at       BIGINT
);

CREATE INDEX applications_project ON applications (project, name);
