"""Task sources: synthetic tasks, AmbigQA-style JSON Lines, ClarifyingQA CSV.

``make_source`` turns a config value into a source::

    make_source("synthetic")
    make_source({"name": "synthetic", "ambiguous_fraction": 0.5, "kinds": ["year", "sport"]})
    make_source({"name": "ambigqa", "path": "data/dev.jsonl", "mode": "open"})
    make_source({"name": "clarifyingqa", "path": "data/clarifyingqa.csv", "mode": "closed"})
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Mapping

from clarify_env.sources.ambigqa import load_ambigqa
from clarify_env.sources.base import ListSource, TaskSource
from clarify_env.sources.clarifyingqa import load_clarifyingqa
from clarify_env.sources.errors import TaskFormatError
from clarify_env.sources.synthetic import SyntheticSource

__all__ = [
    "ListSource",
    "SyntheticSource",
    "TaskFormatError",
    "TaskSource",
    "check_source_spec",
    "load_ambigqa",
    "load_clarifyingqa",
    "make_source",
]

FACTORIES: dict[str, Callable[..., TaskSource]] = {
    "synthetic": SyntheticSource,
    "ambigqa": load_ambigqa,
    "clarifyingqa": load_clarifyingqa,
}


def _factory_and_arguments(spec: str | Mapping[str, Any]) -> tuple[Callable[..., TaskSource], dict[str, Any]]:
    """The factory a source spec names and its arguments, checked against the factory's signature."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise TypeError(f"a task source spec must be a source, a name or a mapping, got {type(spec).__name__}")
    kwargs = dict(spec)
    name = kwargs.pop("name", None)
    if name not in FACTORIES:
        raise ValueError(f"unknown task source name {name!r} (known: {', '.join(FACTORIES)})")
    factory = FACTORIES[name]
    params = inspect.signature(factory).parameters
    for key in kwargs:
        if key not in params:
            raise ValueError(f"task source {name!r} takes no argument {key!r} (it takes: {', '.join(params)})")
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in kwargs:
            raise ValueError(f"task source {name!r} needs the argument {key!r}")
    return factory, kwargs


def check_source_spec(spec: TaskSource | str | Mapping[str, Any]) -> None:
    """Check a source spec without building the source: its name, its arguments, and that the
    file it reads (``path``) exists. Raises ``ValueError`` / ``FileNotFoundError`` naming the problem."""
    if isinstance(spec, TaskSource):
        return
    _, kwargs = _factory_and_arguments(spec)
    path = kwargs.get("path")
    if path is not None and not Path(path).is_file():
        hint = f" (make it with `clarify data ambigqa --out {Path(path).parent}`)" if "ambigqa" in str(path) else ""
        raise FileNotFoundError(f"path: no such file {str(path)!r}{hint}")


def make_source(spec: TaskSource | str | Mapping[str, Any]) -> TaskSource:
    """A task source from ``spec``: a source object (returned as is), a source name, or a
    mapping ``{"name": ..., **arguments}`` (see the module docstring).

    Unknown names, unknown or missing arguments raise ``ValueError`` naming the key.
    """
    if isinstance(spec, TaskSource):
        return spec
    factory, kwargs = _factory_and_arguments(spec)
    return factory(**kwargs)
