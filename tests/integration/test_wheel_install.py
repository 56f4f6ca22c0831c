"""The app as a package: the wheel holds ``pipeline`` alone, installs into a fresh
virtualenv, and works in a brand-new ``django-admin startproject`` site set up the way the
README says, with nothing from this repository on the path.

Slow (a virtualenv, a wheel build and an install from PyPI): everything is made once per
module. Dependencies are installed under the exact pins of ``requirements.txt`` (as
constraints), so the site runs the versions the rest of the suite tests; an install that
fails to resolve means a pin has left a range declared in ``pyproject.toml``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import REPO

pytestmark = pytest.mark.integration

# What the project around the app is made of; none of it may ship in the wheel.
NOT_SHIPPED = ("demo", "project", "workers", "bench", "tests", "docker", "var")
# The project's web and ops stack: never a dependency of the app.
PROJECT_ONLY = ("gunicorn", "flower", "whitenoise", "django-environ", "psycopg")
# Variables of this test session (the services plugin, pytest-django) that must not reach
# the new site: it has to work from its own settings alone.
LEAKY_PREFIXES = ("DJANGO_", "PIPELINE_", "AWS_", "CELERY_")
LEAKY_NAMES = ("REDIS_URL", "DATABASE_URL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


def clean_env(venv: Path) -> dict[str, str]:
    """This process's environment (pip's index and certificate settings included) without
    anything that points at the repository's project or the test services."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(LEAKY_PREFIXES) and k not in LEAKY_NAMES
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(args: list[str | Path], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    """Run a command; fail the test with its output when it exits non-zero."""
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"`{' '.join(map(str, args))}` exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}"
        )
    return done.stdout


@dataclass(frozen=True)
class Venv:
    root: Path
    env: dict[str, str]

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the repository for the venv, the wheel and the new site."""
    path = tmp_path_factory.mktemp("wheel-install")
    assert not path.resolve().is_relative_to(REPO)
    return path


@pytest.fixture(scope="module")
def venv(work: Path) -> Venv:
    root = work / "venv"
    run([sys.executable, "-m", "venv", root], cwd=work, env=clean_env(root))
    return Venv(root=root, env=clean_env(root))


@pytest.fixture(scope="module")
def wheel(venv: Venv, work: Path) -> Path:
    dist = work / "dist"
    run(
        [venv.python, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, REPO],
        cwd=work,
        env=venv.env,
    )
    (built,) = dist.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(venv: Venv, wheel: Path, work: Path) -> Venv:
    # pip takes no extras in a constraints file: "celery[redis]==5.7.0" -> "celery==5.7.0".
    pins = (REPO / "requirements.txt").read_text()
    constraints = work / "constraints.txt"
    constraints.write_text(re.sub(r"\[[^\]]*\]", "", pins))
    run(
        [venv.python, "-m", "pip", "install", "--quiet", wheel, "-c", constraints],
        cwd=work,
        env=venv.env,
    )
    return venv


# --- the new site, configured as the README's "Using it in your project" says -----------

SETTINGS = """

# --- added for the media pipeline ---
INSTALLED_APPS += ["django_celery_results", "pipeline", "shop"]

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "primary": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": BASE_DIR / "buckets" / "primary", "allow_overwrite": True},
    },
    "public": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": BASE_DIR / "buckets" / "public",
            "base_url": "/cdn/",
            "allow_overwrite": True,
        },
    },
}

PIPELINE = {
    "PROFILES": {
        "default": {},
        "product": {"widths": [320, 640, 1024], "aspect": "4:3", "focal_point": [0.5, 0.4]},
    },
}

CELERY_RESULT_BACKEND = "django-db"
# No broker in this test: tasks run in-process.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
"""

# Celery's "First steps with Django", plus the pipeline's queues, routes and beat schedule:
# the README's mysite/celery.py and mysite/__init__.py, word for word.
CELERY_APP = """\
import os

from celery import Celery

import pipeline

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

