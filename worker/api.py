"""The stream API: the running sources as a REST collection (FastAPI, served by uvicorn).

    GET    /streams        every source and its streams (state, rates, windows, drops, reconnects, last error)
    GET    /streams/{id}   one of them                                       200 | 404
    POST   /streams        a source entry of the config's own schema         201 | 400 | 401 | 409
    PUT    /streams/{id}   change it: drain, then start with the new entry   200 | 400 | 401 | 404 | 409
    DELETE /streams/{id}   drain it: its windows in flight are published     204 | 401 | 404 | 409
    POST   /config/reload  reload the config file (as SIGHUP)                200 | 401 | 422
    GET    /openapi.json   the OpenAPI document (FastAPI writes it from the pydantic models)
    GET    /docs, /redoc   Swagger UI and ReDoc on it, their files served from here (/docs/static)

Reads are open; writes need `Authorization: Bearer <token>`, the token read from `api.token_file`
(a Kubernetes Secret mount) at each request, so a rotated Secret applies without a restart. The
token is compared in constant time and never logged (uvicorn's access log is off; our own lines
name the method, path and status only). A bad body gets 400 with every problem, each with its
dotted path, as `vbw validate-config` reports them.

It has a port of its own (`api.host`, `api.port`), apart from /metrics, /healthz and /readyz:
the write API can then be bound to another interface or kept from the scrape network by a
NetworkPolicy, and a slow request cannot delay a kubelet probe (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import logging
import socket
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from contracts.errors import VbwError
from worker.config import ApiConfig, ConfigProblem, SourceConfig, problems_of
from worker.stream_registry import SourceList, SourceStatus, StreamConflict, StreamNotFound, StreamRefused

log = logging.getLogger("vbw.api")


class StreamControl(Protocol):
    """What the API drives (worker.pipeline.Pipeline)."""

    def source_list(self) -> SourceList: ...
    def source_status(self, source_id: str) -> SourceStatus: ...
    def add_source(self, sc: Any) -> SourceStatus: ...
    def replace_source(self, sc: Any) -> SourceStatus: ...
    def remove_source(self, source_id: str) -> bool: ...


class Problem(BaseModel):
    path: str
    message: str


class Problems(BaseModel):
    """A request the API cannot take: every problem found, each with the dotted path of its field."""

    error: str
    problems: list[Problem] = []


class ReloadResult(BaseModel):
    result: str  # applied | rejected | unchanged
    detail: str
    problems: list[Problem] = []


def _problems(code: int, error: str, problems: list[ConfigProblem] | None = None) -> JSONResponse:
    body = Problems(error=error, problems=[Problem(path=p.path, message=p.message) for p in problems or []])
    return JSONResponse(body.model_dump(), status_code=code)


def read_token(path: Path | None) -> str | None:
    """The token in `path` (surrounding whitespace stripped: Secrets often end in a newline)."""
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as e:
        log.error("api token file %s: %s", path, e.strerror or e)
        return None
    return token or None


_bearer = HTTPBearer(auto_error=False, description="the token in api.token_file")


class Unauthorised(VbwError):
    """No token, or not the token of api.token_file (401)."""


class BearerToken:
    """The write routes' dependency: the request's bearer token against the file's, in constant time."""

    def __init__(self, token_file: Path | None) -> None:
        self.token_file = token_file

    def __call__(
        self, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None
    ) -> None:
        expected = read_token(self.token_file)
        given = creds.credentials if creds is not None else ""
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorised()


# Swagger UI 5 (it renders OpenAPI 3.1, which FastAPI writes), ReDoc and a favicon, as files.
DOCS_STATIC = importlib.resources.files("fastapi_offline") / "static"


def _add_docs_pages(app: FastAPI) -> None:
    """GET /docs (Swagger UI) and /redoc (ReDoc), open like the other reads, every file they load
    served by this app under /docs/static: nothing comes from outside the cluster."""
    app.mount("/docs/static", StaticFiles(directory=str(DOCS_STATIC)), name="docs-static")

    def prefix(req: Request) -> str:
        return str(req.scope.get("root_path", "")).rstrip("/")  # the prefix a proxy strips, if any

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(req: Request) -> HTMLResponse:
        root = prefix(req)
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}/docs/static/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/static/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/static/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(req: Request) -> HTMLResponse:
        root = prefix(req)
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}/docs/static/redoc.standalone.js",
            redoc_favicon_url=f"{root}/docs/static/favicon.png",
            with_google_fonts=False,
        )


