"""The AWS endpoint, as a plain ASGI application (no framework on the hot path).

For every call: read the SigV4 claims -> find the grant -> verify the signature with the grant's
secret -> check the grant is live -> identify the operation -> derive the (action, ARN) pairs ->
check the grant covers every pair -> record "allowed" durably -> re-sign with jitgate's own
identity -> forward, streaming both ways -> record the outcome. Anything that cannot be done
exactly is refused, in the error shape the calling SDK expects, and recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

from jitgate.audit.batcher import NOT_DURABLE, AuditWriter
from jitgate.audit.flood import FailureRecorder, FailureThrottle
from jitgate.audit.log import NewEvent
from jitgate.awsapi import sigv4
from jitgate.awsapi.mapping import required_access
from jitgate.awsapi.operations import identify, needs_body
from jitgate.awsapi.types import Access, AwsRequest, Operation, UnsupportedOperation
from jitgate.clock import Clock
from jitgate.errors import AuditNotDurable, AuditUnavailable
from jitgate.gateway import quoting
from jitgate.gateway.cutoff import cut_off_on_purpose
from jitgate.gateway.errors import AwsError, protocol_for, render
from jitgate.gateway.http_client import MalformedAnswer, Response, UpstreamError
from jitgate.gateway.liveness import STREAM_CHECK_SECONDS, StreamLiveness, check_live
from jitgate.gateway.lookup import GatewayGrant, GrantLookup, refreshed
from jitgate.gateway.roles import (
    MixedAccounts,
    OwnerMismatch,
    bucket_owners,
    spelled_as,
    target_account,
)
from jitgate.gateway.stall import ClientStalled, StallWatch
from jitgate.gateway.upstream import Destination, SigningIdentity, Upstream
from jitgate.grants.credentials import MasterKey
from jitgate.grants.service import consume_one_call
from jitgate.store.driver import DriverTxn

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BUFFERED_BODY = 20 * 1024 * 1024  # one non-S3 request body, read whole to verify it
# All such bodies held at once: reading one needs only a known access key id (not secret), so
# without a ceiling a few hundred concurrent 20 MiB bodies would exhaust memory.
MAX_BUFFERED_TOTAL = 256 * 1024 * 1024
STREAM_CHUNK = 256 * 1024
# A client that stops reading a response holds an upstream connection from the pool: after this
# long without taking a piece, the call ends (AWS's side: the upstream client's read timeout).
CLIENT_STALL_SECONDS = 120.0
# A request body that stops arriving for this long ends the call (nginx's client_body_timeout):
# a buffered body holds the shared memory budget, a streamed one a pooled upstream connection.
BODY_STALL_SECONDS = 60.0

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
    }
)
_PRESIGN_QUERY_KEYS = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    }
)
_RESPONSE_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",  # trailers are not relayed
        "transfer-encoding",
        "upgrade",
        "server",
        "date",
    }
)


@dataclass
class Call:
    """What we know about one call as it goes through the checks (for the audit record)."""

    request_id: str
    method: str
    raw_path: str
    query: str
    headers: dict[str, str]
    client: str = ""  # the peer's address, as the socket reports it
    service: str = ""
    region: str = ""
    access_key_id: str = ""
    grant: GatewayGrant | None = None
    operation: Operation | None = None
    access: list[Access] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    body_read: bool = False  # the whole request body has been received
    authenticated: bool = False  # the signature and session token checked out
    allowed: bool = False  # its call.allowed event is written
    recording: bool = False  # its call.allowed event was handed to the audit writer
    buffered: int = 0  # bytes of its body held in memory (counted in the endpoint's budget)
    outcome_recorded: bool = False
    bytes_in: int = 0  # request body bytes received from the client
    bytes_out: int = 0  # response body bytes handed to the client
    status: int = 0  # the status answered, once the response has started
    ended_early: str | None = None  # why the response was cut short on the client's side
    upstream_request_id: str | None = None  # the id AWS gave the call, once it answered
    signed_with: tuple[str, ...] = ()  # jitgate's key id, token and signature sent upstream
    checked_at: datetime | None = None  # when the grant was last found live (call.allowed)
    role: str | None = None  # the role jitgate signs this call as ([aws.roles]), if any
    signer: SigningIdentity | None = None  # that role's session (None: jitgate's own identity)
    # What S3 must find owns the buckets, {header: account} ([aws.bucket_accounts])
    bucket_owners: dict[str, str] = field(default_factory=dict)
    liveness: StreamLiveness | None = None  # re-checks the grant while the call streams

    def event_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "service": self.service,
            "region": self.region,
            "method": self.method,
            "path": self.raw_path[:1024],
        }
        query = _query_for_record(self.query)
        if query:
            data["query"] = query[:1024]  # versionId, uploadId, prefix, ...: what was asked
        if self.access_key_id:
            data["access_key_id"] = self.access_key_id
        if self.operation is not None:
            data["operation"] = self.operation.name
        if self.access:
            data["access"] = [{"action": a.action, "arn": a.arn} for a in self.access]
        if self.role:
            data["role"] = self.role  # what AWS's own record (CloudTrail) names, with the agent
        return data


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("utf-8", "surrogateescape")  # botocore sends UTF-8 values
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _is_utf8(value: str) -> bool:
    """Header values were decoded as UTF-8 with surrogateescape: lone surrogates mark bytes
    that were not UTF-8 (they could not be signed again, nor forwarded faithfully)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _peer(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _query_for_record(query: str) -> str:
    """The query string without any X-Amz-* parameter (a presigned URL's signature and
    session token are not written to the log), however its name is encoded."""
    if not query:
        return ""
    return "&".join(
        part
        for part in query.split("&")
        if not unquote(part.partition("=")[0]).lower().startswith("x-amz-")
    )


def _strip_presign(query: str) -> str:
    if "X-Amz-" not in query:
        return query
    kept = [part for part in query.split("&") if part.split("=", 1)[0] not in _PRESIGN_QUERY_KEYS]
    return "&".join(kept)


class AwsEndpoint:
    def __init__(
        self,
        *,
        lookup: GrantLookup,
        master_key: MasterKey,
        batcher: AuditWriter,
        upstream: Upstream,
        clock: Clock,
        account_id: str,
        gateway_hosts: tuple[str, ...] = ("localhost",),
        failures: FailureThrottle | None = None,
        max_buffered_total: int = MAX_BUFFERED_TOTAL,
        stream_check_seconds: float = STREAM_CHECK_SECONDS,
    ) -> None:
        self.lookup = lookup
        self.stream_check_seconds = stream_check_seconds
        self.buffered = BodyBudget(max_buffered_total)
        self.master_key = master_key
        self.batcher = batcher
        self.upstream = upstream
        self.clock = clock
        self.account_id = account_id
        self.gateway_hosts = gateway_hosts
        # Request ids: unique per process start (a random prefix) and cheap per call (a counter;
        # os.urandom is a system call, ~10 us here).
        self._id_prefix = secrets.token_hex(8)
        self._id_counter = itertools.count(1)
        self.stall_watch = StallWatch()  # clients that stop reading their answer
        self.key_cache = sigv4.SigningKeyCache()
        self.upstream_key_cache = sigv4.SigningKeyCache()
        # A grant's secret key and session token, derived from the master key (two HMACs),
        # for the grants in use; they live in this process's memory like the master key.
        self._derived = functools.lru_cache(maxsize=4096)(self._derive)
        # Failures before authentication: counted, not written singly, once a source floods.
        self.failures = FailureRecorder(
            failures or FailureThrottle(clock, listener="aws"), self._write_nowait
        )

    def _write_nowait(self, event: NewEvent) -> None:
        self.batcher.record_nowait(event)

    def _derive(self, access_key_id: str, grant_id: str) -> tuple[str, str]:
        return (
            self.master_key.secret_access_key(access_key_id, grant_id),
            self.master_key.session_token(access_key_id, grant_id),
        )

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        call = Call(
            request_id=f"{self._id_prefix}{next(self._id_counter):016x}",
            method=scope["method"],
            raw_path=raw_path.decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=_headers(scope),
            client=_peer(scope),
        )

        async def tracked_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                call.body_read = True
            return message

        try:
            await self._handle(call, tracked_receive, send)
        except AwsError as error:
            await self._deny(call, error, send)
        except AuditUnavailable as exc:
            error = AwsError("ServiceUnavailable", exc.message)
            if not call.outcome_recorded:
                # Nothing of this call is in the log: its refusal is written once the log
                # can be written again (retried like an outcome), so it leaves a trace.
                self.batcher.record_nowait(self._denied_event(call, error))
            await self._send_error(call, error, send)
        except asyncio.CancelledError:
            # jitgate is stopping (or the server gave up on the call): the allowed call still
            # gets its outcome, written before the audit writer stops.
            if call.allowed and not call.outcome_recorded:
                self._record_outcome(
                    call, call.status or 503, error="jitgate stopped before the call finished"
                )
            elif call.recording and not call.outcome_recorded:
                # Its call.allowed may still be written (it is queued ahead of this outcome);
                # if it is not, the outcome names a request id nothing else does.
                self._record_outcome(
                    call, 503, error="not forwarded: jitgate stopped while recording the call"
                )
            raise
        except Exception:
            log.exception("unexpected failure on call %s", call.request_id)
            if call.allowed and not call.outcome_recorded:
                self._record_outcome(
                    call, call.status or 500, error="jitgate failed to forward the call"
                )
            elif call.recording and not call.outcome_recorded:
                # Its call.allowed may have been written: the outcome says nothing was sent.
                self._record_outcome(
                    call, 500, error="not forwarded: jitgate failed before sending the call"
                )
            if call.status:
                return  # the response had begun: uvicorn closes the connection, cutting it short
            await self._send_error(
                call,
                AwsError(
                    "InternalError", "jitgate failed to handle the call; nothing was forwarded"
                ),
                send,
            )
        finally:
            self.buffered.give(call.buffered)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.upstream.start()
                self.batcher.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.close()
                self.failures.write_summaries(closing=True)
                await self.batcher.drain()
                self.batcher.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- the checks ---------------------------------------------------------------------------
    async def _handle(self, call: Call, receive: Receive, send: Send) -> None:
        headers = call.headers
        try:
            parsed = sigv4.parse_auth(call.method, call.raw_path, call.query, headers)
        except sigv4.SigV4Error as exc:
            raise AwsError(exc.code, exc.message) from None
        call.service, call.region, call.access_key_id = (
            parsed.service,
            parsed.region,
            parsed.access_key_id,
        )

        grant = self.lookup.by_access_key(parsed.access_key_id)
        if grant is None:
            raise AwsError(
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        call.grant = grant
        secret, expected_token = self._derived(parsed.access_key_id, grant.id)
        non_ascii = next((name for name, value in headers.items() if not value.isascii()), None)
        if non_ascii is not None:
            for name, value in headers.items():
                if not value.isascii() and not _is_utf8(value):
                    # Neither signed nor forwarded faithfully: refused before anything is checked.
                    raise AwsError(
                        "InvalidRequest", f"the value of header {name[:64]!r} is not valid UTF-8"
                    )

        # S3 bodies stream (objects can be huge) and S3 declares their hash up front; other
        # services' bodies are small and needed whole to verify the signature.
        streamed = call.service == "s3"
        body: bytes | None = None
        if not streamed:
            body = await self._read_body(call, receive)
        now = self.clock.now()
        try:
            info = sigv4.verify(
                parsed,
                method=call.method,
                raw_path=call.raw_path,
                query=call.query,
                headers=headers,
                body=body,
                secret_key=secret,
                now=now,
                key_cache=self.key_cache,
            )
        except sigv4.SigV4Error as exc:
            raise AwsError(exc.code, exc.message) from None
        token = info.security_token or ""
        if not hmac.compare_digest(token.encode(), expected_token.encode()):
            raise AwsError("InvalidToken", "The provided token is malformed or otherwise invalid.")
        call.authenticated = True
        check_live(grant, now)
        if non_ascii is not None:
            # AWS reads header bytes as Latin-1, so it would never agree with the signature
            # jitgate makes over them, and its SignatureDoesNotMatch answer quotes jitgate's
            # signed request (found in review). S3 wants such values RFC 2047-encoded anyway.
            raise AwsError(
                "InvalidRequest",
                f"the value of header {non_ascii[:64]!r} is not ASCII; AWS does not accept it "
                "in a signed request (encode it, as RFC 2047 says)",
            )
        try:
            destination = self.upstream.destination(call.service, call.region)
        except ValueError:
            # Checked before the call is recorded as allowed: nowhere to send it.
            raise AwsError(
                "InvalidRequest", f"jitgate does not forward to region {call.region[:64]!r}"
            ) from None
        if call.method in _BODILESS_METHODS and _may_have_body(headers):
            # No AWS call sends one. Forwarded, a body an upstream ignores would be read as the
            # start of the next request on the pooled connection, another agent's (found in
            # review). Refused unread: the connection closes after the answer.
            raise AwsError("InvalidRequest", f"a {call.method} request may not carry a body")

        # From here on only what the agent signed counts: an unsigned x-amz-* header could have
        # been added by anyone holding a presigned URL and could change what the upstream does
        # (x-amz-copy-source, x-amz-acl, ...), so it is neither identified nor forwarded. The
        # same goes for x-amzn-* and for spellings with '_' that a server may read as '-'.
        signed_names = set(info.signed_headers)
        headers = {
            k: v
            for k, v in headers.items()
            if k in signed_names or not k.replace("_", "-").startswith("x-amz")
        }
        call.headers = headers
        request = AwsRequest(
            method=call.method,
            raw_path=call.raw_path,
            query=_strip_presign(call.query),
            headers=headers,
            body=body,
            service=call.service,
            region=call.region,
            bucket_from_host=self._bucket_from_host(call.service, headers),
        )
        try:
            operation = identify(request)
            if body is None and needs_body(operation.service, operation.name):
                body = await self._read_body(call, receive)
                _check_buffered_hash(info, body)
                request = _with_body(request, body)
                operation = identify(request)
            call.operation = operation
            if not _answered_locally(operation):
                call.access = required_access(
                    operation, account=self.account_id, region=call.region
                )
        except UnsupportedOperation as exc:
            raise AwsError("UnsupportedOperation", str(exc)) from None

        for access in call.access:
            if not grant.scope.allows(access.action, access.arn, access.match):
                raise AwsError(
                    "AccessDenied",
                    f"grant {grant.id} does not allow {access.action} on {access.arn}",
                )
        call.bucket_owners = self._bucket_owners(operation, headers, call.query)
        decoder: sigv4.ChunkedPayloadDecoder | None = None
        if body is None and info.payload_hash in (
            sigv4.STREAMING_SIGNED,
            sigv4.STREAMING_SIGNED_TRAILER,
        ):
            # Checked before the call is recorded as allowed: an aws-chunked body whose
            # framing headers are wrong is refused, not allowed and then failed.
            try:
                decoder = sigv4.ChunkedPayloadDecoder.for_request(info, headers)
            except sigv4.SigV4Error as exc:
                raise AwsError(exc.code, exc.message) from None

        if self.upstream.roles and not _answered_locally(operation):
            await self._sign_as_role(call, grant.agent)
        data = call.event_data()

        def still_live(txn: DriverTxn) -> None:
            # Checked again in the transaction that records the call, at the instant it does,
            # so a revocation that committed while this call was being checked, or an expiry
            # passed while its body arrived, still stops it.
            at = call.checked_at = self.clock.now()
            fresh = refreshed(txn, grant)
            check_live(fresh, at)
            outlives = outliving_grant(operation, fresh.expires_at or at, at)
            if outlives is not None:
                raise AwsError("AccessDenied", f"grant {grant.id}: {outlives}")
            # A one-exact-call grant is used up by the call it lets through, in this same
            # transaction: of two racing calls exactly one is recorded as allowed.
            if grant.one_call and call.access and operation is not None:
                used = consume_one_call(txn, grant.id, operation.name, now)
                if used == "consumed":
                    data["one_call"] = True  # written with this event: it used the grant
                elif used is not None:
                    raise AwsError("AccessDenied", used)

        call.recording = True
        recorded = self.batcher.submit(
            NewEvent(
                "call.allowed",
                f"agent:{grant.agent}",
                agent=grant.agent,
                grant_id=grant.id,
                data=data,
            ),
            guard=still_live,
        )
        outbound: _Outbound | None = None
        unbuilt: Exception | None = None  # why the upstream request could not be built
        try:
            if not _answered_locally(operation):
                # The upstream request is built and signed while the event is made durable
                # (once the writer has begun the batch, so during its fsync): nothing is sent
                # before the event is on disk.
                await asyncio.sleep(0)
                try:
                    outbound = self._outbound(
                        call, destination, request, info, body, decoder, receive
                    )
                except Exception as exc:  # noqa: BLE001 - raised once the record has answered
                    unbuilt = exc
        except asyncio.CancelledError:
            recorded.cancel()  # the outcome __call__ writes follows the event, if it is written
            raise
        try:
            # A refusal by the recording transaction (revoked meanwhile, ...) or a log that
            # cannot be written is what the call gets, whatever happened while building.
            await recorded
        except AuditNotDurable as exc:
            # In the log (or about to be), but not known to be on disk: the call is not
            # forwarded, and the log says so.
            why = "the audit log was not synced" if exc.message == NOT_DURABLE else exc.message
            self._record_outcome(call, 503, error=f"not forwarded: {why}")
            raise
        if unbuilt is not None:
            # Allowed, not sent: __call__ logs it and records that outcome. Never as a refusal:
            # the call is already recorded as allowed (refusals belong before that).
            if isinstance(unbuilt, AwsError):
                raise RuntimeError(f"building the upstream request failed: {unbuilt}") from unbuilt
            raise unbuilt
        call.allowed = True

        if outbound is None:
            await self._caller_identity(call, send)
            return
        await self._forward(call, outbound, receive, send)

    def _bucket_owners(
        self, operation: Operation, headers: dict[str, str], query: str
    ) -> dict[str, str]:
        """The owners S3 must find for buckets listed in [aws.bucket_accounts]; an agent that
        names others is refused (see roles.bucket_owners)."""
        try:
            return bucket_owners(operation, self.upstream.bucket_accounts, headers, query)
        except OwnerMismatch as exc:
            raise AwsError("InvalidRequest", str(exc)) from None

    async def _sign_as_role(self, call: Call, agent: str) -> None:
        """Sign as the role configured for the call's target account, if there is one; its
        session is assumed (once per agent and hour) before the call is recorded as allowed,
        so a role jitgate cannot assume refuses the call instead of failing it."""
        try:
            account = target_account(
                call.access, self.account_id, self.upstream.roles, self.upstream.bucket_accounts
            )
        except MixedAccounts as exc:
            raise AwsError("InvalidRequest", str(exc)) from None
        role = self.upstream.roles.get(account)
        if role is None:
            return  # jitgate's own identity, as without [aws.roles]
        try:
            call.signer = await self.upstream.role_identity(role, agent)
        except Exception as exc:  # noqa: BLE001 - STS's reason goes to the operator's log
            log.error("could not assume %s for agent %s: %s", role, agent, exc)
            raise AwsError(
                "ServiceUnavailable",
                f"jitgate could not assume its role for account {account}; nothing was "
                "forwarded (jitgate's log says why)",
            ) from None
        call.role = role

    async def _read_body(self, call: Call, receive: Receive) -> bytes:
        def take(size: int) -> None:
            if not self.buffered.take(size):
                raise AwsError(
                    "SlowDown",
                    "jitgate holds too many large request bodies at once; retry later",
                )
            call.buffered += size
            call.bytes_in += size  # counted as read, whether or not it is then forwarded

        return await _read_body(receive, MAX_BUFFERED_BODY, take)

    def _bucket_from_host(self, service: str, headers: dict[str, str]) -> str | None:
        """An S3 virtual-hosted bucket ("BUCKET.gateway-host"); identification checks the name.

        Other services have no such thing: their Host never changes the path sent upstream."""
        if service != "s3":
            return None
        host = headers.get("host", "").rsplit(":", 1)[0].lower()
        for gateway_host in self.gateway_hosts:
            suffix = "." + gateway_host
            if host.endswith(suffix) and len(host) > len(suffix):
                return host[: -len(suffix)]
        return None

    # --- outcomes -----------------------------------------------------------------------------
    async def _deny(self, call: Call, error: AwsError, send: Send) -> None:
        # Not written: a flooding source's failures before authentication (counted instead),
        # and a call allowed and then failed on the way (upstream unreachable, a body that broke
        # its signed hash), whose outcome says so: a call.denied as well would name a refusal
        # that never happened, under the same request id (found in review).
        if (not call.authenticated and not self.failures.admit(call.client, error.code)) or (
            call.allowed and call.outcome_recorded
        ):
            await self._send_error(call, error, send)
            return
        event = self._denied_event(call, error)
        try:
            await self.batcher.record(event)
        except AuditUnavailable as exc:
            self.batcher.record_nowait(event)  # written once the log can be written again
            error = AwsError("ServiceUnavailable", exc.message)
        await self._send_error(call, error, send)

    def _denied_event(self, call: Call, error: AwsError) -> NewEvent:
        grant = call.grant
        data = call.event_data()
        data.update(code=error.code, message=error.message, source=call.client)
        return NewEvent(
            "call.denied",
            # Only a valid signature proves who called: a real key id with a wrong signature
            # names the grant it claimed (agent, grant_id) but not as the actor.
            f"agent:{grant.agent}" if grant and call.authenticated else "anonymous",
            agent=grant.agent if grant else None,
            grant_id=grant.id if grant else None,
            data=data,
        )

    async def _send_error(self, call: Call, error: AwsError, send: Send) -> None:
        protocol = protocol_for(call.service or _guess_service(call), call.headers)
        status, headers, body = render(
            error, protocol, call.request_id, service=call.service, head=call.method == "HEAD"
        )
        if not call.body_read and _may_have_body(call.headers):
            # Refused before its body was read: the client may still be sending it, or be
            # waiting for "100 Continue" and never send it. Close the connection after this
            # answer so that unread bytes are never parsed as (part of) the next request.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _caller_identity(self, call: Call, send: Send) -> None:
        grant = call.grant
        assert grant is not None
        arn = f"arn:aws:sts::{self.account_id}:assumed-role/jitgate-agent/{grant.agent}"
        body = (
            '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<GetCallerIdentityResult><Arn>{escape(arn)}</Arn>"
            f"<UserId>{escape(call.access_key_id)}:{escape(grant.agent)}</UserId>"
            f"<Account>{self.account_id}</Account></GetCallerIdentityResult>"
            f"<ResponseMetadata><RequestId>{call.request_id}</RequestId></ResponseMetadata>"
            "</GetCallerIdentityResponse>"
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/xml"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        call.bytes_out = len(body)
        call.upstream_request_id = call.request_id  # answered by jitgate itself
        self._record_outcome(call, 200)

    def _record_outcome(self, call: Call, status: int, *, error: str | None = None) -> None:
        grant = call.grant
        assert grant is not None
        data = {
            "request_id": call.request_id,
            "operation": call.operation.name if call.operation else "",
            "service": call.service,
            "status": status,
            "bytes_in": call.bytes_in,
            "bytes_out": call.bytes_out,
            "duration_ms": round((time.perf_counter() - call.started) * 1000, 3),
            "upstream_request_id": call.upstream_request_id,
        }
        if error:
            data["error"] = error
        call.outcome_recorded = True
        self.batcher.record_nowait(
            NewEvent(
                "call.completed",
                f"agent:{grant.agent}",
                agent=grant.agent,
                grant_id=grant.id,
                data=data,
            )
        )

    # --- forwarding ---------------------------------------------------------------------------
    def _outbound(
        self,
        call: Call,
        destination: Destination,
        request: AwsRequest,
        info: sigv4.SignedRequestInfo,
        body: bytes | None,
        decoder: sigv4.ChunkedPayloadDecoder | None,
        receive: Receive,
    ) -> _Outbound:
        """The upstream request, re-signed with jitgate's identity; nothing is sent yet (the
        body's stream is not read until the request is)."""
        headers = call.headers
        raw_path = call.raw_path
        if request.bucket_from_host:
            raw_path = "/" + request.bucket_from_host + raw_path
        query = request.query
        out: dict[str, str] = {
            k: v
            for k, v in headers.items()
            if k not in _HOP_BY_HOP and k not in sigv4.SIGNER_OWNED_HEADERS
        }
        payload_hash = info.payload_hash
        data: Any
        if body is not None:
            data = body
            out["content-length"] = str(len(body))
            if call.service != "s3":
                payload_hash = hashlib.sha256(body).hexdigest()
        else:
            source = _receive_stream(receive, call)
            if decoder is not None:
                source = _decoded(source, decoder)
                out["content-length"] = headers["x-amz-decoded-content-length"].strip()
                out.pop("x-amz-decoded-content-length", None)
                out.pop("x-amz-trailer", None)
                encoding = [
                    e.strip()
                    for e in out.pop("content-encoding", "").split(",")
                    if e.strip() and e.strip() != "aws-chunked"
                ]
                if encoding:
                    out["content-encoding"] = ",".join(encoding)
                payload_hash = sigv4.UNSIGNED_PAYLOAD
            elif payload_hash not in (sigv4.UNSIGNED_PAYLOAD, sigv4.STREAMING_UNSIGNED_TRAILER):
                # A signed SHA-256 of the body, by header or in a presigned URL: the body
                # must match it (checked here, and by AWS, which gets the same hash).
                source = _hash_checked(source, payload_hash)
                if "content-length" in headers:
                    out["content-length"] = headers["content-length"]
            elif "content-length" in headers:
                out["content-length"] = headers["content-length"]
            # A body sent upstream chunked ends with a terminator jitgate writes after the last
            # piece: that end is checked too. One framed by its length is complete with its
            # last piece, so a check after it could only misreport a call AWS then completes.
            source = self._while_live(source, call, check_end="content-length" not in out)
            if info.presigned and payload_hash == sigv4.STREAMING_UNSIGNED_TRAILER:
                payload_hash = sigv4.UNSIGNED_PAYLOAD
            length = out.get("content-length")
            data = source if (length and length != "0") or "transfer-encoding" in headers else None
            if data is None:
                out["content-length"] = "0"
        for header, owner in call.bucket_owners.items():
            for name in [k for k in out if spelled_as(k, header)]:
                del out[name]  # the agent's (checked equal, or in another spelling)
            out[header] = owner
        out["host"] = destination.host
        identity = call.signer or self.upstream.identity()
        signed = sigv4.sign_headers(
            method=call.method,
            raw_path=destination.base_path + raw_path,
            query=query,
            headers=out,
            payload_hash=payload_hash,
            access_key=identity.access_key,
            secret_key=identity.secret_key,
            session_token=identity.token,
            region=call.region,
            service=call.service,
            now=self.clock.now(),
            key_cache=self.upstream_key_cache,
        )
        out.update(signed)
        # What an upstream error may quote back: never passed on to the agent (see _relay).
        call.signed_with = (
            identity.access_key,
            identity.token or "",
            signed["authorization"].rpartition("Signature=")[2],
        )
        expect_continue = False
        if data is not None and not isinstance(data, bytes):
            # The client waits for "100 Continue" before sending its body: so does jitgate, and
            # the 100 reaches the client only when AWS sends one. An upload AWS refuses at once
            # (403, 400) is then answered with AWS's own error, its body never sent.
            expect_continue = "100-continue" in headers.get("expect", "").lower()
        return _Outbound(
            destination.origin, destination.target(raw_path, query), out, data, expect_continue
        )

    async def _forward(self, call: Call, outbound: _Outbound, receive: Receive, send: Send) -> None:
        client = self.upstream.client
        assert client is not None, "upstream not started"
        try:
            async with client.exchange(
                call.method,
                outbound.origin,
                outbound.target,
                outbound.headers,
                outbound.data,
                expect_continue=outbound.expect_continue,
            ) as response:
                call.upstream_request_id = _upstream_request_id(response)
                await self._relay(call, response, receive, send)
            self._record_outcome(call, call.status, error=call.ended_early)
        except _BodyRejected as exc:
            self._record_outcome(call, exc.error.status, error=exc.error.message)
            raise exc.error from None
        except _Withheld as exc:
            self._record_outcome(call, exc.error.status, error=exc.why)
            raise exc.error from None
        except (TimeoutError, UpstreamError) as exc:
            malformed = isinstance(exc, MalformedAnswer)
            if malformed and call.upstream_request_id is None:  # read before the fault
                call.upstream_request_id = _upstream_request_id(exc)
            if call.status:
                log.warning("upstream failed mid-response on call %s: %s", call.request_id, exc)
                cut_off_on_purpose()  # the client must not take the part it got for the whole
                self._record_outcome(call, 502, error=f"upstream failed mid-response: {exc}")
                return
            if malformed:  # it answered, but not in HTTP that can be passed on
                self._record_outcome(call, 502, error=str(exc))
                raise AwsError("BadGateway", f"{exc}; not passed on") from None
            self._record_outcome(call, 502, error=f"upstream failed: {exc}")
            raise AwsError(
                "ServiceUnavailable", "the upstream AWS endpoint could not be reached"
            ) from None

    async def _relay(self, call: Call, response: Response, receive: Receive, send: Send) -> None:
        """Stream the upstream's response to the client; stop reading it if the client leaves."""
        status = response.status
        first = b""
        if status >= 400:
            # An error answer is read whole first: it may quote what jitgate signed with.
            first = await _read_at_most(response, quoting.CHECK_LIMIT)
            why = quoting.why_withheld(
                first,
                response.at_end,
                response.header("content-encoding"),
                (value for _, value in response.raw_headers),
                call.signed_with,
            )
            if why is not None:
                raise _withheld(call, response, first, why)
        bodiless = status < 200 or status in (204, 304)
        dropped = _RESPONSE_DROP
        named = [v for k, v in response.raw_headers if k.lower() == b"connection"]
        if named:
            # Hop-by-hop by the upstream's own say (RFC 9110 7.6.1): not for the client.
            tokens = b",".join(named).decode("latin-1").lower().split(",")
            dropped = dropped | {token.strip() for token in tokens}
        response_headers = [
            (name.lower(), value)
            for name, value in response.raw_headers
            if name.lower().decode("latin-1") not in dropped
            # A 304's Content-Length describes the body it does not send; forwarded, the
            # server would wait for those bytes and fail the response.
            and not (bodiless and name.lower() == b"content-length")
        ]
        if not call.body_read and _may_have_body(call.headers):
            # Answered before the request body was read (the upstream refused it at once):
            # unread body bytes must never be parsed as the next request.
            response_headers.append((b"connection", b"close"))
        # A header uvicorn would refuse to send mid-call (a control character, a name that is
        # not a token) never gets here: the upstream client refuses such an answer as it parses
        # it (MalformedAnswer above; tests/gateway/test_http_client.py checks every such byte).
        try:
            # The answer may come long after the call was checked (a slow upstream, a long
            # poll): a grant that ended meanwhile gets its refusal, not the answer's head.
            self._liveness(call).check()
        except AwsError as error:
            response.close()
            raise _Withheld(error, f"stopped before the answer: {error.message}") from None
        if (
            200 <= status < 300
            and call.operation is not None
            and call.grant is not None
            and (call.operation.service, call.operation.name) in _HANDS_OUT_LASTING
        ):
            # A presigned link or credentials in the answer were made by AWS before this
            # instant: checked again now (found in review: checked only when the call was
            # recorded, a link made seconds later could outlive the grant by those seconds).
            now = self.clock.now()
            outlives = outliving_grant(call.operation, call.grant.expires_at or now, now)
            if outlives is not None:
                response.close()
                error = AwsError(
                    "AccessDenied",
                    f"grant {call.grant.id}: AWS carried out the call (it answered {status}) "
                    f"but its answer is withheld: {outlives}",
                )
                why = f"AWS answered {status}; not passed on: {outlives}"
                raise _Withheld(error, why)
        send = _to_client(send)
        try:
            await send(
                {"type": "http.response.start", "status": status, "headers": response_headers}
            )
            call.status = status
            await self._stream_body(call, response, receive, send, first)
        except _ClientGone:
            self._ended_early(call, response, "the client left mid-response")
        except _GrantEnded as ended:
            # The head (and perhaps some of the body) reached the client; the rest never will.
            # Returning without ending the response makes the server close the connection, so
            # the client sees a cut-off answer, not a complete one.
            response.close()
            call.ended_early = f"stopped mid-response: {ended.error.message}"
            log.info("call %s: %s", call.request_id, call.ended_early)
            cut_off_on_purpose()
        except ClientStalled:
            self._ended_early(
                call, response, f"the client stopped reading for {CLIENT_STALL_SECONDS:g} s"
            )

    async def _stream_body(
        self,
        call: Call,
        response: Response,
        receive: Receive,
        send: Send,
        first: bytes = b"",
    ) -> None:
        """Relay the answer's body, starting with ``first`` when _relay has read it already."""
        left = response.content_length
        gone: asyncio.Task[None] | None = None
        body_done = call.body_read or not _may_have_body(call.headers)
        if body_done and (left is None or left > STREAM_CHUNK) and call.method != "HEAD":
            # More than one piece to send: watch for the client leaving, since sending to a
            # closed connection fails silently and the rest would be read from AWS for nobody.
            gone = asyncio.ensure_future(_disconnected(receive))
        task = asyncio.current_task()
        assert task is not None
        watch = self.stall_watch

        async def send_in_time(message: dict[str, Any]) -> None:
            # Every piece, the last (empty) one too: a client that reads nothing leaves send
            # waiting for room, however small the answer (found in review: a one-piece answer
            # cut off by the connection's reset was recorded as a whole 200).
            await watch.send(send, message, task, CLIENT_STALL_SECONDS)

        try:
            while chunk := first or await response.read(STREAM_CHUNK):
                first = b""
                if gone is not None and gone.done():
                    raise _ClientGone
                try:
                    self._liveness(call).check()
                except AwsError as error:
                    raise _GrantEnded(error) from None
                call.bytes_out += len(chunk)
                last = response.at_end  # the last piece ends the answer: one send fewer
                await send_in_time(
                    {"type": "http.response.body", "body": chunk, "more_body": not last}
                )
                if last:
                    return
            await send_in_time({"type": "http.response.body", "body": b""})
        finally:
            if gone is not None and not gone.done():
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gone

    def _liveness(self, call: Call) -> StreamLiveness:
        """The check that stops an allowed call mid-stream once its grant stops being live."""
        if call.liveness is None:
            assert call.grant is not None and call.checked_at is not None
            call.liveness = StreamLiveness(
                call.grant,
                self.lookup.current,
                self.clock,
                call.checked_at,
                self.stream_check_seconds,
            )
        return call.liveness

    async def _while_live(
        self, source: AsyncIterator[bytes], call: Call, *, check_end: bool
    ) -> AsyncIterator[bytes]:
        """The request body's pieces, each sent upstream only while the grant is live: a body
        cut off mid-way is never completed upstream, so AWS does not act on it."""
        liveness = self._liveness(call)
        async for chunk in source:
            self._check_upload(liveness)
            yield chunk
        if check_end:
            # A chunked body's end (its terminator) may come long after its last piece, and
            # completes the upload (found in review).
            self._check_upload(liveness)

    @staticmethod
    def _check_upload(liveness: StreamLiveness) -> None:
        try:
            liveness.check()
        except AwsError as error:
            message = f"{error.message}; the upload was stopped mid-body"
            raise _BodyRejected(AwsError(error.code, message)) from None

    def _ended_early(self, call: Call, response: Response, why: str) -> None:
        response.close()  # the rest is not read from AWS
        call.status = 499  # nginx's "client closed request": no status reached the client
        call.ended_early = why
        cut_off_on_purpose()
        log.info("call %s: %s", call.request_id, why)


@dataclass
class _Outbound:
    """An upstream request built and signed, not yet sent."""

    origin: str
    target: str
    headers: dict[str, str]
    data: Any  # bytes, a stream of pieces, or None
    expect_continue: bool


def _upstream_request_id(answer: Response | MalformedAnswer) -> str | None:
    """The id AWS gave the call: S3's header, or the one the JSON and query services send."""
    return answer.header("x-amz-request-id") or answer.header("x-amzn-requestid")


# --- body helpers -------------------------------------------------------------------------------
class _ClientGone(Exception):
    """The client closed its connection before the whole response was sent."""


def _to_client(send: Send) -> Send:
    """``send``, raising ``_ClientGone`` where the server fails to write to a closed connection
    (uvloop raises RuntimeError, a socket OSError) instead of noting the client left."""

    async def sending(message: dict[str, Any]) -> None:
        try:
            await send(message)
        except OSError as exc:
            raise _ClientGone from exc
        except RuntimeError as exc:
            if "closed" not in str(exc):
                raise  # the server's own refusal, not the client leaving
            raise _ClientGone from exc

    return sending


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has closed its connection (its request body was all read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _Withheld(Exception):
    """The upstream's answer quoted jitgate's signing material: the agent gets ``error``."""

    def __init__(self, error: AwsError, why: str) -> None:
        super().__init__(why)
        self.error = error
        self.why = why


def _withheld(call: Call, response: Response, body: bytes, why: str) -> _Withheld:
    code = quoting.error_code(body, response.header("x-amzn-errortype")) or "error"
    log.warning(
        "call %s: AWS answered %s %s (request id %s) and %s: not passed on",
        call.request_id,
        response.status,
        code,
        call.upstream_request_id,
        why,
    )
    message = (
        f"AWS answered the request jitgate signed for this call with {response.status} "
        f"{code}; {why}, so it was not passed on"
    )
    return _Withheld(AwsError("BadGateway", message), message)


async def _read_at_most(response: Response, limit: int) -> bytes:
    """The body, read until it ends or more than ``limit`` bytes have come."""
    parts: list[bytes] = []
    size = 0
    while size <= limit and (piece := await response.read(limit + 1 - size)):
        parts.append(piece)
        size += len(piece)
    return b"".join(parts)


class _GrantEnded(Exception):
    """The call's grant stopped being live while its answer streamed to the client."""

    def __init__(self, error: AwsError) -> None:
        super().__init__(error.message)
        self.error = error


class _BodyRejected(Exception):
    def __init__(self, error: AwsError) -> None:
        super().__init__(error.message)
        self.error = error


class BodyBudget:
    """Bytes of request bodies held in memory at once, across all calls, up to a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


async def _read_body(receive: Receive, limit: int, take: Callable[[int], None]) -> bytes:
    """The whole body, up to ``limit`` bytes; ``take(n)`` accounts for (or refuses) each piece."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await _body_message(receive)
        if message["type"] == "http.disconnect":
            raise AwsError(
                "IncompleteBody", "the client disconnected before sending the whole body"
            )
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise AwsError("EntityTooLarge", f"request body is larger than {limit} bytes")
        take(len(chunk))
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _body_message(receive: Receive) -> dict[str, Any]:
    try:
        async with asyncio.timeout(BODY_STALL_SECONDS):
            return await receive()
    except TimeoutError:
        message = f"the client sent no body bytes for {BODY_STALL_SECONDS:g} s"
        raise AwsError("RequestTimeout", message) from None


async def _receive_stream(receive: Receive, call: Call) -> AsyncIterator[bytes]:
    while True:
        try:
            message = await _body_message(receive)
        except AwsError as error:
            raise _BodyRejected(error) from None
        if message["type"] == "http.disconnect":
            raise _BodyRejected(AwsError("IncompleteBody", "the client disconnected mid-body"))
        chunk = message.get("body", b"")
        call.bytes_in += len(chunk)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _hash_checked(source: AsyncIterator[bytes], expected: str) -> AsyncIterator[bytes]:
    """Pass the body through, holding back one piece until its SHA-256 is known to match.

    On a mismatch the upstream request is aborted before its last bytes, so it never completes.
    """
    digest = hashlib.sha256()
    held: bytes | None = None
    async for chunk in source:
        digest.update(chunk)
        if held is not None:
            yield held
        held = chunk
    if not hmac.compare_digest(digest.hexdigest(), expected.lower()):
        raise _BodyRejected(
            AwsError(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        )
    if held is not None:
        yield held


async def _decoded(
    source: AsyncIterator[bytes], decoder: sigv4.ChunkedPayloadDecoder
) -> AsyncIterator[bytes]:
    """Decode (and verify, chunk by chunk) an aws-chunked body; a bad chunk aborts the call.

    The last decoded piece is held back until the final chunk (and any trailer) has checked:
    the upstream must never receive a whole body whose end was not verified.
    """
    held = b""
    try:
        async for chunk in source:
            out = decoder.feed(chunk)
            if out:
                if held:
                    yield held
                held = out
        decoder.finish()
    except sigv4.SigV4Error as exc:
        raise _BodyRejected(AwsError(exc.code, exc.message)) from None
    if held:
        yield held


def _check_buffered_hash(info: sigv4.SignedRequestInfo, body: bytes) -> None:
    declared = info.payload_hash
    if len(declared) == 64 and not hmac.compare_digest(
        hashlib.sha256(body).hexdigest(), declared.lower()
    ):
        raise AwsError(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    if declared.startswith("STREAMING-"):
        raise AwsError(
            "InvalidRequest", "this operation's body must not be sent aws-chunked through jitgate"
        )


def _with_body(request: AwsRequest, body: bytes) -> AwsRequest:
    return AwsRequest(
        request.method,
        request.raw_path,
        request.query,
        request.headers,
        body,
        request.service,
        request.region,
        request.bucket_from_host,
    )


_BODILESS_METHODS = frozenset({"GET", "HEAD"})


def _may_have_body(headers: dict[str, str]) -> bool:
    if "transfer-encoding" in headers:
        return True
    length = headers.get("content-length", "").strip()
    return bool(length) and (not length.isdigit() or int(length) > 0)


# STS returns AWS credentials that work without jitgate until they expire (AWS's default).
_VENDED_CREDENTIALS_DEFAULT_SECONDS = {("sts", "AssumeRole"): 3600}
# Lambda answers that carry a presigned link to the function's code or a layer's archive: it
# works without jitgate, for 10 minutes, whatever happens to the grant.
_CODE_LINK_SECONDS = {
    ("lambda", "GetFunction"): 600,
    ("lambda", "GetLayerVersion"): 600,
    ("lambda", "GetLayerVersionByArn"): 600,
    ("lambda", "PublishLayerVersion"): 600,
}


# Operations whose answers hand out something that works without jitgate (checked twice).
_HANDS_OUT_LASTING = frozenset(_CODE_LINK_SECONDS) | frozenset(_VENDED_CREDENTIALS_DEFAULT_SECONDS)


def outliving_grant(operation: Operation, expires_at: datetime, now: datetime) -> str | None:
    """Why a call's answer would hand the agent something that outlives its grant, or None.

    When a grant expires the agent must hold nothing that works. Credentials STS vends for the
    agent (a grant for sts:AssumeRole, approved by a human) may last no longer than the grant,
    and a presigned link to Lambda code (valid 10 minutes) is handed out only while the grant
    has that long left. Checked when the call is recorded, and again when AWS's answer
    arrives (AWS makes the link or credentials in between).
    """
    key = (operation.service, operation.name)
    link = _CODE_LINK_SECONDS.get(key)
    default = _VENDED_CREDENTIALS_DEFAULT_SECONDS.get(key)
    if link is None and default is None:
        return None  # nearly every call: nothing handed out lasts
    left = int((expires_at - now).total_seconds())
    if link is not None and link > left:
        return (
            f"{operation.service}:{operation.name} answers with a presigned link valid for "
            f"{link} seconds, longer than the {max(left, 0)} seconds left on the grant"
        )
    if default is None:
        return None
    asked = operation.params.get("DurationSeconds", default)
    if not isinstance(asked, int) or asked > left:
        return (
            f"{operation.service}:{operation.name} would return credentials valid for "
            f"{asked} seconds, longer than the {max(left, 0)} seconds left on the grant"
        )
    return None


def _answered_locally(operation: Operation) -> bool:
    """sts:GetCallerIdentity needs no scope: jitgate answers with the grant's identity."""
    return operation.service == "sts" and operation.name == "GetCallerIdentity"


def _guess_service(call: Call) -> str:
    credential = call.headers.get("authorization", "")
    marker = "Credential="
    if marker in credential:
        parts = credential.split(marker, 1)[1].split(",", 1)[0].split("/")
        if len(parts) >= 4:
            return parts[3]
    return "s3" if "x-amz-content-sha256" in call.headers else ""
