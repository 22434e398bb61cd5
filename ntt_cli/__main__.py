import sys

from ntt_cli.main import main

sys.exit(main())
