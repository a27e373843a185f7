"""Injected dependencies, as ``Annotated`` aliases ending in ``Dep``.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in
its thread pool, a thread hop per request for what is an attribute read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.container import Container
from app.errors import NotReady
from app.predictor import Predictor


async def get_container(request: Request) -> Container:
    return request.app.state.container


async def get_predictor(request: Request) -> Predictor:
    predictor = request.app.state.container.predictor
    if predictor is None or not request.app.state.container.health.ready:
        raise NotReady("model not ready", retry_after=1)
    return predictor


ContainerDep = Annotated[Container, Depends(get_container)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
