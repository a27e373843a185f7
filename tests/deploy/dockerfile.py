"""The Dockerfile read as stages, for tests that check it or replay it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from tests.deploy.conftest import REPO, dev_module


@dataclass
class Stage:
    name: str
    base: str
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [v for i, v in self.instructions if i == instruction]

    def expand(self, text: str) -> str:
        for key, value in {**self.env, **self.args}.items():
            text = text.replace("${" + key + "}", value).replace("$" + key, value)
        return text


def parse_stages() -> dict[str, Stage]:
    """Stages of the Dockerfile, each with the ENV and ARG values it inherits."""
    parser = dev_module("dockerfile_parse").DockerfileParser(str(REPO / "Dockerfile"))
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "COMMENT":
            continue
        if instruction == "FROM":
            image, _, name = value.partition(" AS ")
            for key, default in global_args.items():
                image = image.replace("${" + key + "}", default)
            parent = stages.get(image)
            current = Stage(name.strip(), image, env=dict(parent.env) if parent else {})
            if parent:
                current.instructions = list(parent.instructions)
            stages[current.name] = current
        elif current is None:
            if instruction == "ARG":
                key, _, default = value.partition("=")
                global_args[key] = default
        else:
            value = current.expand(value) if instruction not in {"RUN", "HEALTHCHECK", "ENV"} else value
            if instruction == "ARG":
                key, _, default = value.partition("=")
                current.args[key] = default
            elif instruction == "ENV":
                for pair in shlex.split(value):
                    key, _, val = pair.partition("=")
                    current.env[key] = current.expand(val)
            current.instructions.append((instruction, value))
    return stages


def image_uid() -> int:
    """The numeric user the final image runs as."""
    final = list(parse_stages().values())[-1]
    return int(final.values("USER")[-1].split(":")[0])
