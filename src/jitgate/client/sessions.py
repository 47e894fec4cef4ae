"""boto3 and aiobotocore sessions wired to jitgate's AWS endpoint with one grant's credentials.

Every client made from these sessions defaults to jitgate's endpoint (``endpoint_url``), the
grant's region and path-style S3 addressing. The credentials mean nothing anywhere else, so a
client pointed elsewhere simply fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from jitgate.client.models import Grant, GrantCredentials

#: Path-style S3 addressing: jitgate's endpoint is one host, not a bucket-per-subdomain one.
DEFAULT_CONFIG = Config(s3={"addressing_style": "path"})


def _client_kwargs(
    kwargs: dict[str, Any], endpoint_url: str, verify: bool | str | None
) -> dict[str, Any]:
    kwargs.setdefault("endpoint_url", endpoint_url)
    if verify is not None:
        kwargs.setdefault("verify", verify)
    config = kwargs.get("config")
    kwargs["config"] = DEFAULT_CONFIG.merge(config) if config is not None else DEFAULT_CONFIG
    return kwargs


class JitgateSession(boto3.Session):
    """A ``boto3.Session`` whose clients and resources go through jitgate.

    ``grant`` is the grant behind the credentials and ``endpoint_url`` jitgate's AWS endpoint.
    Use it as any boto3 session: ``session.client("s3").get_object(...)``.
    """

    def __init__(
        self,
        credentials: GrantCredentials,
        *,
        endpoint_url: str,
        region_name: str,
        grant: Grant | None = None,
        verify: bool | str | None = None,
    ) -> None:
        super().__init__(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
            region_name=region_name,
        )
        self.endpoint_url = endpoint_url
        self.grant = grant
        self._jitgate_verify = verify

    def client(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().client(
            *args, **_client_kwargs(kwargs, self.endpoint_url, self._jitgate_verify)
        )

    def resource(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().resource(
            *args, **_client_kwargs(kwargs, self.endpoint_url, self._jitgate_verify)
        )


def aio_session(
    credentials: GrantCredentials,
    *,
    endpoint_url: str,
    region_name: str,
    grant: Grant | None = None,
    verify: bool | str | None = None,
) -> Any:
    """An aiobotocore session (``JitgateAioSession``) like :class:`JitgateSession`.

    ``async with session.create_client("s3") as s3: await s3.get_object(...)``.
    Needs the ``aiobotocore`` package (``pip install 'jitgate[async]'``).
    """
    try:
        from aiobotocore.session import AioSession
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("the async SDK needs aiobotocore: pip install 'jitgate[async]'") from exc

    class JitgateAioSession(AioSession):  # type: ignore[misc]
        """An aiobotocore session whose clients go through jitgate."""

        def create_client(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("region_name", region_name)
            return super().create_client(*args, **_client_kwargs(kwargs, endpoint_url, verify))

    session = JitgateAioSession()
    session.set_credentials(
        credentials.access_key_id, credentials.secret_access_key, credentials.session_token
    )
    session.set_config_variable("region", region_name)
    session.endpoint_url = endpoint_url  # type: ignore[attr-defined]
    session.grant = grant  # type: ignore[attr-defined]
    return session
