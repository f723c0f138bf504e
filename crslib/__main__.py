from crslib.cli import main

raise SystemExit(main())
