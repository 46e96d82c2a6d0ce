import sys

from vmp_jax.cli import main

sys.exit(main())
