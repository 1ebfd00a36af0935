"""Making the moto S3 server check credentials, for tests of what users see with wrong ones."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import requests


def create_access_key(endpoint_url: str) -> dict[str, str]:
    """Creates an IAM user allowed everything and returns its access key
    (``AccessKeyId``, ``SecretAccessKey``)."""
    iam = boto3.client("iam", endpoint_url=endpoint_url, region_name="us-east-1")
    user = f"tuner-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=json.dumps(policy))
    return iam.create_access_key(UserName=user)["AccessKey"]


@contextmanager
def moto_checks_credentials(endpoint_url: str) -> Iterator[None]:
    """Makes the moto server check every request's signature against its IAM users."""
    reset = f"{endpoint_url}/moto-api/reset-auth"
    previous = requests.post(reset, data=b"0", timeout=10).json()
    try:
        yield
    finally:
        requests.post(
            reset, data=previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"].encode(), timeout=10
        )
