"""`python -m training.pretrain`: pretraining, under the name it had before the one entry point.

The same command as `python -m training pretrain`; the stage itself is a row of the table in training/stages.py.
"""

from training.entry import run_alias

if __name__ == "__main__":
    raise SystemExit(run_alias("pretrain"))
