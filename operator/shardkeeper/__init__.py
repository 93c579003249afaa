"""Shardkeeper: sharded, stateful stream-processing tasks on Kubernetes."""

__version__ = "0.1.0"
