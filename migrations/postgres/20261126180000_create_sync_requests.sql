-- Approvals: a manual application's new target (or drift) becomes a pending sync request bound
-- to (revision, rendered digest); approvals count towards the policy's N; a moved target
-- supersedes the request and voids its approvals.

ALTER TABLE applications ADD COLUMN approval_policy TEXT NOT NULL DEFAULT '{}';  -- JSON

CREATE TABLE sync_requests (
    id             BIGSERIAL PRIMARY KEY,
    application    TEXT NOT NULL REFERENCES applications (name),
    revision       TEXT NOT NULL,
    digest         TEXT NOT NULL,
    cause          TEXT NOT NULL,     -- revision | drift | rollback
    requested_by   TEXT,              -- the person asking (rollback requests); NULL: Tidemark
    required       BIGINT NOT NULL,   -- approvals needed (the policy's N when it was created)
    status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'superseded', 'synced', 'failed')),
    created_at     BIGINT NOT NULL,
    decided_at     BIGINT,
    decided_by     TEXT,
    reason         TEXT,
    sync_id        BIGINT,
    superseded_by  BIGINT
);
CREATE UNIQUE INDEX sync_requests_one_pending ON sync_requests (application) WHERE status = 'pending';
CREATE INDEX sync_requests_by_status ON sync_requests (status, id);

CREATE TABLE approvals (
    request_id  BIGINT NOT NULL REFERENCES sync_requests (id),
    user_id     TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    at          BIGINT NOT NULL,
    void        BIGINT NOT NULL DEFAULT 0,   -- 1 once the request was superseded
    PRIMARY KEY (request_id, user_id)
);
