#!/usr/bin/env bash
# The store suite runs on PostgreSQL too; fail loudly (never skip) when it does not answer.
set -euo pipefail
url="${TIDEMARK_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! psql "$url" -qAtc 'select 1' >/dev/null 2>&1; then
  echo "check-postgres: PostgreSQL does not answer at $url." >&2
  echo "check-postgres: start it with: pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start" >&2
  echo "check-postgres: or point TIDEMARK_TEST_POSTGRES_URL at a server (trust or password in the URL)." >&2
  exit 1
fi
echo "check-postgres: PostgreSQL answers at ${url%%\?*}"
