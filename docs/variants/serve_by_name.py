"""Serve a spec by name and compare the served scores with what vigor-eval computes from the
recorded scores (docs/variants/gsm8k.md). Usage: python serve_by_name.py URL SPEC DATA SCORES N"""

import json
import sys
from pathlib import Path

from vigor_client import VigorClient
from vigor_client.eval.data import load_groups
from vigor_client.eval.variants import spec_values
from vigor_client.schema import RewardSpec

url, spec_path, data_path, scores_path, n = sys.argv[1:6]
spec = RewardSpec.model_validate(json.loads(Path(spec_path).read_text()))
records = {}
for line in Path(scores_path).read_text().splitlines()[1:]:
    rec = json.loads(line)
    records[rec["key"]] = rec
groups = load_groups(data_path).groups[: int(n)]
with VigorClient(url, timeout=1200) as client:
    info = client.model_info()
    print(f"server default variant: {info.reward_spec.label}; names: {info.reward_specs}")
    res = client.score([g.request() for g in groups], reward_spec=spec.name, shaping="none")
print(f"response variant: {res.reward_spec.label}")
for g, got in zip(groups, res.groups, strict=True):
    want = spec_values(spec, records[g.key])
    diff = max(abs(a - b) / abs(b) for a, b in zip(got.scores, want, strict=True))
    print(f"line {g.line}: served {[round(x, 6) for x in got.scores]}")
    print(f"        vigor-eval {[round(x, 6) for x in want]}  max rel diff {diff:.1e}")
