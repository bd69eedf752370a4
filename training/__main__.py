"""`python -m training STAGE [options]`: see training/entry.py."""

from training.entry import main

raise SystemExit(main())
