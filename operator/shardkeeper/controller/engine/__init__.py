"""The operator's engine: watches and their cache, the work queue, leader election, apply."""
