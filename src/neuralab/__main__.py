from neuralab.cli import main

raise SystemExit(main())
