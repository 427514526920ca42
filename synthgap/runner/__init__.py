"""The generic stage runner: a graph of stages with content-hash cache keys (dag, codehash), their
outputs on disk (workspace, build) and the executors that run them here, in processes or on a Ray
cluster (local, cluster, run). It knows nothing of what the stages compute."""
