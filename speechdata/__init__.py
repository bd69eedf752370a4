"""Speech data for the tests and the benchmarks: where the shared clips and models are, and what is made of them.

- `speechdata.assets`: paths under ../shared (ASSETS, REFERENCE), the clips and their roles, the keyword lists.
- `speechdata.audio`: a clip as float32 mono 16 kHz (one way, the daemon's own resampler), silence, pink noise,
  gain and SNR, 100 ms chunks, WAV/PCM bytes.
- `speechdata.mix`: a planned mix of parts (wake phrases, questions, other speech, noise) that remembers where
  each part landed, streamed as chunks for runs of any length.
- `speechdata.wer`: word error rate with one tokenisation.

Nothing here imports pytest: a missing file is the caller's to report (tests skip or fail, a bench exits).
"""
