-- How an application's live objects are compared (JSON, `config::CompareOptions`): field
-- managers whose fields are not drift, and the opt-in to count every manager's fields.
ALTER TABLE applications ADD COLUMN compare_options TEXT NOT NULL DEFAULT '{}';
