from vexfs_cockpit.cli import main

raise SystemExit(main())
