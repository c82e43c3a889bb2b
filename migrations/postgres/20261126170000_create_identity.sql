-- Identity: people (local and OIDC), browser sessions, API tokens, failed sign-ins (throttling
-- survives restarts) and the audit ledger's rows with their hash chain.

CREATE TABLE users (
    id             TEXT PRIMARY KEY NOT NULL,   -- 'local:NAME' or 'oidc:SUBJECT'
    username       TEXT NOT NULL,               -- what role bindings match (`user = ...`)
    display_name   TEXT NOT NULL,
    email          TEXT,
    method         TEXT NOT NULL CHECK (method IN ('local', 'oidc')),
    password_hash  TEXT,                        -- argon2id PHC string; local accounts only
    created_at     BIGINT NOT NULL,
    last_login_at  BIGINT
);

-- tower-sessions records: the session's JSON data, deleted or ignored once expired.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY NOT NULL,
    data        TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- API tokens: only the SHA-256 of the secret is kept.
CREATE TABLE api_tokens (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'deployer', 'admin')),
    project       TEXT,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- One row per failed sign-in, keyed 'user:NAME' and 'ip:ADDRESS'.
CREATE TABLE login_failures (
    id   BIGSERIAL PRIMARY KEY,
    key  TEXT NOT NULL,
    at   BIGINT NOT NULL
);
CREATE INDEX login_failures_by_key ON login_failures (key, at);

-- The audit ledger: hash = SHA-256(prev_hash || canonical row), seq without gaps.
CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY NOT NULL,
    at           BIGINT NOT NULL,
    actor_id     TEXT NOT NULL,
    actor_name   TEXT NOT NULL,
    auth_method  TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    details      TEXT NOT NULL,
    source_ip    TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit_log (at, seq);

-- The chain's head, updated in the same transaction as each append (serialises appends).
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
