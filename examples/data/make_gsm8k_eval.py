"""Build gsm8k_eval.jsonl (the `vigor-eval` sample set) from GSM8K questions with model solutions.

Each source line holds a question and four off-policy solutions graded against the reference
answer (`is_correct`), written by GPT-3 6B/175B models (finetuned, and with verification), from
GSM8K's released example solutions (MIT, see GSM8K_LICENSE). The prompt is a chat turn with the
question and an instruction that asks for the solutions' own format (the answer after "A:").

    python examples/data/make_gsm8k_eval.py SOURCE.jsonl examples/data/gsm8k_eval.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

INSTRUCTION = "Solve the problem step by step, then give the final answer on a last line 'A: ...'."


def convert(row: dict, index: int) -> dict:
    return {
        "id": f"gsm8k-{index}",
        "messages": [{"role": "user", "content": f"{row['question']}\n{INSTRUCTION}"}],
        "answer": row["answer"],
        "completions": [
            {"text": s["solution"], "correct": bool(s["is_correct"]), "source": s["source"]}
            for s in row["solutions"]
        ],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    rows = [json.loads(line) for line in args.source.read_text().splitlines() if line.strip()]
    lines = [json.dumps(convert(r, i), ensure_ascii=False) for i, r in enumerate(rows)]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} groups written to {args.out}")


if __name__ == "__main__":
    main()
