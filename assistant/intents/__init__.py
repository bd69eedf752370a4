"""Everyday intents answered before the language model: the time and date, timers and alarms, arithmetic,
unit conversion and the weekday of a date, in English and Chinese.

Recognition is Home Assistant's own: `hassil` matches the transcript against the official sentence templates
of `home-assistant-intents` (en, zh-CN) plus this package's templates in the same format (`sentences/`) and
the user's (`intents.custom_dir`). Replies come from response templates (`responses/`, Jinja as in Home
Assistant) in the language that matched. No match: the daemon asks the language model, as before.

Modules: `normalize` (recognizer output styles -> matchable text), `loader` (template files, with file:line
errors), `engine` (recognise + answer), `handlers` (what each intent does), `responses` (rendering),
`timers` (timers and alarms, saved atomically), `chime` (the sound before an announcement).
"""
