"""Kubernetes plumbing shared by the operator and the runtime: transport, requests, Leases."""
