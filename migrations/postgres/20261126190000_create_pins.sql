-- A rollback pins the application to a known-good (revision, digest): auto-sync and new sync
-- requests pause, self-heal enforces the pinned snapshot, until someone unpins.

CREATE TABLE pins (
    application  TEXT PRIMARY KEY NOT NULL REFERENCES applications (name),
    revision     TEXT NOT NULL,
    digest       TEXT NOT NULL,
    pinned_by    TEXT NOT NULL,
    pinned_name  TEXT NOT NULL,
    pinned_at    BIGINT NOT NULL,
    reason       TEXT NOT NULL
);
