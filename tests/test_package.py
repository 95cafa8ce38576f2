"""The release: `python -m build` makes a wheel and an sdist that `twine check` passes, and the
wheel works outside this repository, in a new Django 6.1 project on Python 3.13.

It builds with this virtualenv's setuptools (no isolated build environment) and installs from
.cache/wheels under the checkout, downloading Django 6.1 there from PyPI the first time; without
PyPI it skips and says so.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from django.db import connection

import backfill

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / ".cache" / "wheels"
PROJECT_REQUIREMENTS = ["Django>=6.1,<6.2", "tqdm>=4.66"]
OFFLINE = re.compile(
    r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|"
    r"Could not fetch URL|ConnectTimeout|Max retries exceeded"
)

pytestmark = [
    pytest.mark.package,
    # It does not depend on the suite's database: one of make test's two runs is enough.
    pytest.mark.skipif(
        connection.vendor != "sqlite", reason="the wheel test runs with the SQLite suite"
    ),
]

MODELS = """\
from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=50)
    label = models.CharField(max_length=50, blank=True)
"""


def python313() -> str:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(glob.glob(str(pyenv / "3.13.*" / "bin" / "python3.13")))
    if not found:
        pytest.skip(f"Python 3.13 is not installed (looked in {pyenv}); pyenv install 3.13")
    return found[-1]


def run(argv: Sequence[str | Path], cwd: Path, timeout: float = 300) -> str:
    """Run a command outside this project's settings; its output, or skip when offline."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV")
    }
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0 and OFFLINE.search(output):
        pytest.skip(f"PyPI is not reachable: {OFFLINE.search(output).group(0)}")  # type: ignore[union-attr]
    assert done.returncode == 0, f"{' '.join(map(str, argv))} exited {done.returncode}:\n{output}"
    return output


def test_the_wheel_installs_into_a_new_django_61_project_and_runs_a_backfill(
    tmp_path: Path,
) -> None:
    interpreter = python313()
    dist = tmp_path / "dist"

    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT], cwd=tmp_path)

    wheels = [p.name for p in dist.glob("*.whl")]
    sdists = [p.name for p in dist.glob("*.tar.gz")]
    assert wheels == [f"django_backfill-{backfill.__version__}-py3-none-any.whl"]
    assert sdists == [f"django_backfill-{backfill.__version__}.tar.gz"]
    with tarfile.open(dist / sdists[0]) as sdist:
        names = [name.partition("/")[2] for name in sdist.getnames()]
    assert "backfill/migrations/0001_initial.py" in names
    assert "CHANGELOG.md" in names
    assert not [name for name in names if name.startswith(("tests/", "example_site/"))]
    checked = run([sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir()], tmp_path)
    assert checked.count("PASSED") == 2, checked

    venv = tmp_path / "venv"
    bin_ = venv / "bin"
    run([sys.executable, "-m", "virtualenv", "-q", "-p", interpreter, venv], cwd=tmp_path)
    pip: list[str | Path] = [bin_ / "python", "-m", "pip", "--disable-pip-version-check", "-q"]
    offline: list[str | Path] = [
        *pip,
        "install",
        "--no-compile",
        "--no-index",
        "--find-links",
        WHEELHOUSE,
    ]
    if not (list(WHEELHOUSE.glob("django-6.1.*.whl")) and list(WHEELHOUSE.glob("tqdm-*.whl"))):
        run([*pip, "download", "-d", WHEELHOUSE, *PROJECT_REQUIREMENTS], cwd=tmp_path)
    run([*offline, *PROJECT_REQUIREMENTS], cwd=tmp_path)
    django_before = run([bin_ / "python", "-m", "django", "--version"], cwd=tmp_path).strip()
    run([*offline, dist / wheels[0]], cwd=tmp_path)

    # Installing the app never changes the project's Django.
    assert run([bin_ / "python", "-m", "django", "--version"], tmp_path).strip() == django_before
    assert django_before.startswith("6.1")
    site = Path(run([bin_ / "python", "-c", "import backfill; print(backfill.__file__)"], tmp_path))
    assert not (site.parent.parent / "example_site").exists()  # only the app is packaged

    run([bin_ / "django-admin", "startproject", "mysite", tmp_path / "project"], cwd=tmp_path)
    project = tmp_path / "project"
    manage: list[str | Path] = [bin_ / "python", "manage.py"]
    run([*manage, "startapp", "shop"], cwd=project)
    (project / "shop" / "models.py").write_text(MODELS)
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + '\nINSTALLED_APPS += ["backfill", "shop"]\n')
    run([*manage, "makemigrations", "shop"], cwd=project)
    run([*manage, "migrate", "--noinput"], cwd=project)
    run(
        [*manage, "shell", "-c", "from shop.models import Item; "
         "Item.objects.bulk_create(Item(name=f'item {i}') for i in range(250))"],
        cwd=project,
    )  # fmt: skip

    out = run(
        [*manage, "backfill_iterate", "shop.Item", "--set", "label=filled", "--batch-size", "100",
         "--progress", "none"],
        cwd=project,
    )  # fmt: skip

    assert "changed 250" in out, out
    counts = run(
        [*manage, "shell", "-c", "from shop.models import Item; "
         "print(Item.objects.filter(label='filled').count(), Item.objects.count())"],
        cwd=project,
    )  # fmt: skip
    # Django 6's shell first says how many objects it imported.
    assert counts.splitlines()[-1] == "250 250", counts
