"""The city's configuration (`quhao city --config city.toml`): one small TOML file.

```toml
[city]
name = "广州市政务服务监察"
database = "host=/run/postgresql dbname=quhao_city"   # a libpq connection string
broker = "mqtts://city-mqtt.example:8883"            # the city broker (user `city`)
credentials = "/etc/quhao/city-broker/credentials"     # its `city/` folder: password, CA
followup_days = 15          # no longer used (cases carry the hall's own deadline); still read
months_ahead = 2            # partitions made ahead of the current month

[[halls]]                   # the allow-list: only these halls' feeds are taken
id = "baiyun"
site_file = "halls/baiyun.toml"   # optional: names, services, departments, windows, clerks
```

Validated like the site file: every problem at once, `file:line: key: what is wrong`.
A relative `site_file` or `credentials` is taken from the city file's folder.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from quhao.config.errors import ConfigError, Problem, problems_from
from quhao.tomlpos import key_lines, line_of

SITE_ID = r"^[a-z0-9_-]{1,32}$"


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class City(_Table):
    name: StrictStr = "city"
    database: Annotated[StrictStr, Field(min_length=1, description="a libpq connection string")]
    broker: Annotated[
        StrictStr,
        Field(pattern=r"^mqtts?://", description="mqtt[s]://host[:port] of the city broker"),
    ] = "mqtt://127.0.0.1:1883"
    credentials: StrictStr | None = None
    followup_days: Annotated[StrictInt, Field(ge=1, le=365)] = 15  # unused: old files load
    months_ahead: Annotated[StrictInt, Field(ge=0, le=24)] = 2
    batch_events: Annotated[StrictInt, Field(ge=1, le=100_000)] = 5_000
    flush_ms: Annotated[StrictInt, Field(ge=1, le=60_000)] = 200


class Hall(_Table):
    id: Annotated[
        StrictStr,
        Field(pattern=SITE_ID, description="the hall's site id: lower-case letters, digits, - _"),
    ]
    name: StrictStr | None = None
    site_file: StrictStr | None = None


class CityConfig(_Table):
    city: City
    halls: Annotated[tuple[Hall, ...], Field(max_length=10_000)] = ()

    def model_post_init(self, context: Any) -> None:
        seen: set[str] = set()
        for index, hall in enumerate(self.halls):
            if hall.id in seen and isinstance(context, dict):
                context.setdefault("problems", []).append(
                    (("halls", index, "id"), f"hall {hall.id!r} is listed twice")
                )
            seen.add(hall.id)

    @property
    def hall_ids(self) -> frozenset[str]:
        return frozenset(h.id for h in self.halls)


def load_city(path: str | Path) -> tuple[CityConfig, Path]:
    """The city file's configuration and the folder relative paths are taken from."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.one(str(file), None, "", f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError.one(str(file), None, "", f"not UTF-8: {exc}") from exc
    return loads_city(text, file), file.resolve().parent


def loads_city(text: str, file: str | Path = "city.toml") -> CityConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError.one(
            str(file), int(match.group(1)) if match else None, "", f"TOML syntax: {exc}"
        ) from exc
    lines = key_lines(text)
    context: dict[str, Any] = {"problems": []}
    problems: list[Problem] = []
    config: CityConfig | None = None
    try:
        config = CityConfig.model_validate(data, context=context)
    except ValidationError as exc:
        problems = problems_from(exc, CityConfig, str(file), lines)
    for where, message in context["problems"]:
        key = ".".join(str(p) for p in where if isinstance(p, str))
        index = next((p for p in where if isinstance(p, int)), None)
        key = key.replace("halls.", f"halls[{index}].") if index is not None else key
        problems.append(Problem(str(file), line_of(lines, where), key, message))
    if problems or config is None:
        raise ConfigError(problems)
    return config


def resolve(base: Path, value: str | None) -> Path | None:
    """A path from the city file: relative ones are taken from its folder."""
    if value is None:
        return None
    path = Path(value)
    return path if path.is_absolute() else base / path
