"""The access key of a store, read from the Secret its StorageMapping names."""

from __future__ import annotations

import base64

from shardkeeper.api.storagemapping import Store
from shardkeeper.controller.engine.kube import AsyncKube
from shardkeeper.controller.reconcilers.buckets import Credentials


class CredentialsProblem(Exception):
    """The Secret or one of its keys is missing; ``reason`` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def store_credentials(kube: AsyncKube, namespace: str, store: Store) -> Credentials | None:
    """The store's key pair; None when it names no Secret (ambient credentials)."""
    ref = store.credentials_secret_ref
    if ref is None:
        return None
    secret = await kube.get("v1", "Secret", namespace, ref.name)
    if secret is None:
        raise CredentialsProblem(
            "SecretNotFound", f"Secret {ref.name} (credentialsSecretRef) does not exist"
        )
    data = secret.get("data") or {}
    values = {}
    for key in (ref.access_key_id_key, ref.secret_access_key_key):
        if key not in data:
            raise CredentialsProblem(
                "SecretKeyNotFound", f"Secret {ref.name} has no key {key} (credentialsSecretRef)"
            )
        values[key] = base64.b64decode(data[key]).decode().strip()
    return Credentials(values[ref.access_key_id_key], values[ref.secret_access_key_key])
