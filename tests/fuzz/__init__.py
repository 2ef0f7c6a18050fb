"""Structure-aware fuzzing of everything a gateway, a profile file or a control client
can hand us (issue 13). `python -m tests.fuzz --help` runs it for as long as asked;
tests/fuzz/test_fuzz.py runs each target briefly and replays the saved corpus."""