def make_app(control: StreamControl, cfg: ApiConfig, reload: Any = None) -> FastAPI:
    """The app; `reload()` -> worker.reload.Outcome (None: no config file, /config/reload 404)."""
    app = FastAPI(
        title="vbw stream API",
        version="1",
        description="The sources of a running `vbw run` worker: list, add, change and drain them. "
        "Writes need a bearer token (api.token_file).",
        # FastAPI's own /docs and /redoc load their scripts and fonts from CDNs, which air-gapped
        # clusters cannot reach (the page comes up blank): _add_docs_pages serves those files itself.
        docs_url=None,
        redoc_url=None,
    )
    _add_docs_pages(app)
    problem_responses: dict[int | str, dict[str, Any]] = {
        400: {"model": Problems, "description": "the body is not a valid source entry: every problem"},
        401: {"model": Problems, "description": "no token, or not the token of api.token_file"},
        409: {"model": Problems, "description": "the id exists already, or the change needs a restart"},
    }

    @app.exception_handler(Unauthorised)
    async def _unauthorised(_req: Request, _exc: Unauthorised) -> JSONResponse:
        r = _problems(401, "a write needs Authorization: Bearer <the token of api.token_file>")
        r.headers["WWW-Authenticate"] = "Bearer"
        return r

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return _problems(400, "not a valid source entry", problems_of(exc.errors(), drop_first=True))

    @app.exception_handler(StreamNotFound)
    async def _not_found(_req: Request, exc: StreamNotFound) -> JSONResponse:
        return _problems(404, str(exc))

    @app.exception_handler(StreamConflict)
    async def _conflict(_req: Request, exc: StreamConflict) -> JSONResponse:
        return _problems(409, str(exc))

    @app.exception_handler(StreamRefused)
    async def _refused(_req: Request, exc: StreamRefused) -> JSONResponse:
        return _problems(409, str(exc))

    write = [Depends(BearerToken(cfg.token_file))]

    # Handlers are plain `def`: FastAPI runs them in its thread pool, so a drain that waits for
    # the last windows blocks one request, not the server.
    @app.get("/streams", response_model=SourceList, tags=["streams"])
    def list_streams() -> SourceList:
        return control.source_list()

    @app.get(
        "/streams/{source_id}",
        response_model=SourceStatus,
        responses={404: {"model": Problems}},
        tags=["streams"],
    )
    def get_stream(source_id: str) -> SourceStatus:
        return control.source_status(source_id)

    @app.post(
        "/streams",
        status_code=201,
        response_model=SourceStatus,
        responses=problem_responses,
        dependencies=write,
        tags=["streams"],
    )
    def add_stream(source: SourceConfig, response: Response) -> SourceStatus:
        status = control.add_source(source)
        response.headers["Location"] = f"/streams/{source.id}"
        log.info("api: POST /streams %s -> 201", source.id)
        return status

    @app.put(
        "/streams/{source_id}",
        response_model=SourceStatus,
        responses={**problem_responses, 404: {"model": Problems}},
        dependencies=write,
        tags=["streams"],
    )
    def replace_stream(source_id: str, source: SourceConfig) -> Any:
        if source.id != source_id:
            return _problems(
                400,
                "not a valid source entry",
                [ConfigProblem("id", f"{source.id!r} is not the id in the path ({source_id!r})")],
            )
        status = control.replace_source(source)
        log.info("api: PUT /streams/%s -> 200", source_id)
        return status

    @app.delete(
        "/streams/{source_id}",
        status_code=204,
        responses={401: {"model": Problems}, 404: {"model": Problems}, 409: {"model": Problems}},
        dependencies=write,
        tags=["streams"],
    )
    def delete_stream(source_id: str) -> Response:
        ok = control.remove_source(source_id)
        log.info("api: DELETE /streams/%s -> 204%s", source_id, "" if ok else " (drain cut by the grace)")
        return Response(status_code=204)

    @app.post(
        "/config/reload",
        response_model=ReloadResult,
        responses={401: {"model": Problems}, 404: {"model": Problems}, 422: {"model": ReloadResult}},
        dependencies=write,
        tags=["config"],
    )
    def reload_config() -> Any:
        if reload is None:
            return _problems(404, "this worker runs without a config file")
        out = reload("api")
        body = ReloadResult(
            result=out.result,
            detail=out.detail,
            problems=[Problem(path=p.path, message=p.message) for p in out.problems],
        )
        return JSONResponse(body.model_dump(), status_code=422 if out.result == "rejected" else 200)

    def openapi() -> dict[str, Any]:
        # FastAPI documents a 422 on every route with a body; ours answer 400 (handler above).
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for path, ops in doc.get("paths", {}).items():
                for op in ops.values():
                    if path != "/config/reload":
                        op.get("responses", {}).pop("422", None)
            schemas = doc.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class ApiServer:
    """uvicorn on a socket bound up front (so a port in use fails the start, and port 0 works);
    `serve` runs in a runtime thread, `stop` ends it."""

    def __init__(self, control: StreamControl, cfg: ApiConfig, reload: Any = None) -> None:
        import uvicorn

        self.cfg = cfg
        self.app = make_app(control, cfg, reload)
        self._sock: socket.socket | None = None
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)

    def bind(self) -> int:
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.cfg.host, self.cfg.port))
        except OSError:
            sock.close()
            raise
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        return int(sock.getsockname()[1])

    def serve(self) -> None:
        assert self._sock is not None, "bind first"
        # Not the main thread: uvicorn leaves the signals to the runtime.
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def stop(self) -> None:
        self._server.should_exit = True
