"""Create the CloudFront distribution the compose stack's CDN settings point at.

Runs once at ``docker compose up`` (service ``cloudfront-init``) against the CloudFront API
emulator (moto). It never creates anything on real AWS: without
``AWS_CLOUDFRONT_ENDPOINT_URL`` it only logs and exits, because a real distribution is
created by whoever owns the AWS account and its id is put in ``.env``.

The settings need the distribution id in the environment of every process (web, workers,
``docker compose exec`` shells alike), so the id has to be known before anything starts.
moto draws ids from a random generator that can be seeded (``POST /moto-api/seed``), so
seeding it just before the one ``CreateDistribution`` call yields the same id on every
fresh emulator of the same version. ``.env.example`` carries that id; if a different moto
version draws a different one, this script fails and says which id to put in ``.env``.
``tests/unit/test_compose.py`` runs this script against the pinned moto to keep the two in
step.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.parse
import urllib.request
from typing import Any

import boto3

logger = logging.getLogger("cloudfront_init")

# Seed of moto's random generator; the id in .env.example follows from it.
EMULATOR_SEED = 20240601
CALLER_REFERENCE = "media-pipeline-compose"


def distribution_config(*, origin_host: str, origin_port: int, bucket: str) -> dict[str, Any]:
    """A minimal distribution in front of the public bucket, served by MinIO over HTTP."""
    return {
        "CallerReference": CALLER_REFERENCE,
        "Comment": "media-pipeline compose stack: public bucket",
        "Enabled": True,
        "Origins": {
            "Quantity": 1,
            "Items": [
                {
                    "Id": "public-bucket",
                    "DomainName": origin_host,
                    "OriginPath": f"/{bucket}",
                    "CustomOriginConfig": {
                        "HTTPPort": origin_port,
                        "HTTPSPort": 443,
                        "OriginProtocolPolicy": "http-only",
                    },
                }
            ],
        },
        "DefaultCacheBehavior": {
            "TargetOriginId": "public-bucket",
            "ViewerProtocolPolicy": "allow-all",
            "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
            "MinTTL": 0,
        },
    }


def existing_distribution_ids(client: Any) -> list[str]:
    paginator = client.get_paginator("list_distributions")
    ids: list[str] = []
    for page in paginator.paginate():
        ids.extend(item["Id"] for item in page["DistributionList"].get("Items", []))
    return ids


def seed_emulator(endpoint: str) -> None:
    request = urllib.request.Request(
        f"{endpoint.rstrip('/')}/moto-api/seed?a={EMULATOR_SEED}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    endpoint = os.environ.get("AWS_CLOUDFRONT_ENDPOINT_URL", "")
    wanted = os.environ.get("CLOUDFRONT_DISTRIBUTION_ID", "")
    if not endpoint:
        logger.info("No AWS_CLOUDFRONT_ENDPOINT_URL: real CloudFront, nothing to create")
        return 0
    if not wanted:
        logger.info("No CLOUDFRONT_DISTRIBUTION_ID: the CDN backend records invalidations locally")
        return 0

    client = boto3.client(
        "cloudfront",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_S3_REGION_NAME") or "us-east-1",
    )
    ids = existing_distribution_ids(client)
    if wanted in ids:
        logger.info("Distribution %s already exists", wanted)
        return 0
    if ids:
        logger.error(
            "The emulator holds distributions %s but not %s: set CLOUDFRONT_DISTRIBUTION_ID "
            "to one of them in .env, or restart the emulator to start empty",
            ", ".join(ids),
            wanted,
        )
        return 1

    seed_emulator(endpoint)
    # The origin is the S3 endpoint the app writes to (MinIO in the stack).
    origin = urllib.parse.urlsplit(os.environ.get("AWS_S3_ENDPOINT_URL") or "http://minio:9000")
    response = client.create_distribution(
        DistributionConfig=distribution_config(
            origin_host=origin.hostname or "minio",
            origin_port=origin.port or 80,
            bucket=os.environ.get("PIPELINE_PUBLIC_BUCKET", "media-public"),
        )
    )
    created = response["Distribution"]["Id"]
    if created != wanted:
        logger.error(
            "The emulator created distribution %s, but CLOUDFRONT_DISTRIBUTION_ID is %s "
            "(another moto version draws other ids): set CLOUDFRONT_DISTRIBUTION_ID=%s in .env",
            created,
            wanted,
            created,
        )
        return 1
    logger.info("Created distribution %s", created)
    return 0


if __name__ == "__main__":
    sys.exit(main())
