import sys

from deltaprop.bench import main

sys.exit(main())
