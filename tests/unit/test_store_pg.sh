#!/usr/bin/env bash
# The job store's unit tests (test_store, test_store_cluster) against a
# throwaway PostgreSQL server from tests/pg_harness.sh, which skips (77)
# when the server binaries are missing; test_store skips when hauld was
# built without libpq. The SQLite half runs in the plain test programs.
set -euo pipefail
src=${HAULD_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${HAULD_BUILDDIR:-$src/build}
export HAULD_TEST_PG_ONLY=1
exec bash "$src/tests/pg_harness.sh" run \
        bash -c '"$1/tests/unit/test_store" && "$1/tests/unit/test_store_cluster"' - "$build"
