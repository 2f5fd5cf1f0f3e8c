"""Every failure in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so that an OpenAI client
raises its own exception class with the server's message; nothing is answered as plain text."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from reverie.serving.batcher import Overloaded

# OpenAI answers an invalid body with 400; reverie's own routes (memory, feedback) keep FastAPI's 422.
OPENAI_TAG = "openai"  # the tag of the routes that answer as OpenAI's do


class ApiError(Exception):
    """A refusal as OpenAI words one: `param` names the field at fault, `code` is for programs."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    # A message may quote the request; a lone surrogate in it could not be encoded as UTF-8 JSON.
    printable = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"error": {"message": printable, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


def _is_member(part: object) -> bool:
    """pydantic puts the name of a union's member in an error's location, like `list[TextPart]`."""
    return isinstance(part, str) and "[" in part


def _union(error: dict) -> tuple[tuple, bool]:
    """Where the union is in the error's location, and whether this member only refused the value's type."""
    loc = error["loc"]
    index = next((i for i, part in enumerate(loc) if _is_member(part)), None)
    if index is None:
        return (), False
    return loc[:index], index == len(loc) - 1 and error["type"].endswith("_type")


def _problems(errors: list[dict]) -> list[tuple[str, str | None]]:
    """Each validation error as (text, param): `messages.0.content: …`, or what is wrong with the whole body.
    Of a union's members, those that only say "not my type" are left out when another member says more."""
    informative = {_union(error)[0] for error in errors if not _union(error)[1]}
    problems = []
    for error in errors:
        union, wrong_type = _union(error)
        if wrong_type and union in informative:
            continue
        loc = error["loc"][1:] if error["loc"][:1] == ("body",) else error["loc"]  # a query or header keeps its place
        param = ".".join(str(part) for part in loc if not _is_member(part))
        if error["type"] == "json_invalid":
            problems.append((f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'cannot parse')})",
                             None))
        elif not param:
            problems.append((f"the body must be a JSON object sent as application/json ({error['msg']})", None))
        else:
            problems.append((f"{param}: {error['msg'].removeprefix('Value error, ')}", param))
    return problems


def install_error_handlers(app: FastAPI) -> None:
    """OpenAI's shape for refusals, the router's 404 and 405, invalid bodies, a full queue and any bug."""

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.kind, exc.param, exc.code)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own and the router's (404, 405)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _problems(exc.errors())
        route = request.scope.get("route")
        status = 400 if OPENAI_TAG in getattr(route, "tags", ()) else 422
        return error_response(status, "invalid request: " + "; ".join(text for text, _ in problems),
                              param=problems[0][1] if problems else None)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return error_response(503, f"server busy: {exc}; retry shortly", "overloaded", headers={"Retry-After": "1"})

    @app.exception_handler(Exception)  # a bug: the client still gets JSON; Starlette re-raises it to be logged
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error ({type(exc).__name__}); the server log has the traceback",
                              "server_error")
