"""kopf logs in with the operator's own client configuration (controller.engine.handlers)."""

from __future__ import annotations

from kubernetes import client

from shardkeeper.controller.engine.handlers import connection_info


def test_a_bearer_token_and_tls_files_are_handed_to_kopf() -> None:
    configuration = client.Configuration()
    configuration.host = "https://10.0.0.1:443"
    configuration.ssl_ca_cert = "/sa/ca.crt"
    configuration.api_key = {"BearerToken": "the-token"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    info = connection_info(configuration, trust_env=True)
    assert (info.server, info.ca_path, info.insecure) == (
        "https://10.0.0.1:443",
        "/sa/ca.crt",
        False,
    )
    assert (info.scheme, info.token, info.trust_env) == ("Bearer", "the-token", True)


def test_client_certificates_without_a_token() -> None:
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.cert_file, configuration.key_file = "/pki/c.crt", "/pki/c.key"
    info = connection_info(configuration)
    assert (info.scheme, info.token, info.username) == (None, None, None)
    assert (info.certificate_path, info.private_key_path) == ("/pki/c.crt", "/pki/c.key")
