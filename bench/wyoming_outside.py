"""An outside client's view of the Wyoming server: the PyPI tool `wyoming-bench` against `assistant serve`.

Builds a small English corpus from the shared clips with official transcripts (WAV + .txt pairs), starts
`assistant serve --wyoming 127.0.0.1:0` (English KWS model as wake word and recognizer, espeak-ng voice, the tiny
reference MiniMind), then runs `wyoming-bench stt` (speed and word accuracy, plain and streamed) and
`wyoming-bench tts` (plain and streamed) against it and prints their reports.

    python -m venv /tmp/wbench && /tmp/wbench/bin/pip install wyoming-bench    # kept out of the project's venv
    .venv/bin/python -m bench.wyoming_outside --tool /tmp/wbench/bin/wyoming-bench [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import soundfile as sf

from bench.soak import export_tiny_llm
from speechdata.assets import AUDIO, KWS_EN

REPO = Path(__file__).resolve().parents[1]

CORPUS = {  # clip -> its official transcript (assets/audio/transcripts.tsv)
    "en/whisper-jfk.flac": "And so, my fellow Americans, ask not what your country can do for you, ask what you "
                           "can do for your country.",
    "en/wenet-librispeech-1995-1837-0001.wav": "IT WAS THE FIRST GREAT SORROW OF HIS LIFE IT WAS NOT SO MUCH THE "
                                               "LOSS OF THE COTTON ITSELF BUT THE FANTASY THE HOPES THE DREAMS "
                                               "BUILT AROUND IT",
    "en/picovoice-leopard-test.wav": "Mr. Quilter is the apostle of the middle classes and we are glad to welcome "
                                     "his gospel.",
    "en/lhotse-ljspeech-LJ002-0035.wav": "EIGHT THE PRESS YARD",
}
TEXTS = ["The kitchen timer is set for ten minutes.", "Good morning! It is sunny today, with a light breeze."]


def build_corpus(directory: Path) -> None:
    for i, (clip, text) in enumerate(CORPUS.items()):
        samples, rate = sf.read(str(AUDIO / clip), dtype="float32")
        sf.write(str(directory / f"clip_{i:02d}.wav"), samples, rate, subtype="PCM_16")
        (directory / f"clip_{i:02d}.txt").write_text(text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", default="wyoming-bench", help="the wyoming-bench program")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    llm = export_tiny_llm()
    with tempfile.TemporaryDirectory(prefix="wyoming-outside-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        corpus.mkdir()
        build_corpus(corpus)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        (work / "config.yaml").write_text("tts:\n  engine: espeak\n", encoding="utf-8")
        server = subprocess.Popen(
            [sys.executable, "-m", "assistant", "serve", "--wyoming", "127.0.0.1:0", "--kws-model", str(KWS_EN),
             "--asr-model", str(KWS_EN), "--llm-model", str(llm)],
            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port: list[int] = []
        errors: list[str] = []

        def read() -> None:
            assert server.stderr is not None
            for line in server.stderr:
                errors.append(line)
                if m := re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", line):
                    port.append(int(m.group(1)))

        threading.Thread(target=read, daemon=True).start()
        try:
            deadline = time.monotonic() + 120
            while not port and time.monotonic() < deadline and server.poll() is None:
                time.sleep(0.2)
            if not port:
                raise SystemExit("server did not listen:\n" + "".join(errors))
            target = f"127.0.0.1:{port[0]}"
            for command in (
                [args.tool, "info", target],
                [args.tool, "stt", "--corpus", str(corpus), "--rounds", str(args.rounds), "--warmup", "1", target],
                [args.tool, "tts", "--rounds", str(args.rounds), "--warmup", "1", "--texts", *TEXTS, "--", target],
            ):
                print("$", " ".join(c if " " not in c else repr(c) for c in command[1:]), flush=True)
                subprocess.run(command, check=False, timeout=600)
        finally:
            server.terminate()
            server.wait(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
