"""The transaction core of a shard: the processor and what one transaction is made of."""
