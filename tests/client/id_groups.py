"""Groups of random token ids, for routing and replica tests (no tokenizer needed)."""

import random

from vigor_client import Group


def ids_group(prompt_len: int, completion_lens: list[int], seed: int = 0) -> Group:
    rng = random.Random(seed)
    return Group(
        id=seed,
        prompt_ids=[rng.randrange(1, 64) for _ in range(prompt_len)],
        completion_ids=[[rng.randrange(1, 64) for _ in range(n)] for n in completion_lens],
    )
