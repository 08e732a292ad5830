"""The main job through S3: two devices sync LoCoMo through a bucket of moto's S3 server on 127.0.0.1.

The example starts moto's server mode itself (no server to install), points the usual AWS variables at it
and uses ``s3://<bucket>/<prefix>`` as the mailbox, exactly as it would use MinIO, R2 or AWS. Run:

    .venv/bin/pip install -e '.[test]' && .venv/bin/python examples/two_devices_s3.py

Exits non-zero when the devices did not converge or the bucket holds readable text.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import boto3
from demo import console, print_report, run_demo
from moto.server import ThreadedMotoServer


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1",
    })
    try:
        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        s3.create_bucket(Bucket="memories")
        with tempfile.TemporaryDirectory(prefix="crdtsync-s3-demo-") as tmp:
            result = run_demo(Path(tmp), "s3://memories/alice")
        needles = [b"spare key", b"pottery class", b"Caroline", b"important", b"laptop", b"phone"]
        leaked = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="memories"):
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket="memories", Key=item["Key"])["Body"].read()
                leaked |= {n.decode() for n in needles if n in body}
        result["plaintext_in_bucket"] = sorted(leaked)
    finally:
        server.stop()
    print_report(result)
    ok = result["converged"] and result["level0_stayed_home"] and not result["plaintext_in_bucket"]
    console.print("[green]converged[/]" if ok else "[red]did not converge[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
