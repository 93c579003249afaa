"""Kubernetes plumbing shared by the operator and the runtime: API paths, where the
credentials come from, the light transport, requests, and Lease election."""
