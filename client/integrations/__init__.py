"""Adapters for the trainers people already run.

- `vigor_client.integrations.trl`: a GRPOTrainer reward function and a weight-sync callback
  (over HTTP, or a torch.distributed group with the servers: `group_sync.py`).
- `vigor_client.integrations.verl`: `compute_score` / `compute_score_batch` for verl's
  `custom_reward_function` (importable by file path); `verl_reward_loop`: the reward-loop
  manager of verl ≥ 0.7; `verl_checkpoint`: the checkpoint callback that makes the server
  reload each saved actor (`trainer.checkpoint_callback_class`).
- OpenRLHF needs no client code: point `--remote_rm_url` at the server's `/get_reward`.

Each module imports its trainer's packages lazily; the client itself stays torch-free.
"""
