"""What installing tokentree puts in site-packages: one `tokentree` package holding the service's modules
(`tokentree.engine`, `tokentree.api`, ...), so a notebook's own `models.py` or `engine.py` neither shadows
ours nor is shadowed, while the repository keeps its top-level folders (tokentree/<name> links to them)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICE_PACKAGES = ("api", "cli", "engine", "migrations", "models", "workers")


def test_the_wheel_installs_one_top_level_package_with_everything_the_service_reads(tmp_path: Path) -> None:
    # Built from a copy of the checkout's files: setuptools writes a build/ folder beside the sources, and
    # one left from an older build would add files the checkout no longer has.
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split()
    source = tmp_path / "source"
    for name in listed:
        if (ROOT / name).is_file() or (ROOT / name).is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name, follow_symlinks=False)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("tokentree-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"tokentree"}
    for package in SERVICE_PACKAGES:
        assert f"tokentree/{package}/__init__.py" in names
    # The files the service reads at run time, beside the code.
    for data in ("tokentree/engine/demo_model/config.json", "tokentree/api/static/index.html",
                 "tokentree/migrations/alembic.ini", "tokentree/migrations/versions/0001_initial_schema.py",
                 "tokentree/py.typed"):
        assert data in names, data
    assert any(n.startswith("tokentree/workers/lua/") and n.endswith(".lua") for n in names)


def test_a_folder_with_its_own_models_and_engine_modules_shadows_nothing(tmp_path: Path) -> None:
    for name in ("models", "engine", "api", "cli"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('the notebook folder module was imported')\n")
    script = ("import tokentree\n"
              "tree = tokentree.build_tree('Once upon a time', max_nodes=20, max_depth=4, progress=False)\n"
              "print(len(tree.nodes))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 1
