#!/usr/bin/env bash
# Runs the whole test suite (or the files given as arguments) with node:test + tsx.
# Node 20's --test reports "# tests 0" and exits 0 when it finds no files, so the files are
# passed explicitly and a run that executed no test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi
if [ "${#files[@]}" -eq 0 ]; then echo "no test files found" >&2; exit 1; fi
# The CLI tests run the compiled CLI, as users do.
npx tsc -p tsconfig.json
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
node --import tsx --test --test-concurrency=1 --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$log" "${files[@]}"
rc=$?
set -e
tests=$(grep -E '^# tests [0-9]+' "$log" | tail -1 | awk '{print $3}')
pass=$(grep -E '^# pass [0-9]+' "$log" | tail -1 | awk '{print $3}')
fail=$(grep -E '^# fail [0-9]+' "$log" | tail -1 | awk '{print $3}')
skip=$(grep -E '^# skipped [0-9]+' "$log" | tail -1 | awk '{print $3}')
echo "# tests ${tests:-0}"
echo "${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
if [ "${tests:-0}" -eq 0 ]; then echo "no tests ran" >&2; exit 1; fi
exit "$rc"
