#!/usr/bin/env bash
# `make test`, in two lanes side by side, one core each (every lane is single-threaded):
#   lane 1: the unit tests, then nbval on the executed notebooks (smoke copies write their
#           results to a temporary folder);
#   lane 2: the paper-dry pipeline (`make paper-dry`: writes only under */paper-dry, ignored by git).
# The lanes share no folder but the embedding cache, which is written atomically. Without the
# data, only the unit tests run (their real-data checks skip). Usage (from the Makefile):
#   tools/run_tests.sh BIN "SMOKE_NOTEBOOKS" "OTHER_NOTEBOOKS"
set -uo pipefail
bin=$1; smoke=($2); other=($3)
if ! "$bin/python" -c "import sys, crslib.data as d; sys.exit(not d.has_data())"; then
  "$bin/python" -m pytest -q tests || exit 1
  echo "nbval and paper-dry skipped: no data under CRSLIB_DATA (run make data)"
  exit 0
fi
start=$SECONDS
log=$(mktemp)
( make --no-print-directory paper-dry > "$log" 2>&1 ) &
lane2=$!
status=0
"$bin/python" -m pytest -q tests || status=1
tmp=$(mktemp -d)
CRSLIB_RESULTS=$tmp "$bin/python" -m pytest -q --nbval-lax -p no:cacheprovider "${smoke[@]}" || status=1
rm -rf "$tmp"
"$bin/python" -m pytest -q --nbval-lax -p no:cacheprovider "${other[@]}" || status=1
echo "lane 1 (unit tests, nbval) done after $((SECONDS - start)) s"
if wait "$lane2"; then
  echo "lane 2 (paper-dry) passed, done after $((SECONDS - start)) s"
else
  echo "lane 2 (paper-dry) FAILED; the end of its log:"; tail -n 60 "$log"; status=1
fi
rm -f "$log"
exit $status
