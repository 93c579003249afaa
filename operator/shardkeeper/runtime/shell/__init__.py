"""The I/O shell of a shard replica: start-up, roles and Lease, status reports, admin HTTP, logs."""
