from grokemu.cli import main

raise SystemExit(main())
