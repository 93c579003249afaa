"""The shard runtime: what runs in every shard pod."""
