-- A password set or reset ends the account's sessions: a session whose sign-in is older than
-- this instant (ms since the epoch) is refused by every replica. NULL: no reset yet.
ALTER TABLE users ADD COLUMN sessions_valid_after BIGINT;
