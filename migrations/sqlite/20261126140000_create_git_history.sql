-- Git history per application, rendered snapshots, fetch state and the application timeline.

CREATE TABLE commits (
    repository       TEXT NOT NULL REFERENCES repositories (name),
    sha              TEXT NOT NULL,
    parents          TEXT NOT NULL,          -- space-separated shas
    author_name      TEXT NOT NULL,
    author_email     TEXT NOT NULL,
    committer_name   TEXT NOT NULL,
    committer_email  TEXT NOT NULL,
    committed_at     BIGINT NOT NULL,        -- ms since the epoch
    title            TEXT NOT NULL,
    body             TEXT NOT NULL,
    PRIMARY KEY (repository, sha)
);

-- The commits of an application's target branch that touch its path. Never deleted: after a
-- force push the ones no longer reachable are marked so.
CREATE TABLE app_commits (
    application   TEXT NOT NULL REFERENCES applications (name),
    repository    TEXT NOT NULL,
    sha           TEXT NOT NULL,
    committed_at  BIGINT NOT NULL,
    reachable     BIGINT NOT NULL DEFAULT 1,
    first_seen_at BIGINT NOT NULL,
    PRIMARY KEY (application, sha),
    FOREIGN KEY (repository, sha) REFERENCES commits (repository, sha)
);
CREATE INDEX app_commits_page ON app_commits (application, committed_at DESC, sha DESC);

-- Where each application's ingest stopped (the tip it last walked to).
CREATE TABLE app_git_state (
    application    TEXT PRIMARY KEY NOT NULL REFERENCES applications (name),
    ingested_tip   TEXT,
    target_sha     TEXT,
    target_digest  TEXT,
    last_error     TEXT,
    updated_at     BIGINT NOT NULL
);

-- Rendered manifests, content-addressed: identical renders are stored once.
CREATE TABLE snapshots (
    digest      TEXT PRIMARY KEY NOT NULL,
    content     TEXT NOT NULL,               -- canonical JSON array of objects
    objects     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Which snapshot a revision of an application rendered to.
CREATE TABLE renders (
    application  TEXT NOT NULL REFERENCES applications (name),
    sha          TEXT NOT NULL,
    digest       TEXT NOT NULL REFERENCES snapshots (digest),
    rendered_at  BIGINT NOT NULL,
    PRIMARY KEY (application, sha)
);

CREATE TABLE repository_state (
    repository     TEXT PRIMARY KEY NOT NULL REFERENCES repositories (name),
    last_fetch_at  BIGINT,
    last_error     TEXT,
    last_error_at  BIGINT
);

-- One timeline per application (commits are read from app_commits; this holds the events).
CREATE TABLE timeline (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    application  TEXT NOT NULL REFERENCES applications (name),
    kind         TEXT NOT NULL,
    occurred_at  BIGINT NOT NULL,
    message      TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX timeline_page ON timeline (application, occurred_at DESC, id DESC);
