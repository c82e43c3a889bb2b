-- Verified commit signatures: the verdict on each commit (or signed tag) against one set of
-- trusted keys (`trust_digest`: SHA-256 of the key material). New keys mean new rows: the verdicts
-- against older keys stay, and a sync keeps the verdict it deployed under (`syncs.signature`).
CREATE TABLE commit_signatures (
    repository    TEXT NOT NULL,
    sha           TEXT NOT NULL,           -- a commit, or an annotated tag object
    trust_digest  TEXT NOT NULL,
    tagged        TEXT,                    -- for a tag object: the commit it points at
    tag_name      TEXT,
    status        TEXT NOT NULL CHECK (status IN ('verified', 'unknown_key', 'bad_signature', 'unsigned')),
    method        TEXT,                    -- openpgp | ssh
    signer        TEXT,
    fingerprint   TEXT,
    detail        TEXT,
    checked_at    BIGINT NOT NULL,
    PRIMARY KEY (repository, sha, trust_digest)
);
CREATE INDEX commit_signatures_tagged ON commit_signatures (repository, tagged, trust_digest);

-- The keys an application's revisions are checked against now.
ALTER TABLE app_git_state ADD COLUMN trust_digest TEXT;

-- Deploy policy: only revisions signed by a trusted key are synced.
ALTER TABLE applications ADD COLUMN require_signed BIGINT NOT NULL DEFAULT 0;
CREATE TABLE project_policies (
    project         TEXT PRIMARY KEY NOT NULL,
    require_signed  BIGINT NOT NULL DEFAULT 0
);

-- The signature verdict of the revision a sync deployed, as it was at deploy time (JSON).
ALTER TABLE syncs ADD COLUMN signature TEXT;
