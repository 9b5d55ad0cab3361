"""The service as a Ray Serve application: one HTTP ingress in front of N scoring replicas.

ops.py          the weight core's updates with the version the cluster agrees on, and their
                compaction into what a new replica replays
ledger.py       WeightLedger, the one named actor holding the committed version, where its weights
                live, and which replicas staged and applied each update
replica.py      ScoringReplica: the usual Runtime (worker, slot, scheduler, weight core) plus its
                sync loop with the ledger; it stages and applies through weights/core.py
router.py       TokenCostRouter: replicas chosen by the tokens they have outstanding
remote.py       ReplicaScheduler: the pipeline's engine call made on a replica instead
cluster_weights.py  the ingress's weight front: fan an update out, commit, record (no transfer)
model_view.py   the ingress's ModelFacts of the model its replicas serve
ingress.py      IngressRuntime: the same app, pipeline and assembler in front of the replicas
app.py          the Serve application and `vigor-serve --ray`
"""
