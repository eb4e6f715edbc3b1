import sys

from llmroute_proxy.cli import main

sys.exit(main())