app = Celery("mysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(pipeline.celery_config())
app.autodiscover_tasks()
"""

CELERY_INIT = """\
from .celery import app as celery_app

__all__ = ("celery_app",)
"""

MODELS = """\
from django.db import models

from pipeline.fields import MediaImageField


class Product(models.Model):
    name = models.CharField(max_length=100)
    image = MediaImageField(upload_to="products/", profile="product", blank=True)
"""

ADMIN = """\
from django.contrib import admin

from pipeline.admin import MediaAdminMixin

from shop.models import Product


@admin.register(Product)
class ProductAdmin(MediaAdminMixin, admin.ModelAdmin):
    pass
"""

# Run by `manage.py shell -c`: save a row with a real image, print what became of it.
SAVE_AND_REPORT = """\
import io, json, sys
from pathlib import Path

import pipeline
from django.conf import settings
from django.core.files.base import ContentFile
from django.template import Context, Template
from PIL import Image, ImageDraw

from shop.models import Product

im = Image.new("RGB", (800, 600), (30, 90, 160))
draw = ImageDraw.Draw(im)
draw.ellipse((200, 150, 600, 450), fill=(240, 200, 40))
draw.rectangle((40, 40, 240, 140), fill=(200, 30, 60))
buf = io.BytesIO()
im.save(buf, "JPEG", quality=90)

product = Product(name="lamp")
product.image.save("lamp.jpg", ContentFile(buf.getvalue()), save=True)
product.refresh_from_db()

html = Template(
    '{% load pipeline %}{% picture product.image sizes="50vw" alt="lamp" %}'
).render(Context({"product": product}))
print(json.dumps({
    "pipeline_file": pipeline.__file__,
    "public": str(settings.STORAGES["public"]["OPTIONS"]["location"]),
    "primary": str(settings.STORAGES["primary"]["OPTIONS"]["location"]),
    "original": product.image.name,
    "status": product.image_status,
    "error": product.image_error,
    "manifest": product.image_manifest,
    "picture": str(html),
}))
"""


@dataclass(frozen=True)
class Site:
    root: Path
    venv: Venv

    def manage(self, *args: str) -> str:
        return run([self.venv.python, "manage.py", *args], cwd=self.root, env=self.venv.env)


@pytest.fixture(scope="module")
def site(installed: Venv, work: Path) -> Site:
    """``django-admin startproject mysite`` plus an app ``shop`` with a managed image,
    migrated and checked."""
    root = work / "site"
    root.mkdir()
    django_admin = installed.root / "bin" / "django-admin"
    run([django_admin, "startproject", "mysite", root], cwd=work, env=installed.env)
    package = root / "mysite"
    with (package / "settings.py").open("a") as f:
        f.write(SETTINGS)
    (package / "celery.py").write_text(CELERY_APP)
    (package / "__init__.py").write_text(CELERY_INIT)
    add_shop(root)
    site = Site(root=root, venv=installed)
    site.manage("makemigrations", "shop")
    site.manage("migrate")
    return site


def add_shop(root: Path) -> None:
    """An app ``shop`` with a managed image field."""
    shop = root / "shop"
    shop.mkdir()
    (shop / "__init__.py").write_text("")
    (shop / "models.py").write_text(MODELS)
    (shop / "admin.py").write_text(ADMIN)


# Only the app added: no buckets, no Celery app, no broker.
BARE_SETTINGS = """

INSTALLED_APPS += ["django_celery_results", "pipeline", "shop"]
"""


def check_output(root: Path, venv: Venv) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv.python), "manage.py", "check"],
        cwd=root,
        env=venv.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_wheel_holds_the_app_alone(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"pipeline"}
    for top in NOT_SHIPPED:
        assert not any(n.startswith(f"{top}/") for n in names), top
    assert "pipeline/migrations/0001_initial.py" in names
    assert "pipeline/templatetags/pipeline.py" in names
    # Every file of the app is in it (a folder without __init__.py, a template, a static
    # file), and nothing compiled.
    in_repo = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "pipeline").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert in_repo - set(names) == set()
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]

    (info,) = dist_info
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "Name: django-media-pipeline" in metadata
    requires = [
        line.split(":", 1)[1].strip().lower()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    ]
    for needed in ("django", "celery", "django-storages[s3]", "pillow", "boto3"):
        assert any(r.startswith(needed) for r in requires), (needed, requires)
    for project_only in PROJECT_ONLY:
        assert not any(r.startswith(project_only) for r in requires), project_only
    # Ranges, not pins (an extra's marker, `extra == "heif"`, is not a pin).
    assert "==" not in " ".join(r.split(";")[0] for r in requires)
    assert any(r.startswith("pillow-heif") and "extra == 'heif'" in r for r in requires)


def test_new_project_migrates_and_checks(site: Site):
    migrations = list((site.root / "shop" / "migrations").glob("0001_*.py"))
    assert len(migrations) == 1
    initial = migrations[0].read_text()
    for column in ("image_status", "image_revision", "image_manifest", "image_checksum"):
        assert f"'{column}'" in initial or f'"{column}"' in initial, column
    out = site.manage("check", "--fail-level", "WARNING")
    assert "no issues" in out
    # makemigrations sees nothing left to do: the app's own migrations match its models.
    site.manage("makemigrations", "--check", "--dry-run")


def test_saved_image_is_processed_into_the_public_folder(site: Site):
    report = json.loads(site.manage("shell", "-c", SAVE_AND_REPORT).strip().splitlines()[-1])
    # The app came from the wheel in the virtualenv, not from this checkout.
    assert Path(report["pipeline_file"]).is_relative_to(site.venv.root)
    assert (Path(report["primary"]) / report["original"]).is_file()

    assert report["status"] == "ready", report["error"]
    manifest = report["manifest"]
    entries = [manifest["original"], *manifest["variants"]]
    public = Path(report["public"])
    for entry in entries:
        path = public / entry["key"]
        assert path.is_file(), entry
        assert path.stat().st_size == entry["bytes"], entry
    # 800 px wide at 4:3: 320 and 640 are rendered, 1024 would upscale and is skipped; the
    # image's own width, 800, is the widest variant instead.
    widths = {v["width"] for v in manifest["variants"]}
    assert widths == {320, 640, 800}
    assert {v["format"] for v in manifest["variants"]} >= {"avif", "webp", "jpeg"}
    assert report["picture"].startswith("<picture>")
    assert 'type="image/avif"' in report["picture"]


def test_a_new_project_without_storages_or_celery_is_told_what_to_add(installed: Venv, work: Path):
    """The first `manage.py check` after adding the app to INSTALLED_APPS: every missing
    piece is an error naming what to add, not a traceback (it used to die on
    InvalidStorageError: Could not find config for 'primary')."""
    root = work / "bare"
    root.mkdir()
    run(
        [installed.root / "bin" / "django-admin", "startproject", "mysite", root],
        cwd=work,
        env=installed.env,
    )
    with (root / "mysite" / "settings.py").open("a") as f:
        f.write(BARE_SETTINGS)
    add_shop(root)

    first = check_output(root, installed)
    output = first.stdout + first.stderr
    print(output)  # what a new user sees (pytest -s)
    assert first.returncode == 1, output
    assert "Traceback" not in output
    assert "(pipeline.E002) settings.STORAGES has no 'primary' alias" in output
    assert "(pipeline.E002) settings.STORAGES has no 'public' alias" in output
    assert '"allow_overwrite": True' in output  # the hint: what to add
    assert "(pipeline.E005) No Celery app is configured" in output
    assert "app.conf.update(pipeline.celery_config())" in output

    # With the README's celery.py but still no broker: the broker is what is missing.
    (root / "mysite" / "celery.py").write_text(CELERY_APP)
    (root / "mysite" / "__init__.py").write_text(CELERY_INIT)
    second = check_output(root, installed)
    output = second.stdout + second.stderr
    print(output)
    assert second.returncode == 1, output
    assert "Traceback" not in output
    assert "pipeline.E005" not in output and "pipeline.W003" not in output
    assert "(pipeline.E006) The Celery app 'mysite' has no broker" in output
    assert "CELERY_TASK_ALWAYS_EAGER = True" in output
    assert output.count("(pipeline.E002)") == 2
