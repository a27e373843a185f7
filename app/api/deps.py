"""Injected dependencies, as ``Annotated`` aliases ending in ``Dep``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.container import Container
from app.errors import NotReady
from app.predictor import Predictor


def get_container(request: Request) -> Container:
    return request.app.state.container


def get_predictor(request: Request) -> Predictor:
    predictor = request.app.state.container.predictor
    if predictor is None or not request.app.state.container.health.ready:
        raise NotReady("model not ready", retry_after=1)
    return predictor


ContainerDep = Annotated[Container, Depends(get_container)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
