"""The operator: kopf handlers that reconcile Tasks and Shards into workloads."""
