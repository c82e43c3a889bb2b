-- Secret data at rest: the id of the key that sealed a snapshot's Secret values (`data` and
-- `stringData` of `kind: Secret` objects, each an envelope `tidemark:enc:v1:<key id>:<base64>`).
-- NULL: written without a key, values in plaintext (read as they are; sealed at the next start
-- with a key configured).
ALTER TABLE snapshots ADD COLUMN key_id TEXT;
