#!/usr/bin/env bash
# Re-render every diagram here from its Graphviz source: ./render.sh (needs `dot`, from graphviz).
set -euo pipefail
cd "$(dirname "$0")"
command -v dot >/dev/null || { echo "render.sh: needs Graphviz (apt-get install graphviz)" >&2; exit 1; }
for source in *.dot; do
    dot -Tpng "$source" -o "${source%.dot}.png"
    echo "rendered ${source%.dot}.png"
done
