"""MAILBOX_AUTH and MAILBOX_PERMISSION against a real S3 server that enforces IAM: moto on 127.0.0.1.

moto keeps its auth switch (``settings.INITIAL_NO_AUTH_ACTION_COUNT``) and its backends process-wide, so an
in-process server that enforces IAM would also enforce it on the shared ``s3_endpoint`` server of the other
tests. This module therefore runs its own moto server in a child process: it is set up without auth (bucket,
IAM users, access keys, policies), then ``POST /moto-api/reset-auth 0`` makes it check every request's
signature and the caller's IAM policies from then on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from typer.testing import CliRunner

from crdtsync.cli import app
from crdtsync.errors import MailboxError, exit_status
from crdtsync.mailbox.backend import BlobStore, open_store
from crdtsync.vault import Vault
from tests.conftest import PASSPHRASE, cheap_kdf

BUCKET = "box"
OTHER_BUCKET = "other"
REGION = "us-east-1"
#: Points the AWS variables at the IAM server with an access key (id, secret).
SetKey = Callable[[tuple[str, str]], None]
# The child prints its port (port 0: no race for a free port) and serves until its stdin closes.
SERVER = ("import sys\nfrom moto.server import ThreadedMotoServer\n"
          "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\nserver.start()\n"
          "print(server.get_host_and_port()[1], flush=True)\nsys.stdin.read()\nserver.stop()\n")


@dataclass(frozen=True)
class AuthS3:
    """The IAM-enforcing server: its endpoint and the access keys (id, secret) of its two users."""

    endpoint: str
    writer: tuple[str, str]  # s3:* on BUCKET only
    denied: tuple[str, str]  # may list BUCKET, explicitly denied GetObject and PutObject in it


def _policy(*statements: dict[str, object]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _user(iam: Any, name: str, policy: str) -> tuple[str, str]:
    """Create IAM user ``name`` with inline ``policy``; returns its new access key."""
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="mailbox", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="module")
def auth_s3() -> Iterator[AuthS3]:
    """A moto server in a child process on 127.0.0.1, set up, then switched to enforce IAM."""
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "inf"}  # no auth while we set it up
    child = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), f"the moto server did not start (said {line!r})"
        endpoint = f"http://127.0.0.1:{int(line)}"
        setup = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "setup",
                 "aws_secret_access_key": "setup"}
        s3 = boto3.client("s3", **setup)
        for bucket in (BUCKET, OTHER_BUCKET):
            s3.create_bucket(Bucket=bucket)
        iam = boto3.client("iam", **setup)
        box = [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]
        writer = _user(iam, "writer", _policy({"Effect": "Allow", "Action": "s3:*", "Resource": box}))
        denied = _user(iam, "denied", _policy(
            {"Effect": "Allow", "Action": "s3:*", "Resource": box},
            {"Effect": "Deny", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": box[1]}))
        # What moto's set_initial_no_auth_action_count does in server mode: from now on, no request is free.
        # (A form content type would hide the body from moto; no proxy: the request stays on 127.0.0.1.)
        enforce = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(enforce) as answer:
            assert json.load(answer)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"] == "inf"
        yield AuthS3(endpoint, writer, denied)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@pytest.fixture
def as_key(auth_s3: AuthS3, monkeypatch: pytest.MonkeyPatch) -> SetKey:
    """``as_key((id, secret))`` points the AWS variables at the IAM server with those credentials. Every
    ``open_store`` builds a new S3FileSystem (``skip_instance_cache``), so it reads them afresh."""

    def use(key: tuple[str, str]) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", auth_s3.endpoint)
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)

    return use


def _store(url: str, sleeps: list[float]) -> BlobStore:
    """An S3 store whose backoff sleeps are recorded instead of slept."""
    return open_store(url, base_delay=0.01, sleep=sleeps.append)


def _code(call: Callable[[], object]) -> str:
    """The MailboxError code ``call()`` raises."""
    with pytest.raises(MailboxError) as raised:
        call()
    return raised.value.code


def _every_operation(store: BlobStore) -> list[str]:
    """The codes put, get, list and delete raise on ``store``."""
    return [_code(lambda: store.put("k", b"x")), _code(lambda: store.get("k")), _code(lambda: store.list("")),
            _code(lambda: store.delete("k"))]


def test_unknown_key_and_wrong_secret_are_mailbox_auth_and_not_retried(auth_s3: AuthS3, as_key: SetKey) -> None:
    """InvalidAccessKeyId and SignatureDoesNotMatch (which s3fs raises as PermissionError) are MAILBOX_AUTH,
    on every operation, at once: no backoff sleep, no second try."""
    for key in (("AKIAUNKNOWNKEY000000", "whatever"), (auth_s3.writer[0], "not-the-secret")):
        as_key(key)
        sleeps: list[float] = []
        store = _store(f"s3://{BUCKET}/auth", sleeps)
        started = time.monotonic()
        assert _every_operation(store) == ["MAILBOX_AUTH"] * 4, key
        assert sleeps == [] and time.monotonic() - started < 5
        with pytest.raises(MailboxError, match="AWS_ACCESS_KEY_ID"):
            store.get("k")


def test_a_valid_user_without_permission_is_mailbox_permission(auth_s3: AuthS3, as_key: SetKey) -> None:
    """AccessDenied, from an explicit Deny or from a bucket outside the user's policy, is MAILBOX_PERMISSION;
    listing, which the policy allows, still works, so the credentials themselves were accepted."""
    as_key(auth_s3.denied)
    sleeps: list[float] = []
    store = _store(f"s3://{BUCKET}/denied", sleeps)
    assert _code(lambda: store.put("k", b"x")) == "MAILBOX_PERMISSION"
    assert _code(lambda: store.get("k")) == "MAILBOX_PERMISSION"
    assert store.list("") == []
    as_key(auth_s3.writer)
    elsewhere = _store(f"s3://{OTHER_BUCKET}/p", sleeps)
    assert _code(lambda: elsewhere.put("k", b"x")) == "MAILBOX_PERMISSION"
    assert _code(lambda: elsewhere.list("")) == "MAILBOX_PERMISSION"
    assert sleeps == []


def test_the_permitted_user_puts_and_gets(auth_s3: AuthS3, as_key: SetKey) -> None:
    """With the writer's key, a put then a get round-trips the bytes under auth enforcement."""
    as_key(auth_s3.writer)
    store = open_store(f"s3://{BUCKET}/ok")
    store.put("dir/object", b"\x00ciphertext\xff")
    assert store.get("dir/object") == b"\x00ciphertext\xff"
    assert store.list("dir") == ["object"] and store.get("dir/missing") is None


