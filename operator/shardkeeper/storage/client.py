"""Building the boto3 client the storage layer expects.

botocore's own retries are switched off: :class:`.objectstore.ObjectStore` retries with
its own policy and must see every answer, notably the 412 of a conditional create that a
transparent retry of a timed-out request would otherwise turn into a confusing failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def make_s3_client(
    *,
    endpoint: str | None,
    access_key: str | None,
    secret_key: str | None,
    region: str,
    max_connections: int = 16,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
) -> S3Client:
    config = Config(
        region_name=region,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # fragments carry their own sha256, checked on every read
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
    )
    # a key pair of None leaves boto3 its default credential chain, which refreshes the
    # temporary credentials it gets (web identity, container, instance profile)
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )
    return client
