"""An upstream that answers before it has read the body (S3 refusing an upload at once)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from .conftest import Stack, object_arn

pytestmark = pytest.mark.slow


class EarlyRefuser:
    """Reads a request's head, answers 403 at once and closes, never reading the body."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            received = b""
            while b"\r\n\r\n" not in received:
                piece = connection.recv(65536)
                if not piece:
                    return
                received += piece
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message><RequestId>up-403</RequestId></Error>"
            )
            connection.sendall(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
                b"x-amz-request-id: up-403\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def refusing(make_stack) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    upstream = EarlyRefuser()
    try:
        yield make_stack(upstream=upstream.url)
    finally:
        upstream.close()


def test_an_upload_refused_early_by_the_upstream_gets_the_upstreams_answer(
    refusing: Stack,
) -> None:
    grant = refusing.grant(["s3:PutObject"], [object_arn("early.bin")])
    s3 = refusing.client("s3", grant.creds)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="reports", Key="early.bin", Body=b"e" * (16 * 1024 * 1024))
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    events = refusing.wait_events(
        grant.id, lambda es: any(e.type == "call.completed" for e in es)
    )
    (completed,) = [e.data for e in events if e.type == "call.completed"]
    assert completed["status"] == 403
    assert completed["upstream_request_id"] == "up-403"
