"""A store without a Secret uses boto3's default chain: with the variables a web identity
sets, the runtime's client trades the projected token for temporary credentials at the STS
endpoint it is given, signs with them, and fetches new ones (reading the token file again,
which the node rotates) when they near their expiry, without being built anew.

The STS and the bucket are one small local HTTP server that records what it is sent."""

from __future__ import annotations

import datetime
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.runtime.shell.storagemap import object_store

ROLE = "arn:aws:iam::123456789012:role/shards"


class Recorder(http.server.BaseHTTPRequestHandler):
    sts_calls: list[dict[str, list[str]]]
    s3_calls: list[dict[str, str]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        form = urllib.parse.parse_qs(body)
        self.sts_calls.append(form)
        n = len(self.sts_calls)
        # inside botocore's mandatory refresh window: the next request fetches new ones
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
        reply = f"""<AssumeRoleWithWebIdentityResponse
  xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult>
<Credentials><AccessKeyId>TEMPKEY{n}</AccessKeyId><SecretAccessKey>secret{n}</SecretAccessKey>
<SessionToken>session{n}</SessionToken>
<Expiration>{expires.strftime("%Y-%m-%dT%H:%M:%SZ")}</Expiration></Credentials>
<SubjectFromWebIdentityToken>system:serviceaccount:ns:s-runtime</SubjectFromWebIdentityToken>
<AssumedRoleUser><Arn>{ROLE}/pod-0</Arn><AssumedRoleId>X:pod-0</AssumedRoleId></AssumedRoleUser>
</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>r{n}</RequestId>
</ResponseMetadata></AssumeRoleWithWebIdentityResponse>""".encode()
        self._answer(reply, "text/xml")

    def do_HEAD(self) -> None:
        self.s3_calls.append(
            {
                "authorization": self.headers.get("Authorization", ""),
                "token": self.headers.get("X-Amz-Security-Token", ""),
            }
        )
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.send_header("Last-Modified", "Mon, 07 Dec 2026 20:00:00 GMT")
        self.end_headers()

    def _answer(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Handler", (Recorder,), {"sts_calls": [], "s3_calls": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        thread.join(timeout=5)


def test_without_a_secret_the_client_assumes_the_role_and_refreshes_its_credentials(
    server: tuple[str, type[Recorder]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, recorder = server
    token = tmp_path / "token"
    token.write_text("jwt-one")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # what the workload sets for spec.webIdentity; nothing else on the chain answers
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "pod-0")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", url)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mapping = StorageMapping.model_validate(
        {"metadata": {"name": "m"}, "spec": {"stores": [{"bucket": "shards", "endpoint": url}]}}
    )
    objects = object_store(mapping, {})

    objects.client.head_object(Bucket="shards", Key="a")
    token.write_text("jwt-two")  # the node rotated the token
    objects.client.head_object(Bucket="shards", Key="a")

    assert [c["WebIdentityToken"] for c in recorder.sts_calls] == [["jwt-one"], ["jwt-two"]]
    first = recorder.sts_calls[0]
    assert (first["Action"], first["RoleArn"], first["RoleSessionName"]) == (
        ["AssumeRoleWithWebIdentity"],
        [ROLE],
        ["pod-0"],
    )
    assert [c["token"] for c in recorder.s3_calls] == ["session1", "session2"]
    assert "Credential=TEMPKEY1/" in recorder.s3_calls[0]["authorization"]
    assert "Credential=TEMPKEY2/" in recorder.s3_calls[1]["authorization"]


def test_a_secret_with_half_a_key_pair_is_still_refused() -> None:
    mapping = StorageMapping.model_validate(
        {"metadata": {"name": "m"}, "spec": {"stores": [{"bucket": "shards"}]}}
    )
    with pytest.raises(ValueError, match="lack secretAccessKey"):
        object_store(mapping, {"accessKeyId": "k"})
