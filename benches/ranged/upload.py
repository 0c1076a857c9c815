"""Create a bucket (if missing) and upload granule files, keeping their file names as keys.

  python upload.py --endpoint http://127.0.0.1:PORT --bucket B [--prefix P/] FILE...

Prints the keys, one a line (usable as vz_run.py's --keys-file). Needs boto3; credentials from
the environment (AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 for
moto).
"""

import argparse
import os

import boto3
from botocore.config import Config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--prefix", default="", help="key prefix, e.g. granules/ (default: none)")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    s3 = boto3.client("s3", endpoint_url=a.endpoint,
                      region_name=os.environ.get("AWS_REGION", "us-east-1"),
                      config=Config(s3={"addressing_style": "path"}))
    try:
        s3.head_bucket(Bucket=a.bucket)
    except s3.exceptions.ClientError:
        s3.create_bucket(Bucket=a.bucket)
    for f in a.files:
        key = a.prefix + os.path.basename(f)
        s3.upload_file(f, a.bucket, key)
        print(key)


if __name__ == "__main__":
    main()
