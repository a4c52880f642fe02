from pathlib import Path
from typing import Iterator

import pytest

from clarify_env.context import render_context
from clarify_env.tasks import Interpretation, Task


@pytest.fixture
def beast_task() -> Task:
    """The mission's example: two TV shows, the 1987 one more often meant."""
    interps = (
        Interpretation("Who played the Beast in the 1987 TV series?", ("Ron Perlman", "Perlman"), 70, "1987 series"),
        Interpretation("Who played the Beast in the 2012 TV series?", ("Jay Ryan",), 30, "2012 series"),
    )
    return Task(
        id="beast",
        query="Who played the Beast in the Beauty and the Beast TV show?",
        interpretations=interps,
        context=render_context(interps),
        dimension="year",
        metadata={"dimension_words": ["year", "version", "series"]},
    )


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and OpenMP threads stall (100x) when other
    processes hold the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def finished_bc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shrunk quickstart run whose behaviour-cloning stage and its evaluation are finished
    (``BC_ONLY`` on ``helpers.TINY``); tests copy it (``bc_run``) to resume, damage or evaluate it."""
    from helpers import BC_ONLY, train

    run = tmp_path_factory.mktemp("finished") / "run"
    assert train(run, *BC_ONLY) == 0
    return run


@pytest.fixture
def bc_run(finished_bc_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of ``finished_bc_run`` in this test's folder (a moved run: it resumes there)."""
    import shutil

    return Path(shutil.copytree(finished_bc_run, tmp_path / "run"))
