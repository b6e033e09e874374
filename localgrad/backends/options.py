"""One way to turn a backend's keyword options into its validated options dataclass."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from localgrad.errors import EngineConfigError

T = TypeVar("T")


def build_options(cls: type[T], options: Mapping[str, Any], kind: str, hint: str = "") -> T:
    """`cls(**options)`, after naming any option `cls` does not have, and the ones it does."""
    allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise EngineConfigError(f"Unknown {kind} option(s) {unknown}; allowed: {allowed}. {hint}".rstrip())
    return cls(**options)
