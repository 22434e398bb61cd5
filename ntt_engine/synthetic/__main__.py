import sys

from ntt_engine.synthetic.cli import main

sys.exit(main())
