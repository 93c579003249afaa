"""Task kinds: what a capture, a derivation and a materialization do inside a transaction."""
