"""The service as a Ray Serve application: one HTTP ingress in front of N scoring replicas.

ops.py          the weight updates the cluster agrees on (tensors, reload, adapter) and their
                compaction into what a new replica replays
ledger.py       WeightLedger, the one named actor holding the committed version, where its weights
                live, and which replicas staged and applied each update
replica_ops.py  a replica staging and applying one update with the weights/ parts
replica.py      ScoringReplica: the usual Runtime (worker, slot, scheduler, weight plane) plus its
                sync loop with the ledger
router.py       TokenCostRouter: replicas chosen by the tokens they have outstanding
remote.py       ReplicaScheduler: the pipeline's engine call made on a replica instead
cluster_weights.py  the ingress's weight plane: stage on every replica, commit, record
ingress.py      IngressRuntime: the same app, pipeline and assembler in front of the replicas
app.py          the Serve application and `vigor-serve --ray`
"""
