"""What both HTTP APIs (the users' and the workers') answer with when they refuse a request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from pydantic import BaseModel, Field


class Problem(BaseModel):
    field: str
    problem: str


class ErrorBody(BaseModel):
    error: str
    problems: list[Problem] | None = Field(None, description="each wrong field of an invalid request")



Handler = TypeVar("Handler", bound=Callable[..., Any])


def on_error(app: APIGatewayRestResolver, *errors: type[Exception]) -> Callable[[Handler], Handler]:
    """`app.exception_handler`, typed: Powertools' decorator returns an untyped function."""
    return cast(Callable[[Handler], Handler], app.exception_handler(list(errors)))
