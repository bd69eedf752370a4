"""espeak-ng speech for tests: questions the shipped recognizers hear, after the JFK wake phrase."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from speechdata.audio import load_clip as load_mono16k
from tests.conftest import require

JFK_HEAD_S = 3.0  # "And so, my fellow Americans," (the wake phrase) ends before 3.0 s


def espeak(path: Path, text: str, voice: str = "en-us", speed: int = 130) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        require(Path("/usr/bin/espeak-ng"))  # fails under CI (.ci/run installs it), skips elsewhere
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-g", "4", "-w", str(path), text], check=True)
    return load_mono16k(path)
