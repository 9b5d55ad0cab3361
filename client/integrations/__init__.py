"""Adapters for the trainers people already run.

- `vigor_client.integrations.trl`: a GRPOTrainer reward function and a weight-sync callback.
- `vigor_client.integrations.verl`: `compute_score` / `compute_score_batch` for verl's
  `custom_reward_function` (importable by file path).
- OpenRLHF needs no client code: point `--remote_rm_url` at the server's `/get_reward`.

Each module imports its trainer's packages lazily; the client itself stays torch-free.
"""
