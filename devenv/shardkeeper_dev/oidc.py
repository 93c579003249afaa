"""The environment's API server as an OpenID Connect issuer, and MinIO's STS trusting it.

As on EKS, the API server's service-account tokens are signed for an issuer whose
discovery document and keys anyone may read, and an STS (MinIO's, here) trades a token
with the right audience for temporary credentials of a role: a shard pod with a projected
token gets its S3 credentials exactly as IRSA gives them. See docs/credentials.md.

MinIO has two OpenID configurations on the same issuer, told apart by the audience
(MinIO's client ID): one whose role may read and write every bucket, and one whose role
may only read, for a test to show that the role's policy, not a key, decides.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import urllib.request
from pathlib import Path

# the audiences (MinIO's client IDs) of the two roles
AUDIENCE = "shardkeeper-dev-sts"
READONLY_AUDIENCE = "shardkeeper-dev-sts-readonly"
ROLE_POLICIES = {AUDIENCE: "readwrite", READONLY_AUDIENCE: "readonly"}
# the issuer tokens were signed for before; still accepted, so a token issued then stays good
FORMER_ISSUER = "https://kubernetes.default.svc.cluster.local"
DISCOVERY_BINDING = "shardkeeper-dev:service-account-issuer-discovery"


def apiserver_flags(server: str) -> list[str]:
    """kube-apiserver's issuer flags: tokens name ``server`` (reachable, unlike the in-cluster
    name) as their issuer, whose discovery document points at its own keys."""
    return [
        f"--service-account-issuer={server}",
        f"--service-account-issuer={FORMER_ISSUER}",
        f"--service-account-jwks-uri={server}/openid/v1/jwks",
    ]


def allow_discovery(server: str, context: ssl.SSLContext) -> None:
    """Let anyone read the discovery document and keys (the built-in ClusterRole
    ``system:service-account-issuer-discovery``, bound to ``system:unauthenticated``), as an
    STS outside the cluster must; the rest of the API still needs credentials."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": DISCOVERY_BINDING},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:service-account-issuer-discovery",
        },
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Group",
                "name": "system:unauthenticated",
            }
        ],
    }
    path = f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{DISCOVERY_BINDING}"
    request = urllib.request.Request(
        server + path,
        data=json.dumps(binding).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    # PUT creates a binding that does not exist yet, and leaves an equal one as it is
    with urllib.request.urlopen(request, context=context, timeout=10):
        pass


def minio_env(server: str) -> dict[str, str]:
    """MinIO's OpenID configurations in role mode (a RoleArn per audience)."""
    config_url = f"{server}/.well-known/openid-configuration"
    env: dict[str, str] = {}
    for suffix, audience in (("", AUDIENCE), ("_READONLY", READONLY_AUDIENCE)):
        env[f"MINIO_IDENTITY_OPENID_CONFIG_URL{suffix}"] = config_url
        env[f"MINIO_IDENTITY_OPENID_CLIENT_ID{suffix}"] = audience
        env[f"MINIO_IDENTITY_OPENID_ROLE_POLICY{suffix}"] = ROLE_POLICIES[audience]
    return env


def minio_certs_dir(state_dir: Path, ca_pem: bytes) -> Path:
    """MinIO's certs dir: no certificate of its own (it serves plain HTTP), and the
    environment's CA in ``CAs/``, so that it trusts the API server it fetches keys from."""
    certs = state_dir / "minio-certs"
    (certs / "CAs").mkdir(parents=True, exist_ok=True)
    (certs / "CAs" / "shardkeeper-dev-ca.crt").write_bytes(ca_pem)
    return certs


def role_arn(audience: str, region: str = "") -> str:
    """The RoleArn MinIO gives the configuration of ``audience``: a hash of the client ID
    (cmd/.../openid.go), so it stays the same across restarts."""
    digest = base64.urlsafe_b64encode(hashlib.sha1(audience.encode()).digest()).rstrip(b"=")
    return f"arn:minio:iam:{region}::role/{digest.decode()}"
