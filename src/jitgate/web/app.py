"""The approver console: server-rendered HTML at /ui on the control listener.

Pages are Jinja2 templates (autoescaped) with one stylesheet and one small script that refreshes
marked fragments in place and counts down deadlines; there is no front-end build. People sign
in with a local password (argon2id) or an OpenID Connect provider; agents and API tokens are
never accepted here. Every state-changing request is a POST from a form carrying the session's
CSRF token, from this origin. Every decision goes through the same grant service as the API,
so the console can do nothing the rules do not allow.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from jitgate.approvals.notify import console_base_url
from jitgate.audit.log import NewEvent
from jitgate.clock import isoformat, parse_iso
from jitgate.core import Jitgate
from jitgate.errors import Conflict, Forbidden, InvalidRequest, JitgateError, NotFound
from jitgate.grants import states
from jitgate.identity import oidc as oidc_module
from jitgate.identity.service import ROLES, Principal
from jitgate.policy.durations import format_duration, parse_duration
from jitgate.web import views
from jitgate.web.sessions import (
    COOKIE_PATH,
    PRE_COOKIE,
    SESSION_COOKIE,
    Session,
    Sessions,
    Throttle,
    session_settings,
    tokens_match,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAX_FORM_FIELD = 4000


class SignInRequired(Exception):
    """No live session: pages redirect to the sign-in page, fragments answer 401."""


@dataclass
class Page:
    """What every page template gets."""

    request: Request
    session: Session | None

    @property
    def user(self) -> Principal | None:
        return self.session.principal if self.session else None


# --- formatting -------------------------------------------------------------------------------
def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return parse_iso(str(value))


def fmt_ts(value: Any) -> str:
    when = _as_datetime(value)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if when else "—"


def fmt_iso(value: Any) -> str:
    when = _as_datetime(value)
    return isoformat(when) if when else ""


def fmt_dur(seconds: Any) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds >= 60 and seconds % 60 == 0 and seconds < 3600:
        return f"{seconds // 60} min"
    return format_duration(seconds)


def _relative(delta_seconds: float) -> str:
    seconds = int(abs(delta_seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def _safe_next(value: str | None) -> str:
    """Only paths inside the console: never an open redirect."""
    if not value or not value.startswith("/ui/") or value.startswith("//") or "\\" in value:
        return "/ui/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/ui/"
    return value


def _lines(value: str) -> list[str]:
    return [line.strip() for part in value.splitlines() for line in part.split(",") if line.strip()]


def create_console_app(core: Jitgate) -> FastAPI:
    app = FastAPI(title="jitgate console", docs_url=None, redoc_url=None, openapi_url=None)
    raw = core.settings.raw
    console_table = raw.get("console", {}) or {}
    public_url = console_base_url(core.settings)
    configured_public = str(console_table.get("public_url", "")).rstrip("/")
    secure_setting = str(console_table.get("secure_cookies", "auto")).lower()
    sessions = Sessions(
        core.db, core.clock, core.master_key.derive_key("console-cookies"), session_settings(raw)
    )
    throttle = Throttle(core.db, core.clock, sessions.settings)
    oidc_settings = oidc_module.oidc_settings(raw)
    oidc = oidc_module.OidcClient(oidc_settings, core.clock) if oidc_settings else None
    verify_cache = views.VerifyCache()
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ts=fmt_ts, iso=fmt_iso, dur=fmt_dur)
    env.globals.update(access_summary=views.access_summary, roles=ROLES)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # --- plumbing -------------------------------------------------------------------------
    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def secure(request: Request) -> bool:
        if secure_setting in ("true", "false"):
            return secure_setting == "true"
        return request.url.scheme == "https" or public_url.startswith("https://")

    def set_cookie(
        response: Response, request: Request, name: str, value: str, max_age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=secure(request),
        )

    def clear_cookie(response: Response, request: Request, name: str) -> None:
        response.delete_cookie(
            name, path=COOKIE_PATH, httponly=True, samesite="lax", secure=secure(request)
        )

    def render(
        request: Request,
        template: str,
        session: Session | None,
        http_status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        page = Page(request, session)
        # The record's health is everyone's business: a lagging sink or stalled checkpoints
        # show on every page to a signed-in person (the same alarms as /healthz).
        audit_alarms = core.integrity.health().get("alarms", []) if session else []
        html = env.get_template(template).render(
            page=page,
            audit_alarms=audit_alarms,
            user=page.user,
            csrf=session.csrf_token if session else "",
            base=base(request),
            now=core.clock.now(),
            relative=lambda when: _relative(
                ((_as_datetime(when) or core.clock.now()) - core.clock.now()).total_seconds()
            ),
            is_future=lambda when: (_as_datetime(when) or core.clock.now()) > core.clock.now(),
            **context,
        )
        return HTMLResponse(html, status_code=http_status)

    def session_of(request: Request) -> Session:
        session = sessions.load(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise SignInRequired()
        return session

    def need(session: Session, *, approve: bool = False, admin: bool = False) -> None:
        principal = session.principal
        if admin and principal.role != "admin":
            raise Forbidden("this needs an admin")
        if approve and principal.role not in ("admin", "approver"):
            raise Forbidden(f"role {principal.role!r} cannot approve or deny grants")

    def allowed_origins(request: Request) -> set[str]:
        own = f"{request.url.scheme}://{request.url.netloc}"
        public = urlsplit(public_url)
        return {own, f"{public.scheme}://{public.netloc}"}

    async def form_of(
        request: Request, session: Session | None, *, login_csrf: str | None = None
    ) -> dict[str, str]:
        """The posted form, after the CSRF checks: same origin, and the right token."""
        origin = request.headers.get("origin")
        if origin is not None and origin not in allowed_origins(request):
            raise Forbidden("cross-origin form post refused")
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise Forbidden("cross-site form post refused")
        form = await request.form()
        values = {k: str(v)[:MAX_FORM_FIELD] for k, v in form.items() if isinstance(v, str)}
        expected = session.csrf_token if session is not None else login_csrf
        if expected is None or not tokens_match(expected, values.get("csrf_token")):
            raise Forbidden(
                "the form's CSRF token is missing or wrong; reload the page and try again"
            )
        return values

    def callback_url(request: Request) -> str:
        """The redirect URI registered with the identity provider."""
        if configured_public:
            return f"{configured_public}/oidc/callback"
        return f"{request.url.scheme}://{request.url.netloc}{base(request)}/oidc/callback"

    def client_address(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def record(event_type: str, actor: str, **data: Any) -> None:
        core.audit.record(core.clock.now(), NewEvent(event_type, actor, data=data))

    # --- errors ---------------------------------------------------------------------------
    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[..., Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault(
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self' "
            + (
                urlsplit(oidc_settings.issuer).scheme
                + "://"
                + urlsplit(oidc_settings.issuer).netloc
                if oidc_settings
                else ""
            ),
        )
        response.headers.setdefault("x-frame-options", "DENY")
        response.headers.setdefault("x-content-type-options", "nosniff")
        response.headers.setdefault("referrer-policy", "same-origin")
        if not request.url.path.startswith(f"{base(request)}/static/"):
            response.headers.setdefault("cache-control", "no-store")
        return response

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        if "/fragments/" in request.url.path or request.method != "GET":
            return HTMLResponse("sign-in required", status_code=401)
        if request.headers.get("authorization"):
            return render(
                request,
                "error.html",
                None,
                401,
                title="Sign in required",
                message="The console uses sign-in sessions; API and agent tokens are not accepted here.",
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{base(request)}/login?next={quote(target)}", status_code=303)

    @app.exception_handler(JitgateError)
    async def _jitgate_error(request: Request, exc: JitgateError) -> Response:
        session = sessions.load(request.cookies.get(SESSION_COOKIE))
        if isinstance(exc, Forbidden):
            actor = session.principal.actor if session else "anonymous"
            record(
                "access.denied",
                actor,
                method=request.method,
                path=request.url.path,
                message=exc.message,
            )
        title = {403: "Not allowed", 404: "Not found", 409: "Conflict"}.get(exc.status, "Error")
        return render(request, "error.html", session, exc.status, title=title, message=exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        session = sessions.load(request.cookies.get(SESSION_COOKIE))
        return render(
            request, "error.html", session, exc.status_code, title="Error", message=str(exc.detail)
        )

    # --- signing in -----------------------------------------------------------------------
    def login_page(
        request: Request, *, error: str | None = None, status: int = 200, name: str = ""
    ) -> HTMLResponse:
        pre = sessions.read_pre(request.cookies.get(PRE_COOKIE))
        cookie = None
        if pre is None:
            cookie = sessions.new_pre()
            pre = sessions.read_pre(cookie)
            assert pre is not None
        response = render(
            request,
            "login.html",
            None,
            status,
            title="Sign in",
            login_csrf=sessions.login_csrf(pre),
            error=error,
            name=name,
            next=_safe_next(request.query_params.get("next")),
            oidc_label=oidc_settings.label if oidc_settings else None,
        )
        if cookie is not None:
            set_cookie(response, request, PRE_COOKIE, cookie, 3600)
        return response

    def signed_in(request: Request, principal: Principal, method: str, next_url: str) -> Response:
        cookie, _ = sessions.create(principal, method, replaces=request.cookies.get(SESSION_COOKIE))
        record(
            "auth.signin",
            principal.actor,
            method=method,
            address=client_address(request),
            role=principal.role,
        )
        response = RedirectResponse(_safe_next(next_url), status_code=303)
        set_cookie(
            response,
            request,
            SESSION_COOKIE,
            cookie,
            int(sessions.settings.lifetime.total_seconds()),
        )
        clear_cookie(response, request, PRE_COOKIE)
        return response

    @app.get("/login")
    def login_form(request: Request) -> Response:
        # Shown even to someone signed in (to switch accounts): signing in replaces the session.
        return login_page(request)

    @app.post("/login")
    async def login(request: Request) -> Response:
        pre = sessions.read_pre(request.cookies.get(PRE_COOKIE))
        form = await form_of(request, None, login_csrf=sessions.login_csrf(pre) if pre else None)
        name = form.get("name", "").strip().lower()[:64]
        password = form.get("password", "")
        address = client_address(request)
        keys = (f"user:{name}", f"addr:{address}")
        wait = throttle.locked_for(*keys)
        if wait:
            record("auth.locked", "anonymous", name=name, address=address, retry_in=wait)
            return login_page(
                request,
                error=f"Too many failed sign-ins. Try again in {_relative(wait)}.",
                status=429,
                name=name,
            )
        principal = core.identity.check_password(name, password)
        if principal is None:
            locked = throttle.failed(keys[0], sessions.settings.user_failures)
            locked = throttle.failed(keys[1], sessions.settings.address_failures) or locked
            record("auth.signin_failed", "anonymous", name=name, address=address, method="password")
            return login_page(
                request,
                error="Too many failed sign-ins. Try again later."
                if locked
                else "Wrong name or password.",
                status=429 if locked else 401,
                name=name,
            )
        throttle.succeeded(keys[0])
        return signed_in(request, principal, "password", form.get("next", "/ui/"))

    @app.post("/oidc/start")
    async def oidc_start(request: Request) -> Response:
        if oidc is None:
            raise NotFound("single sign-on is not configured")
        pre = sessions.read_pre(request.cookies.get(PRE_COOKIE))
        await form_of(request, None, login_csrf=sessions.login_csrf(pre) if pre else None)
        assert pre is not None
        redirect_uri = callback_url(request)
        url, transaction = await oidc.begin(
            redirect_uri, _safe_next(request.query_params.get("next"))
        )
        response = RedirectResponse(url, status_code=303)
        set_cookie(
            response, request, PRE_COOKIE, sessions.with_oidc(pre, transaction.as_dict()), 900
        )
        return response

    @app.get("/oidc/callback")
    async def oidc_callback(request: Request) -> Response:
        if oidc is None or oidc_settings is None:
            raise NotFound("single sign-on is not configured")
        pre = sessions.read_pre(request.cookies.get(PRE_COOKIE), max_age=900)
        if pre is None or not pre.get("oidc"):
            return login_page(request, error="That sign-in has expired; start again.", status=400)
        transaction = oidc_module.Transaction.from_dict(pre["oidc"])
        redirect_uri = callback_url(request)
        try:
            claims = await oidc.finish(dict(request.query_params), transaction, redirect_uri)
            who = oidc_module.identity_from_claims(oidc_settings, claims)
            principal = oidc_module.provision(core.identity, who)
        except (oidc_module.OidcError, Forbidden) as exc:
            record(
                "auth.signin_failed",
                "anonymous",
                method="oidc",
                address=client_address(request),
                message=exc.message,
            )
            response = login_page(request, error=exc.message, status=403)
            set_cookie(response, request, PRE_COOKIE, sessions.with_oidc(pre, None), 3600)
            return response
        return signed_in(request, principal, "oidc", transaction.next)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        session = session_of(request)
        await form_of(request, session)
        sessions.end(request.cookies.get(SESSION_COOKIE))
        record("auth.signout", session.principal.actor)
        response = RedirectResponse(f"{base(request)}/login", status_code=303)
        clear_cookie(response, request, SESSION_COOKIE)
        return response

    # --- the inbox ------------------------------------------------------------------------
    DONE = {
        "approved": "You approved {id}.",
        "denied": "You denied {id}; the request is over.",
        "revoked": "You revoked {id}; its credentials are dead.",
    }

    def flash(request: Request) -> str | None:
        done = request.query_params.get("done")
        grant_id = request.query_params.get("grant", "")
        if done not in DONE or not grant_id.startswith("gr-") or len(grant_id) > 40:
            return None
        return DONE[done].format(id=grant_id)

    @app.get("/")
    def inbox(request: Request) -> Response:
        session = session_of(request)
        items = views.inbox(core, session.principal)
        counts = views.rule_counts(core)
        return render(
            request,
            "inbox.html",
            session,
            title="Inbox",
            nav="inbox",
            items=items,
            counts=counts,
            version=views.inbox_version(items, counts),
            flash=flash(request),
        )

    @app.get("/fragments/inbox")
    def inbox_fragment(request: Request) -> Response:
        session = session_of(request)
        items = views.inbox(core, session.principal)
        counts = views.rule_counts(core)
        response = render(request, "_inbox.html", session, items=items, counts=counts)
        response.headers["x-version"] = views.inbox_version(items, counts)
        response.headers["x-count"] = str(len(items))
        return response

    # --- deciding -------------------------------------------------------------------------
    def after(request: Request, form: dict[str, str], grant_id: str, done: str) -> Response:
        back = form.get("back", "grant")
        if back == "inbox":
            target = f"{base(request)}/?done={done}&grant={grant_id}"
        elif back == "active":
            target = f"{base(request)}/grants?status=active&done={done}&grant={grant_id}"
        else:
            target = f"{base(request)}/grants/{grant_id}?done={done}&grant={grant_id}"
        return RedirectResponse(target, status_code=303)

    def refused(request: Request, session: Session, grant_id: str, exc: JitgateError) -> Response:
        try:
            record_ = views.grant_record(core, grant_id, session.principal)
        except NotFound:
            raise exc from None
        if isinstance(exc, Forbidden):
            record(
                "access.denied",
                session.principal.actor,
                method=request.method,
                path=request.url.path,
                message=exc.message,
            )
        return render(
            request,
            "grant.html",
            session,
            exc.status,
            title=grant_id,
            nav="grants",
            record=record_,
            error=exc.message,
        )

    @app.post("/grants/{grant_id}/approve")
    async def approve(request: Request, grant_id: str) -> Response:
        session = session_of(request)
        form = await form_of(request, session)
        fingerprint = form.get("fingerprint", "")
        if not fingerprint:
            raise InvalidRequest(
                "approve what? The form carries no fingerprint of the request shown"
            )
        try:
            core.grants.approve(
                session.principal, grant_id, form.get("comment", ""), fingerprint=fingerprint
            )
        except (Conflict, Forbidden) as exc:
            return refused(request, session, grant_id, exc)
        return after(request, form, grant_id, "approved")

    @app.post("/grants/{grant_id}/deny")
    async def deny(request: Request, grant_id: str) -> Response:
        session = session_of(request)
        form = await form_of(request, session)
        try:
            core.grants.deny(session.principal, grant_id, form.get("comment", ""))
        except (Conflict, Forbidden) as exc:
            return refused(request, session, grant_id, exc)
        return after(request, form, grant_id, "denied")

    @app.post("/grants/{grant_id}/revoke")
    async def revoke(request: Request, grant_id: str) -> Response:
        session = session_of(request)
        form = await form_of(request, session)
        try:
            core.grants.revoke(
                session.principal, grant_id, form.get("comment", "") or "revoked in the console"
            )
        except (Conflict, Forbidden) as exc:
            return refused(request, session, grant_id, exc)
        return after(request, form, grant_id, "revoked")

    # --- grants ---------------------------------------------------------------------------
    @app.get("/grants/{grant_id}")
    def grant_page(request: Request, grant_id: str) -> Response:
        session = session_of(request)
        record_ = views.grant_record(core, grant_id, session.principal)
        return render(
            request,
            "grant.html",
            session,
            title=grant_id,
            nav="grants",
            record=record_,
            flash=flash(request),
        )

    @app.get("/fragments/grants/{grant_id}")
    def grant_fragment(request: Request, grant_id: str) -> Response:
        session = session_of(request)
        record_ = views.grant_record(core, grant_id, session.principal)
        response = render(request, "_grant_live.html", session, record=record_)
        version = (
            f"{record_.grant.status}:{len(record_.votes)}:{len(record_.events)}:{len(record_.calls)}:"
            + ",".join(str(c.status) for c in record_.calls)
        )
        response.headers["x-version"] = hashlib.sha256(version.encode()).hexdigest()[:16]
        return response

    @app.get("/grants")
    def grants_page(request: Request, status: str = "", agent: str = "") -> Response:
        session = session_of(request)
        if status and status not in states.STATUSES:
            raise InvalidRequest(
                f"status {status!r} is invalid: use one of {', '.join(states.STATUSES)}"
            )
        rows = views.grants_by_status(core, status or None, agent.strip() or None)
        return render(
            request,
            "grants.html",
            session,
            title="Active grants" if status == "active" else "Grants",
            nav="active" if status == "active" else "grants",
            grants=rows,
            calls=views.call_counts(core, [g.id for g in rows]),
            status=status,
            agent=agent,
            statuses=states.STATUSES,
            flash=flash(request),
        )

    # --- agents ---------------------------------------------------------------------------
    def agents_page(
        request: Request, session: Session, status: int = 200, **extra: Any
    ) -> Response:
        return render(
            request,
            "agents.html",
            session,
            status,
            title="Agents",
            nav="agents",
            agents=core.identity.list_agents(),
            users=core.identity.list_users(),
            **extra,
        )

    @app.get("/agents")
    def agents_list(request: Request) -> Response:
        return agents_page(request, session_of(request))

    @app.post("/agents")
    async def agents_create(request: Request) -> Response:
        session = session_of(request)
        form = await form_of(request, session)
        need(session, admin=True)
        try:
            record_, token = core.identity.create_agent(
                form.get("name", "").strip(),
                _lines(form.get("groups", "")),
                owner=form.get("owner", "").strip() or None,
                actor=session.principal,
            )
        except (InvalidRequest, Conflict) as exc:
            return agents_page(request, session, exc.status, error=exc.message, form=form)
        return agents_page(request, session, created=record_, token=token)

    @app.post("/agents/{name}/{verb}")
    async def agents_toggle(request: Request, name: str, verb: str) -> Response:
        session = session_of(request)
        await form_of(request, session)
        need(session, admin=True)
        if verb not in ("disable", "enable"):
            raise NotFound(f"no action {verb!r}")
        core.identity.set_agent_disabled(
            name,
            verb == "disable",
            actor=session.principal,
            on_disable=core.grants.end_all_for_agent,
        )
        return RedirectResponse(f"{base(request)}/agents", status_code=303)

    # --- users (admins only) --------------------------------------------------------------
    def users_page(request: Request, session: Session, status: int = 200, **extra: Any) -> Response:
        need(session, admin=True)
        return render(
            request,
            "users.html",
            session,
            status,
            title="Users",
            nav="users",
            people=core.identity.list_users(),
            oidc=oidc_settings,
            **extra,
        )

    @app.get("/users")
    def users_list(request: Request) -> Response:
        return users_page(request, session_of(request))

    @app.post("/users")
    async def users_create(request: Request) -> Response:
        session = session_of(request)
        form = await form_of(request, session)
        need(session, admin=True)
        try:
            created, token = core.identity.create_user(
                form.get("name", "").strip(),
                form.get("role", ""),
                groups=_lines(form.get("groups", "")),
                password=form.get("password") or None,
                actor=session.principal,
            )
        except (InvalidRequest, Conflict) as exc:
            return users_page(request, session, exc.status, error=exc.message, form=form)
        return users_page(request, session, created=created, token=token)

    @app.post("/users/{name}/{verb}")
    async def users_change(request: Request, name: str, verb: str) -> Response:
        session = session_of(request)
        form = await form_of(request, session)
        need(session, admin=True)
        if verb in ("disable", "enable"):
            if name == session.principal.name and verb == "disable":
                return users_page(request, session, 409, error="you cannot disable yourself")
            core.identity.set_user_disabled(name, verb == "disable", actor=session.principal)
        elif verb == "password":
            try:
                core.identity.set_password(name, form.get("password", ""), actor=session.principal)
            except InvalidRequest as exc:
                return users_page(request, session, exc.status, error=exc.message)
        else:
            raise NotFound(f"no action {verb!r}")
        return RedirectResponse(f"{base(request)}/users", status_code=303)

    # --- the audit log --------------------------------------------------------------------
    def parse_when(value: str, name: str) -> datetime | None:
        value = value.strip()
        if not value:
            return None
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(f"{name} must be a date and time like 2026-11-28T12:00") from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)

    @app.get("/audit")
    def audit_page(
        request: Request,
        agent: str = "",
        grant: str = "",
        type: str = "",  # noqa: A002 - the form field's name
        since: str = "",
        until: str = "",
        before: int | None = None,
        verify: str = "",
    ) -> Response:
        session = session_of(request)
        if not session.principal.can_read_audit():
            raise Forbidden("the audit log needs an auditor, approver or admin")
        query = views.AuditQuery(
            agent=agent.strip() or None,
            grant=grant.strip() or None,
            type=type.strip() or None,
            since=parse_when(since, "from"),
            until=parse_when(until, "until"),
            before_seq=before,
        )
        events = views.audit_search(core, query)
        result, verified_at = verify_cache.get(core, fresh=bool(verify))
        params = {"agent": agent, "grant": grant, "type": type, "since": since, "until": until}
        older = None
        if len(events) == query.limit and events:
            older = (
                "&".join(f"{k}={quote(v)}" for k, v in params.items() if v)
                + f"&before={events[-1]['seq']}"
            )
        return render(
            request,
            "audit.html",
            session,
            title="Audit log",
            nav="audit",
            events=events,
            params=params,
            types=views.event_types(core),
            verify=result,
            verified_at=verified_at,
            older=older,
        )

    # --- the policy -----------------------------------------------------------------------
    def policy_page(
        request: Request, session: Session, status: int = 200, **extra: Any
    ) -> Response:
        from jitgate.policy.lint import lint

        core.policy.reload_if_changed()
        loaded = core.policy.policies
        return render(
            request,
            "policy.html",
            session,
            status,
            title="Policy",
            nav="policy",
            loaded=loaded,
            metas=sorted(loaded.by_cedar_id.values(), key=lambda m: m.line),
            findings=lint(loaded),
            policy_error=core.policy.last_error,
            lines=loaded.text.splitlines(),
            agents=core.identity.list_agents(),
            **extra,
        )

    @app.get("/policy")
    def policy_get(request: Request) -> Response:
        return policy_page(request, session_of(request))

    @app.post("/policy/explain")
    async def policy_explain(request: Request) -> Response:
        from jitgate.api.app import explain

        session = session_of(request)
        form = await form_of(request, session)
        try:
            duration_text = form.get("duration", "5m").strip() or "5m"
            try:
                duration = (
                    int(duration_text) if duration_text.isdigit() else parse_duration(duration_text)
                )
            except ValueError as exc:
                raise InvalidRequest(f"duration: {exc}") from None
            result = explain(
                core,
                form.get("agent", ""),
                _lines(form.get("actions", "")),
                _lines(form.get("resources", "")),
                duration,
                form.get("reason", "") or "policy check",
            )
        except JitgateError as exc:
            return policy_page(request, session, exc.status, explain_error=exc.message, form=form)
        return policy_page(request, session, explained=result, form=form)

    return app
