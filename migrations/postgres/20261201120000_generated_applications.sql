-- Applications declared in Git (app of apps, directory generators). Such a row keeps
-- `source = 'api'` (the column's CHECK predates this; rebuilding a table other tables reference
-- is not worth it) and names what declared it in `generator`: `application/ROOT` for an app of
-- apps, `generator/NAME` for a `[[generators]]` entry. `declared_spec` is the canonical JSON it
-- was last declared with, so an unchanged definition writes nothing.
ALTER TABLE applications ADD COLUMN generator TEXT;
ALTER TABLE applications ADD COLUMN declared_spec TEXT;
CREATE INDEX applications_generator ON applications (generator);

-- The last run of each directory generator: the revision and settings it ran with (it runs
-- again when either changes), what it declared and refused (JSON arrays), its error.
CREATE TABLE generators (
    name TEXT PRIMARY KEY,
    revision TEXT,
    settings TEXT NOT NULL DEFAULT '',
    applications TEXT NOT NULL DEFAULT '[]',
    refused TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    updated_at BIGINT NOT NULL
);
