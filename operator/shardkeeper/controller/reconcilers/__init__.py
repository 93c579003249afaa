"""Reconcilers: one per kind, each diffs what should exist against what does, and acts."""
