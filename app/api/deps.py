"""Injected dependencies, as ``Annotated`` aliases ending in ``Dep``.

Every service a route needs comes from the container through one of these.
They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in
its thread pool, a thread hop per request for what is an attribute read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.container import Container
from app.errors import NotFound, NotReady
from app.health import Health
from app.predictor import Predictor
from app.rollout.service import Rollout
from app.settings import Settings
from app.telemetry.label_log import LabelLog
from app.v2 import V2Service


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_predictor(container: ContainerDep) -> Predictor:
    predictor = container.predictor
    if predictor is None or not container.health.ready:
        raise NotReady("model not ready", retry_after=container.health.retry_after)
    return predictor


async def get_settings(container: ContainerDep) -> Settings:
    return container.settings


async def get_health(container: ContainerDep) -> Health:
    return container.health


async def get_rollout(container: ContainerDep) -> Rollout:
    return container.rollout


async def get_v2(container: ContainerDep) -> V2Service:
    return container.v2


async def get_label_log(container: ContainerDep) -> LabelLog:
    if container.label_log is None:
        raise NotFound("no label log: feedback needs the prediction log (set MODELSERVE_LOG_DIR)")
    if not container.health.ready:
        raise NotReady("model not ready", retry_after=container.health.retry_after)
    return container.label_log


PredictorDep = Annotated[Predictor, Depends(get_predictor)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
HealthDep = Annotated[Health, Depends(get_health)]
RolloutDep = Annotated[Rollout, Depends(get_rollout)]
V2Dep = Annotated[V2Service, Depends(get_v2)]
LabelLogDep = Annotated[LabelLog, Depends(get_label_log)]
