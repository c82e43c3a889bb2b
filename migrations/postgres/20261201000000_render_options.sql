-- How an application is rendered: {"source": "helm"|"kustomize"|"directory" (absent: detected), "helm": {release_name, values_files, values, set, …}}.
ALTER TABLE applications ADD COLUMN render_options TEXT NOT NULL DEFAULT '{}';
