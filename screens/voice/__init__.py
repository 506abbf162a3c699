"""Voice calling (语音叫号): every call and recall announced in order, one at a time —
a chime, then the text from espeak-ng or recorded clips — to the sound card or to WAV
files. `Announcer` (announcer.py) is what the screens daemon runs; `quhao voice` runs it
alone (standalone.py). See docs/screens.md "Voice calling"."""
