"""Stateful fuzz of the weight plane: random interleavings of every admin operation, valid and not.

    python benchmarks/fuzz_weights_stateful.py [--steps 400] [--seed 0]

Starts `vigor-serve` (admin token, an allowed weights dir) on a tiny random Llama over the
default model's tokenizer, then takes `--steps` random steps — push (valid, wrong shape, NaN,
unknown name, garbage bytes, a stale version), bucketed uploads (create, buckets good and bad,
commit, commit twice, abort, unknown ids), reload (good, missing, outside the allowed dir),
adapter attach (good, refused config) and detach, and scoring — checking after each step:
- no answer is a 5xx;
- `weight_version` moves only on success, to the asked version or +1, never down;
- a refused operation leaves the scores bit-identical to those before it;
- at the end, a fresh server loaded with the weights the client believes are served (and the
  same adapter, if one is attached) gives bit-identical scores.
The summary goes to benchmarks/results/fuzz_weights_stateful.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save  # noqa: E402

from tests.servers import ProcessServer  # noqa: E402

TOKEN = "stateful-fuzz"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OCTET = {**AUTH, "Content-Type": "application/octet-stream"}
GROUP = {"groups": [{"prompt_ids": [1, 2, 3], "completion_ids": [[4, 5, 6], [7, 8], [9]]}]}
LORA = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}


class Fuzzer:
    def __init__(self, url: str, weights_dir: Path, base: dict[str, torch.Tensor], seed: int):
        self.url, self.dir, self.rng = url, weights_dir, random.Random(seed)
        self.state = {k: v.clone() for k, v in base.items()}  # what the client believes
        self.attached: Path | None = None
        self.version = 0
        self.seen: Counter = Counter()
        self.failures: list[str] = []
        self.client = httpx.Client(base_url=url, timeout=120)
        self._n = 0

    # --- helpers ----------------------------------------------------------------------------
    def scores(self) -> tuple[int, list[float | None]]:
        r = self.client.post("/v1/rewards", json=GROUP)
        assert r.status_code == 200, r.text
        body = r.json()
        return body["weight_version"], body["groups"][0]["scores"]

    def tensors(self, kind: str) -> tuple[dict[str, torch.Tensor], bool]:
        """A set of tensors to send and whether the server must accept it."""
        name = self.rng.choice([k for k in self.state if k != "lm_head.weight"])
        t = self.state[name]
        if kind == "good":
            gen = torch.Generator().manual_seed(self.rng.randrange(1 << 30))
            return {name: t + 0.01 * torch.randn(t.shape, generator=gen, dtype=t.dtype)}, True
        if kind == "shape":
            return {name: torch.zeros(t.shape[0] + 1, *t.shape[1:], dtype=t.dtype)}, False
        if kind == "nan":
            bad = t.clone()
            bad.view(-1)[0] = float("nan")
            return {name: bad}, False
        return {"model.no_such.weight": torch.zeros(3)}, False

    def path(self) -> Path:
        self._n += 1
        return self.dir / f"p{self._n}"

    # --- one step ---------------------------------------------------------------------------
    def step(self) -> None:
        op = self.rng.choice(
            ["push", "push", "upload", "upload", "reload", "adapter", "detach", "score"]
        )
        before = self.scores()
        expect_ok, update, asked, response = getattr(self, op)()
        self.seen[(op, response.status_code)] += 1
        if response.status_code >= 500:
            self.failures.append(f"{op}: {response.status_code} {response.text[:200]}")
        ok = response.status_code < 300
        if ok != expect_ok:
            self.failures.append(f"{op}: expected ok={expect_ok}, got {response.status_code} "
                                 f"{response.text[:200]}")  # fmt: skip
        after = self.scores()
        if ok and update is not None:  # a weight update: a new version
            update()
            want = asked if asked is not None else self.version + 1
            if after[0] != want:
                self.failures.append(f"{op}: version {after[0]}, expected {want}")
            self.version = after[0]
        elif after != before:
            self.failures.append(f"{op} ({response.status_code}) changed {before} → {after}")

    def push(self):
        kind = self.rng.choice(["good", "good", "shape", "nan", "name", "garbage", "stale"])
        if kind == "garbage":
            r = self.client.post("/admin/weights/push", content=b"\x05" * 64, headers=OCTET)
            return False, None, None, r
        tensors, good = self.tensors("good" if kind == "stale" else kind)
        version = self.version if kind == "stale" else None  # not above the served one: 409
        params = {} if version is None else {"version": version}
        r = self.client.post("/admin/weights/push", content=save(tensors), headers=OCTET,
                             params=params)  # fmt: skip
        ok = good and kind != "stale"
        return ok, (lambda: self.state.update(tensors)) if ok else None, None, r

    def upload(self):
        created = self.client.post("/admin/weights/uploads", headers=AUTH)
        if self.rng.random() < 0.1:
            r = self.client.post("/admin/weights/uploads/nope/commit", json={}, headers=AUTH)
            return False, None, None, r
        upload = created.json()["upload_id"]
        staged, good = {}, True
        for _ in range(self.rng.randint(1, 3)):
            tensors, valid = self.tensors(self.rng.choice(["good", "good", "shape", "nan"]))
            r = self.client.post(f"/admin/weights/uploads/{upload}/buckets",
                                 content=save(tensors), headers=OCTET)  # fmt: skip
            self.seen[("bucket", r.status_code)] += 1
            if r.status_code >= 500:
                self.failures.append(f"bucket: {r.status_code} {r.text[:200]}")
            if r.status_code < 300:
                staged.update(tensors)
            good = good and valid
        if self.rng.random() < 0.2:  # an abort succeeds and changes nothing served
            return True, None, None, self.client.delete(f"/admin/weights/uploads/{upload}",
                                                        headers=AUTH)  # fmt: skip
        version = self.version + self.rng.choice([1, 3]) if self.rng.random() < 0.3 else None
        r = self.client.post(f"/admin/weights/uploads/{upload}/commit",
                             json={} if version is None else {"version": version},
                             headers=AUTH)  # fmt: skip
        ok = bool(staged)  # a bad bucket is refused on its own; the good ones stay staged
        if ok and self.rng.random() < 0.2:  # committing twice: the upload is gone
            again = self.client.post(f"/admin/weights/uploads/{upload}/commit", json={},
                                     headers=AUTH)  # fmt: skip
            self.seen[("commit twice", again.status_code)] += 1
            if again.status_code != 404:
                self.failures.append(f"second commit: {again.status_code} {again.text[:200]}")
        return ok, (lambda: self.state.update(staged)) if ok else None, version, r

    def reload(self):
        kind = self.rng.choice(["good", "good", "missing", "outside"])
        if kind == "missing":
            body = {"path": str(self.dir / "does-not-exist")}
        elif kind == "outside":
            body = {"path": "/etc"}
        else:
            tensors, _ = self.tensors("good")
            state = {**self.state, **tensors}
            path = self.path()
            path.mkdir()
            kept = {k: v.contiguous() for k, v in state.items() if k != "lm_head.weight"}
            (path / "model.safetensors").write_bytes(save(kept))
            body = {"path": str(path)}
        r = self.client.post("/admin/weights/reload", json=body, headers=AUTH)
        ok = kind == "good"
        return ok, (lambda: self.state.update(tensors)) if ok else None, None, r

    def adapter(self):
        good = self.rng.random() < 0.6
        config = LORA if good else {**LORA, "target_modules": ["q_proj", "input_layernorm"]}
        path = self.path()
        path.mkdir()
        gen = torch.Generator().manual_seed(self.rng.randrange(1 << 30))
        tensors = {}
        for layer in range(2):
            for proj, out in (("q_proj", 32), ("v_proj", 16)):
                stem = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
                tensors[f"{stem}.lora_A.weight"] = 0.1 * torch.randn(2, 32, generator=gen)
                tensors[f"{stem}.lora_B.weight"] = 0.1 * torch.randn(out, 2, generator=gen)
        (path / "adapter_config.json").write_text(json.dumps(config))
        (path / "adapter_model.safetensors").write_bytes(save(tensors))
        r = self.client.post("/admin/adapter", json={"path": str(path)}, headers=AUTH)
        return good, (lambda: setattr(self, "attached", path)) if good else None, None, r

    def detach(self):
        r = self.client.delete("/admin/adapter", headers=AUTH)
        ok = self.attached is not None
        return ok, (lambda: setattr(self, "attached", None)) if ok else None, None, r

    def score(self):
        return True, None, None, self.client.get("/v1/model")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "fuzz_weights_stateful.md")
    args = p.parse_args()
    from transformers import AutoTokenizer

    from tests.tiny_models import tiny_llama_for
    from vigor_service.models.loader import resolve_model_path
    from vigor_service.settings import Settings

    work = Path(tempfile.mkdtemp())
    model_dir, weights = work / "model", work / "weights"
    weights.mkdir()
    tok = AutoTokenizer.from_pretrained(resolve_model_path("default", Settings().cache_dir)[1])
    model = tiny_llama_for(tok, dtype=torch.float32)
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = ["--model", str(model_dir), "--admin-token", TOKEN,
             "--allowed-weights-dir", str(weights)]  # fmt: skip
    server = ProcessServer(*flags).start(work / "server.log")
    t0 = time.monotonic()
    try:
        fuzzer = Fuzzer(server.url, weights, base, args.seed)
        for _ in range(args.steps):
            fuzzer.step()
        final = fuzzer.scores()
    finally:
        server.stop()
    wall = time.monotonic() - t0
    # The oracle: a fresh server given the weights (and adapter) the client believes in.
    oracle_dir = weights / "oracle"
    oracle_dir.mkdir()
    kept = {k: v.contiguous() for k, v in fuzzer.state.items() if k != "lm_head.weight"}
    (oracle_dir / "model.safetensors").write_bytes(save(kept))
    fresh = ProcessServer(*flags).start(work / "oracle.log")
    try:
        with httpx.Client(base_url=fresh.url, timeout=120) as c:
            assert c.post("/admin/weights/reload", json={"path": str(oracle_dir)},
                          headers=AUTH).status_code == 200  # fmt: skip
            if fuzzer.attached is not None:
                assert c.post("/admin/adapter", json={"path": str(fuzzer.attached)},
                              headers=AUTH).status_code == 200  # fmt: skip
            want = c.post("/v1/rewards", json=GROUP).json()["groups"][0]["scores"]
    finally:
        fresh.stop()
    if final[1] != want:
        fuzzer.failures.append(f"final scores {final[1]} differ from a fresh server's {want}")
    fives = sum(n for (_, status), n in fuzzer.seen.items() if status >= 500)
    table = "\n".join(
        f"| {op} | {status} | {n} |" for (op, status), n in sorted(fuzzer.seen.items())
    )
    verdict = "no failures" if not fuzzer.failures else f"{len(fuzzer.failures)} FAILURES"
    report = (
        "# Stateful fuzz of the weight plane\n\n"
        f"Command: `python benchmarks/fuzz_weights_stateful.py --steps {args.steps} --seed "
        f"{args.seed}` (tiny random Llama over the default tokenizer). Machine: 2 cores, 24 GiB, "
        f"no GPU ({time.strftime('%Y-%m-%d')}).\n\n"
        f"{args.steps} steps in {wall:.0f} s; final weight_version {final[0]}; 5xx answers: "
        f"{fives}; {verdict}. Final scores equal a fresh server's given the same weights"
        f"{' and adapter' if fuzzer.attached else ''}: {final[1] == want}.\n\n"
        "| operation | status | count |\n|---|---|---|\n"
        f"{table}\n"
        + ("" if not fuzzer.failures else "\n" + "\n".join(f"- {f}" for f in fuzzer.failures))
    )
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return 1 if fuzzer.failures else 0


if __name__ == "__main__":
    sys.exit(main())
