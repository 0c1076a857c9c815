"""Prints the commit history of an imerg-ingest repository on S3 as Icechunk's own reader sees it,
for tests that check exactly-once: one JSON object with, per commit of `main` (newest first), its
id, message, batch id and the granules it wrote with their outcome.

Usage: commit_history.py BUCKET PREFIX ENDPOINT_URL

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (moto accepts any). Called by
services/imerg-ingest/tests/faults.rs and chaos.rs.
"""

import json
import os
import sys

import icechunk as ic


def main() -> None:
    bucket, prefix, endpoint = sys.argv[1:4]
    storage = ic.s3_storage(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        region="us-east-1",
        allow_http=True,
        force_path_style=True,
        access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )
    repo = ic.Repository.open(storage)
    commits = []
    for snap in repo.ancestry(branch="main"):
        props = snap.metadata or {}
        granules = props.get("imerg_granules")
        commits.append(
            {
                "id": snap.id,
                "message": snap.message,
                "batch_id": props.get("imerg_batch_id"),
                "granules": granules if isinstance(granules, list) else [],
                "summary": None if isinstance(granules, list) else granules,
            }
        )
    json.dump({"commits": commits}, sys.stdout)


if __name__ == "__main__":
    main()
