"""`python -m tinygpt_ros.cli ...`"""

import sys

from tinygpt_ros.cli import main

sys.exit(main())
