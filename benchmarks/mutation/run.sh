#!/usr/bin/env bash
# Mutation testing of the modules in pyproject.toml's [tool.mutmut] (issue 17), with mutmut.
#
# Too slow for CI: run by hand, on an idle machine if possible. It works in a scratch copy
# of the checkout (the tracked and untracked-not-ignored files), so the checkout never sees
# mutmut's mutants/ folder. Usage:
#
#   benchmarks/mutation/run.sh                          # every configured module, all tests
#   MUTATE="bench/metrics.py nsnet_plugin/losses.py" \
#   TESTS="tests/test_metrics.py tests/test_losses.py" benchmarks/mutation/run.sh
#
# Environment: MUTATE (globs, replaces only_mutate), TESTS (pytest arguments, replace the
# test selection), JOBS (mutmut --max-children, default 1), WORK (scratch folder, default
# /tmp/nsnet-mutation), PYTHON (default .venv/bin/python or python3), NICE (default 15).
# Prints the counts and the score = (killed + timeout) / (total - skipped); a mutant with
# no test that reaches it counts as a survivor. Survivors: `mutmut results` in $WORK;
# the reasoned list of equivalent ones is benchmarks/mutation/equivalent.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${WORK:-/tmp/nsnet-mutation}
python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || python=$(command -v python3)
jobs=${JOBS:-1}
nice_level=${NICE:-15}

rm -rf "$work" && mkdir -p "$work"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$repo" && xargs -0 cp --parents -t "$work" 2>/dev/null || true)
cd "$work"
MUTATE="${MUTATE:-}" TESTS="${TESTS:-}" "$python" - <<'PY'
import json, os, re
text = open("pyproject.toml").read()
def replace(key, values):
    global text
    pattern = re.compile(rf"^{key} = \[.*?\]\n", re.S | re.M)
    assert pattern.search(text), key
    text = pattern.sub(f"{key} = {json.dumps(values)}\n", text, count=1)
if os.environ["MUTATE"].split():
    replace("only_mutate", os.environ["MUTATE"].split())
if os.environ["TESTS"].split():
    replace("pytest_add_cli_args_test_selection", os.environ["TESTS"].split())
open("pyproject.toml", "w").write(text)
PY
sed -n '/^\[tool.mutmut\]/,$p' pyproject.toml
mutmut="$(dirname "$python")/mutmut"
start=$(date +%s)
HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n "$nice_level" "$mutmut" run --max-children "$jobs" > run.log 2>&1 || true
end=$(date +%s)
"$mutmut" export-cicd-stats > /dev/null
"$mutmut" results > survivors.txt 2>&1 || true
"$python" - "$((end - start))" <<'PY'
import json, sys
s = json.load(open("mutants/mutmut-cicd-stats.json"))
scored = s["total"] - s["skipped"]
caught = s["killed"] + s["timeout"]
print(json.dumps(s))
print(f"score {caught}/{scored} = {100 * caught / max(scored, 1):.1f} % in {sys.argv[1]} s "
      f"(no-test mutants count as survivors: {s['no_tests']})")
PY
echo "survivors: $work/survivors.txt; log: $work/run.log"
