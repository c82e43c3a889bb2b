-- A project's bounds for applications declared in Git, as JSON
-- (`{"destinations": [{"cluster", "namespace"}], "cluster_resources": [{"group", "kind"}]}`):
-- every object such an application syncs is checked against them (its namespace among the
-- destinations, a cluster-scoped kind among `cluster_resources`). NULL: no bounds, nothing of
-- a Git-declared application in this project is applied.
ALTER TABLE project_policies ADD COLUMN declared_bounds TEXT;

-- The revision at which an app of apps' declarations were last held (unsigned under
-- `require_signed`, too many, nested too deep): that revision is rendered and read again on
-- each fetch until they are applied. NULL: nothing held.
ALTER TABLE app_git_state ADD COLUMN declarations_held TEXT;

-- What an app of apps' last reading refused (JSON array of {name, origin, reason}): a refusal
-- already said is not said again at each new revision of the repository.
ALTER TABLE app_git_state ADD COLUMN declaration_refusals TEXT;
