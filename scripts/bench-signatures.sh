#!/usr/bin/env bash
# Cost of one commit-signature check as Tidemark runs it, against a baseline measured in the same
# run: spawning `true` through `timeout` (what every check pays before any cryptography).
#   openpgp: `timeout gpgv --keyring K --status-fd 1 sig payload`       (1 process)
#   ssh:     `ssh-keygen -Y find-principals`, then `-Y verify` (2 processes when verified;
#            a third, `-Y check-novalidate`, tells a bad signature from an unknown key)
#   unsigned commits spawn nothing.
# Keys and a signed commit are made here (gpg --batch, ssh-keygen, git). Prints medians of
# ROUNDS rounds of N checks each, per check, and the ratio to the baseline.
set -euo pipefail
N=${N:-100}
ROUNDS=${ROUNDS:-5}
dir=$(mktemp -d /tmp/tm-sigbench.XXXXXX)
trap 'GNUPGHOME=$dir/gnupg gpgconf --kill gpg-agent 2>/dev/null || true; rm -rf "$dir"' EXIT
export GNUPGHOME=$dir/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --passphrase '' --quick-gen-key 'Bench <bench@example.com>' ed25519 sign never 2>/dev/null
gpg --export bench@example.com > "$dir/keyring.gpg"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$dir/ssh"
echo "bench@example.com $(cat "$dir/ssh.pub")" > "$dir/allowed_signers"
repo=$dir/repo
git init -q -b main "$repo"
g() { git -C "$repo" -c user.name=Bench -c user.email=bench@example.com "$@"; }
echo a > "$repo/f"; g add f; g commit -q -S -m pgp
g cat-file commit HEAD > "$dir/c1"
echo b >> "$repo/f"; g -c gpg.format=ssh -c user.signingkey="$dir/ssh.pub" commit -qam ssh -S
g cat-file commit HEAD > "$dir/c2"
split() { # commit object → payload, sig
  awk -v p="$2" -v s="$3" '
    /^gpgsig / { insig=1; sub(/^gpgsig /, ""); print > s; next }
    insig && /^ / { sub(/^ /, ""); print > s; next }
    { insig=0; print > p }' "$1"
}
split "$dir/c1" "$dir/p1" "$dir/s1"
split "$dir/c2" "$dir/p2" "$dir/s2"
mkdir -m 700 "$dir/home"
baseline() { timeout 10 true; }
openpgp() { timeout 10 gpgv --homedir "$dir/home" --keyring "$dir/keyring.gpg" --status-fd 1 "$dir/s1" "$dir/p1" 2>/dev/null | grep -q VALIDSIG; }
ssh() {
  timeout 10 ssh-keygen -Y find-principals -s "$dir/s2" -f "$dir/allowed_signers" >/dev/null 2>&1
  timeout 10 ssh-keygen -Y verify -f "$dir/allowed_signers" -I bench@example.com -n git -s "$dir/s2" < "$dir/p2" >/dev/null 2>&1
}
openpgp || { echo "the OpenPGP check does not verify" >&2; exit 1; }
ssh || { echo "the SSH check does not verify" >&2; exit 1; }
median_ms() { # fn → median per-check milliseconds over ROUNDS rounds of N
  local f=$1 times=()
  for _ in $(seq "$ROUNDS"); do
    local t0 t1
    t0=$(date +%s%N)
    for _ in $(seq "$N"); do $f; done
    t1=$(date +%s%N)
    times+=("$(( (t1 - t0) / N / 1000 ))")
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (ROUNDS + 1) / 2 ))p"
}
b=$(median_ms baseline); o=$(median_ms openpgp); s=$(median_ms ssh)
printf '%-34s %10s %8s\n' "check ($N per round, median of $ROUNDS)" "µs/check" "ratio"
printf '%-34s %10s %8s\n' "baseline: timeout true" "$b" "x1.0"
printf '%-34s %10s %8s\n' "openpgp: gpgv" "$o" "x$(awk -v a="$o" -v b="$b" 'BEGIN{printf "%.1f", a/b}')"
printf '%-34s %10s %8s\n' "ssh: ssh-keygen -Y (2 runs)" "$s" "x$(awk -v a="$s" -v b="$b" 'BEGIN{printf "%.1f", a/b}')"
