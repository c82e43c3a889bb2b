#!/usr/bin/env bash
# Starts the machine's Debian PostgreSQL cluster when it does not answer, after letting the
# `postgres` user in over loopback TCP without a password (trust on 127.0.0.1/::1 only: these
# are development and CI machines; production databases are configured by their owners).
# Idempotent; used by scripts/setup.sh and .ci/run.
set -euo pipefail
url="postgres://postgres@127.0.0.1:5432/postgres"
if psql "$url" -qAtc 'select 1' >/dev/null 2>&1; then
  exit 0
fi
version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
if [ -z "$version" ]; then
  echo "start-postgres: no PostgreSQL cluster under /etc/postgresql (run scripts/setup.sh)" >&2
  exit 1
fi
hba="/etc/postgresql/$version/main/pg_hba.conf"
marker="# tidemark: loopback trust for the test user"
if ! grep -qF "$marker" "$hba"; then
  tmp="$(mktemp)"
  { echo "$marker"
    echo "host    all    postgres    127.0.0.1/32    trust"
    echo "host    all    postgres    ::1/128         trust"
    cat "$hba"; } > "$tmp"
  cat "$tmp" > "$hba"
  rm -f "$tmp"
fi
echo "start-postgres: starting PostgreSQL $version"
pg_ctlcluster --skip-systemctl-redirect "$version" main stop >/dev/null 2>&1 || true
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 30); do
  psql "$url" -qAtc 'select 1' >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "start-postgres: PostgreSQL did not answer at $url within 30 s" >&2
exit 1
