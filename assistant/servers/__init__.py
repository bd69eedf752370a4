"""Network servers in the daemon's process, sharing its loaded models: the OpenAI-compatible HTTP API and status
page (`http.py`, `openai_api.py`, `status.py`) and Home Assistant's Wyoming protocol (`wyoming.py`).

Every model call of a network client goes through `work.ModelWork` (its own small pool, a bounded queue, a
per-client limit) and pauses while the voice loop listens or thinks (`work.VoiceGate`), so a spoken question
is never starved by network load. `runner.py` starts what the settings enable; `commands/` calls it.
"""