def test_vault_sync_with_bad_credentials_reports_mailbox_auth_and_keeps_memories(
    auth_s3: AuthS3, as_key: SetKey, tmp_path: Path
) -> None:
    """Vault.sync does not raise for a refused relay: its report, ``relays()[..]['last_error']`` and the
    audit carry MAILBOX_AUTH, and no memory is touched. ``add_relay`` with bad credentials raises it and
    saves no relay."""
    Vault.init(tmp_path / "v", name="test", device_name="v", passphrase=PASSPHRASE, kdf=cheap_kdf())
    with Vault.open(tmp_path / "v") as vault:
        vault.add("the auth test keeps this", category="facts", tags=["s3"])
        as_key(auth_s3.writer)
        vault.add_relay("s3", f"s3://{BUCKET}/vault")
        assert [e for r in vault.sync() for e in r.errors] == []
        before = [m.to_json() for m in vault.list(include_deleted=True)]
        vault.add("added after the last good sync")
        as_key((auth_s3.writer[0], "not-the-secret"))
        (report,) = vault.sync()
        assert [e["code"] for e in report.errors] == ["MAILBOX_AUTH"]
        (relay,) = vault.relays()
        assert relay["last_error"].startswith("[MAILBOX_AUTH] the store refused our credentials")
        assert relay["pending_push"] >= 1
        after = {m.id: m.to_json() for m in vault.list(include_deleted=True)}
        assert all(after[m["id"]] == m for m in before) and len(after) == len(before) + 1
        with pytest.raises(MailboxError) as raised:
            vault.add_relay("again", f"s3://{BUCKET}/other-prefix")
        assert raised.value.code == "MAILBOX_AUTH"
        assert [r["name"] for r in vault.relays()] == ["s3"]


def test_cli_sync_with_bad_credentials_exits_with_the_mailbox_status_without_traceback(
    auth_s3: AuthS3, as_key: SetKey, tmp_path: Path
) -> None:
    """``crdtsync sync`` prints the code on stderr (and in --json on stdout) and exits with
    ``exit_status(MailboxError)``, 8."""
    path = tmp_path / "cli"
    Vault.init(path, name="test", device_name="cli", passphrase=PASSPHRASE, kdf=cheap_kdf())
    as_key(auth_s3.writer)
    with Vault.open(path) as vault:
        vault.add("a memory synced over s3")
        vault.add_relay("s3", f"s3://{BUCKET}/cli")
    as_key(("AKIAUNKNOWNKEY000000", "whatever"))
    runner = CliRunner()
    done = runner.invoke(app, ["--vault", str(path), "sync"], catch_exceptions=False)
    assert done.exit_code == exit_status(MailboxError("x")) == 8
    assert "[MAILBOX_AUTH]" in done.stderr and "AWS_ACCESS_KEY_ID" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    as_json = runner.invoke(app, ["--vault", str(path), "sync", "--json"], catch_exceptions=False)
    assert as_json.exit_code == 8
    (report,) = json.loads(as_json.stdout)
    assert [e["code"] for e in report["errors"]] == ["MAILBOX_AUTH"]
    with Vault.open(path) as vault:
        assert [m.content for m in vault.list()] == ["a memory synced over s3"]
        assert vault.relays()[0]["last_error"].startswith("[MAILBOX_AUTH]")
